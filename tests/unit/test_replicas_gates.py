"""The holder's wait for copies: replies that wait for a backup's confirmation go
after COPY_TIMEOUT all the same (one copy for now), found without walking every
task in flight (mesh/node/replicas.py)."""
from __future__ import annotations

import functools

from mesh.node.replicas import COPY_TIMEOUT, Replicas


def test_only_waits_older_than_the_timeout_give_up_oldest_first() -> None:
    r = Replicas()
    opened: list[str] = []
    for tid, since in [("a", 0.0), ("b", 0.5), ("c", 4.0), ("d", 5.5)]:
        r.gates[tid] = [functools.partial(opened.append, tid)]
        r._gate_since[tid] = since
    r._give_up(5.0 + COPY_TIMEOUT / 2)
    assert opened == ["a", "b", "c"]
    assert r.single_copy == 3
    assert list(r.gates) == ["d"] and list(r._gate_since) == ["d"]
    r._give_up(5.5 + COPY_TIMEOUT)           # exactly the timeout: not yet
    assert opened == ["a", "b", "c"]
    r._give_up(5.6 + COPY_TIMEOUT)
    assert opened == ["a", "b", "c", "d"] and not r.gates
