"""Example tasks used by the demo (examples/demo.py) and the README.

Run a node for them with:  meshnode --app examples.tasks
"""
from __future__ import annotations

import os
import time

from mesh import Mesh

app = Mesh("examples")


class InvalidOrder(Exception):
    """A task's own exception type: callers that import this module get it back as is."""


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="examples.checkout")
def checkout(order_id: int, amount: float) -> dict[str, object]:
    """Fails on purpose for negative amounts."""
    if amount < 0:
        raise InvalidOrder(f"order {order_id}: amount {amount} is negative")
    return {"order": order_id, "charged": round(amount * 1.2, 2), "pid": os.getpid()}


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(bind=True)
def whoami(self) -> dict[str, object]:
    return {"id": self.request.id, "node": self.request.hostname, "retries": self.request.retries}


@app.task
def crash() -> None:
    os._exit(13)
