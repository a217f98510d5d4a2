"""Which seeds are the node itself (mesh/node/gossip.py ``is_own_address``): a config
file copied to every machine lists each machine's own address among the seeds; the
node leaves it out, quietly, instead of warning that no seed answered."""
from __future__ import annotations

import pytest

from mesh.node.gossip import is_own_address

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
