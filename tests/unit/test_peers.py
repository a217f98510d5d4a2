"""Peer sockets never resolve host names on libzmq's I/O thread (real sockets)."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
import zmq

from mesh.node import peers
from mesh.node.peers import PeerSockets, literal_host


@pytest.mark.parametrize("address, literal", [
    ("tcp://127.0.0.1:7700", True), ("tcp://10.1.2.3:1", True), ("tcp://[::1]:7700", True),
    ("tcp://localhost:7700", False), ("tcp://evil0:1", False), ("tcp://127.0>0.1:5", False),
])
def test_literal_host(address: str, literal: bool) -> None:
    assert literal_host(address) is literal


def _deliver_eventually(ps: PeerSockets, address: str, frame: bytes, timeout: float = 30.0) -> int:
    """Send until a send is accepted (the name resolved); how many were dropped first."""
    dropped = 0
    deadline = time.monotonic() + timeout
    while not ps.send(address, frame):
        dropped += 1
        assert time.monotonic() < deadline, "the host name never resolved"
        time.sleep(0.01)
    return dropped


def test_a_host_name_is_resolved_off_thread_and_then_used() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    ps = PeerSockets(ctx, b"me")
    try:
        dropped = _deliver_eventually(ps, f"tcp://localhost:{port}", b"hello")
        assert dropped >= 1                    # the first frame waited for no lookup
        assert router.poll(5000)
        assert router.recv_multipart() == [b"me", b"hello"]
    finally:
        ps.close()
        router.close(linger=0)
        ctx.term()


def test_a_slow_name_lookup_never_blocks_a_send(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls: list[str] = []

    def stuck_lookup(host: str, *a: Any, **k: Any) -> Any:
        calls.append(host)
        release.wait(30)                        # a DNS server that does not answer
        raise socket.gaierror("no answer")

    monkeypatch.setattr(peers.socket, "getaddrinfo", stuck_lookup)
    ctx: zmq.Context[Any] = zmq.Context()
    ps = PeerSockets(ctx, b"me")
    try:
        for i in range(300):                    # a forged message naming many hosts
            assert ps.send(f"tcp://evil{i}:1", b"x") is False
        assert len(calls) <= peers.MAX_RESOLVING
        assert not ps.socks
    finally:
        release.set()
        ps.close()
        ctx.term()
