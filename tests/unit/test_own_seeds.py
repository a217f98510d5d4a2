"""Which seeds are the node itself (mesh/node/gossip.py ``is_own_address``): a config
file copied to every machine lists each machine's own address among the seeds; the
node leaves it out, quietly, instead of warning that no seed answered."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mesh.node.gossip import is_own_address

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ["127.0.0.1", "10.0.0.5", "::1", "fe80::1"]


@pytest.mark.parametrize(("seed", "bound", "advertised", "seed_ips", "own"), [
    ("tcp://127.0.0.1:7700", "tcp://127.0.0.1:7700", "tcp://127.0.0.1:7700", ["127.0.0.1"], True),
    ("tcp://localhost:7700", "tcp://127.0.0.1:7700", "tcp://127.0.0.1:7700", ["127.0.0.1", "::1"], True),
    ("tcp://localhost:7701", "tcp://127.0.0.1:7700", "tcp://127.0.0.1:7700", ["127.0.0.1"], False),
    # a wildcard bind: every address of the machine is ours, the advertised one too
    ("tcp://10.0.0.5:7700", "tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700", ["10.0.0.5"], True),
    ("tcp://node-a.lan:7700", "tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700", ["10.0.0.5"], True),
    ("tcp://127.0.0.1:7700", "tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700", ["127.0.0.1"], True),
    ("tcp://10.0.0.6:7700", "tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700", ["10.0.0.6"], False),
    ("tcp://node-b.lan:7700", "tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700", ["10.0.0.6"], False),
    ("tcp://unknown:7700", "tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700", [], False),
    # bound to one address: the machine's other addresses do not reach it
    ("tcp://127.0.0.1:7700", "tcp://10.0.0.5:7700", "tcp://10.0.0.5:7700", ["127.0.0.1"], False),
    # advertised behind NAT: that address is ours whatever it resolves to here
    ("tcp://203.0.113.7:7700", "tcp://0.0.0.0:7700", "tcp://203.0.113.7:7700", [], True),
    ("tcp://[::1]:7700", "tcp://[::]:7700", "tcp://10.0.0.5:7700", ["::1"], True),
])
def test_is_own_address(seed: str, bound: str, advertised: str, seed_ips: list[str],
                        own: bool) -> None:
    assert is_own_address(seed, bound, advertised, seed_ips, LOCAL) is own


def test_own_seeds_reads_the_machines_addresses_only_for_a_wildcard_bind() -> None:
    """own_seeds asks psutil for the machine's addresses only when they can decide (a
    wildcard bind, a seed on its port): imported before the fork, psutil is ~0.9 MiB in
    the node and in each child (docs/performance.md, "Round 14")."""
    code = textwrap.dedent("""
        import asyncio, sys
        from mesh.node.gossip import own_seeds
        seeds = ["tcp://127.0.0.1:7701", "tcp://10.0.0.6:7700", "tcp://127.0.0.1:7700"]
        print(asyncio.run(own_seeds(seeds, "tcp://127.0.0.1:7700", "tcp://127.0.0.1:7700")),
              "psutil" in sys.modules)
        print(asyncio.run(own_seeds(seeds, "tcp://0.0.0.0:7700", "tcp://10.0.0.5:7700")),
              "psutil" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['tcp://127.0.0.1:7700'] False",
                                       "['tcp://127.0.0.1:7700'] True"]
