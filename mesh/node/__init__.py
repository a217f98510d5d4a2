"""The node side, the daemon behind ``meshnode``: the node and its parts (intake, pool
and children, journal, remote control, events, peer sockets)."""
from mesh.node.node import Node, NodeStartError

__all__ = ["Node", "NodeStartError"]
