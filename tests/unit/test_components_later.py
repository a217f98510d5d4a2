"""The node's components that start after the pool are ``later``: their modules are
imported when the node starts them, after the first children are forked (the real
children are checked in tests/integration/test_e2e_pool.py)."""
from __future__ import annotations

import subprocess
import sys

from mesh.node.component import Later, _required_names, component_name
from mesh.node.node import BUILTIN


def test_each_later_names_what_its_class_names() -> None:
    laters = [c for c in BUILTIN if issubclass(c, Later)]
    assert len(laters) >= 10
    for c in laters:
        real = c.real()
        assert not issubclass(real, Later)
        assert component_name(c) == component_name(real), c.target
        assert _required_names(c()) == _required_names(real()), c.target
        assert not getattr(real, "replaceable", False), c.target   # replaceable ones are not later


def test_each_later_starts_after_the_pool() -> None:
    names = [component_name(c) for c in BUILTIN]
    pool = names.index("pool")
    for i, c in enumerate(BUILTIN):
        if issubclass(c, Later):
            assert i > pool, component_name(c)


def test_importing_the_node_leaves_their_modules_out() -> None:
    code = ("import sys, mesh.node.node, mesh.cli.meshnode; "
            "print(' '.join(m for m in ('psutil', 'mesh.node.beat', 'mesh.node.workflows', "
            "'mesh.node.heartbeat', 'mesh.node.gossip', 'mesh.web.commands', 'mesh.schedules') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == ""
