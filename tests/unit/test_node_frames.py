"""The node's zmq frames through pyzmq's backend (mesh/node/zmqloop.py): the same
messages as pyzmq's send_multipart/recv_multipart, the same errors; and a real
SocketDriver reading them (bytes, and zmq.Frame objects with copy=False)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import zmq

from mesh.node.zmqloop import SocketDriver, recv_frames, send_frame, send_frames


def _pair() -> tuple[zmq.Context[Any], zmq.Socket[bytes], zmq.Socket[bytes]]:
    ctx: zmq.Context[Any] = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.setsockopt(zmq.ROUTING_ID, b"dealer-1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    return ctx, router, dealer


def test_frames_go_and_come_as_pyzmqs_multipart_calls_would() -> None:
    ctx, router, dealer = _pair()
    try:
        with pytest.raises(zmq.Again):                  # nothing waiting: as recv_multipart
            recv_frames(router)
        batch = [b"first", b"", b"x" * 5000, b"last"]
        send_frames(dealer, batch)
        send_frame(dealer, b"alone")
        assert router.poll(10_000)
        assert recv_frames(router) == [b"dealer-1", *batch]
        assert router.poll(10_000)
        frames = recv_frames(router, copy=False)        # zmq.Frame objects
        assert all(isinstance(f, zmq.Frame) for f in frames)
        assert [f.bytes for f in frames] == [b"dealer-1", b"alone"]
        send_frames(router, [b"dealer-1", b"a", b"b"])  # a ROUTER's reply, routed
        assert dealer.poll(10_000)
        assert dealer.recv_multipart() == [b"a", b"b"]
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


def test_a_send_that_cannot_be_queued_raises_as_pyzmqs_would() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)                     # connected to nobody: no pipe
    try:
        with pytest.raises(zmq.Again):
            send_frames(dealer, [b"a", b"b"])
        with pytest.raises(zmq.Again):
            send_frame(dealer, b"a")
        with pytest.raises(TypeError):                  # not a buffer: as send_multipart
            send_frames(dealer, ["text"])               # type: ignore[list-item]
    finally:
        dealer.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("copy", [True, False])
def test_a_driver_reads_every_message_of_a_burst_in_order(copy: bool) -> None:
    ctx, router, dealer = _pair()
    got: list[list[bytes]] = []

    def on_frames(frames: list[Any]) -> None:
        got.append([f if isinstance(f, bytes) else f.bytes for f in frames])

    sent = [[b"m%d" % i] + [b"f%d" % j for j in range(i % 4)] for i in range(500)]

    async def main() -> None:
        driver = SocketDriver(router, on_frames, "test", batch=64, copy=copy)
        task = asyncio.create_task(driver.run())
        for m in sent:
            send_frames(dealer, m)
        deadline = time.monotonic() + 10
        while len(got) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert driver.send([b"dealer-1", b"reply", b"two"])
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
        assert got == [[b"dealer-1", *m] for m in sent]
        assert dealer.poll(10_000)
        assert dealer.recv_multipart() == [b"reply", b"two"]
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()
