"""The client side: the I/O thread that owns a socket per node and every task it
submitted (io), where a task goes (placement), and synchronous control requests
(control) used by meshctl and monitoring. ``Client`` is imported on first use:
meshctl's control requests need none of the I/O thread's modules."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.client.io import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name != "Client":
        raise AttributeError(f"module 'mesh.client' has no attribute {name!r}")
    from mesh.client.io import Client
    return Client
