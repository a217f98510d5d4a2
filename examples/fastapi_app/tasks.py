"""The API's tasks, declared with ``shared_task``: the web process binds them to the
client it makes in its lifespan, the node to its own app (worker.py)."""
from __future__ import annotations

import time

from mesh import shared_task


class OutOfStock(Exception):
    pass


@shared_task
def add(x: int, y: int) -> int:
    return x + y


@shared_task
def reserve(item: str, quantity: int) -> dict[str, object]:
    if quantity > 10:
        raise OutOfStock(f"only 10 {item} left")
    return {"item": item, "reserved": quantity}


@shared_task(track_started=True)     # /jobs/{id} shows STARTED in every web worker
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
