"""One of two apps on one LAN (test_e2e_routing.py): nodes of mesh lan_a and of mesh
lan_b find each other by mDNS on loopback and must never join or run each other's work.
Both register ``lan.add``; the mesh name carries ROUTING_IT_LAN so that nodes of other
runs, or of other engineers' tests, on the same loopback are not picked up."""
from __future__ import annotations

import os

from mesh import Mesh

app = Mesh("routing-it-lan-b-" + os.environ.get("ROUTING_IT_LAN", ""), mdns=False)


@app.task(name="lan.add")
def add(x: int, y: int) -> list[object]:
    return ["b", x + y]


@app.task(name="lan.only_b")
def only(x: int) -> list[object]:
    return ["b", x]
