"""An app that replaces the autoscaling policy (tests/integration/test_e2e_autoscale.py):
its autoscaler keeps the pool at MAX whatever the load, and says so in a file."""
from __future__ import annotations

import os

from mesh import Mesh
from mesh.node.autoscale import Autoscaler, PoolSample

app = Mesh("mesh-it-autoscale", mdns=False)


class AlwaysMax(Autoscaler):
    """A policy of our own: as many workers as the range allows."""

    def decide(self, sample: PoolSample) -> int:
        marker = os.environ.get("AUTOSCALE_MARKER")
        if marker:
            with open(marker, "a") as f:
                f.write(f"{sample.workers} {sample.max}\n")
        return sample.max


app.components.add(AlwaysMax)


@app.task
def add(x: int, y: int) -> int:
    return x + y
