"""The client side: the I/O thread that owns a socket per node and every task it
submitted (io), where a task goes (placement), and synchronous control requests
(control) used by meshctl and monitoring."""
from mesh.client.io import Client

__all__ = ["Client"]
