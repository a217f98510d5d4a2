"""A node killed with SIGKILL takes its children with it: no orphan keeps running a
task nobody will collect, or keeps the node's port so that a restart cannot bind."""
from __future__ import annotations

import signal
import socket
from collections.abc import Callable

import psutil
from harness import ClientHandle, NodeFactory, wait_until


def test_sigkilled_node_leaves_no_children_and_frees_its_port(
        start_node: NodeFactory, make_client: Callable[..., ClientHandle]) -> None:
    node = start_node(concurrency=2)
    client = make_client(node)
    client.tasks.sleep.delay(60)              # a child is busy for a long time
    wait_until(lambda: node.status()["busy"] == 1, what="the long task to start")
    children = psutil.Process(node.pid).children()
    assert len(children) == 2

    node.send_signal(signal.SIGKILL)
    node.wait(timeout=10)

    def all_gone() -> bool:
        return not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    wait_until(all_gone, timeout=10, what="the dead node's children to exit")

    port = int(node.endpoint.rsplit(":", 1)[1])
    with socket.socket() as s:               # what a restarted node on the same port does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
