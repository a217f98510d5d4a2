"""The node's zmq frames: what reading and sending a message costs the node's thread
through pyzmq's multipart calls (``recv_multipart``/``send_multipart``, what the node
used before round 9) and through mesh/node/zmqloop.py's ``recv_frames``/``send_frames``
(pyzmq's backend, integer flags), in the shapes of the headline bench: a client's
batch of SUBMITs (its routing id and up to 256 frames of ~110 bytes), a lone SUBMIT,
a reply of RESULTs and an ACK, one frame to a peer. CPU of this thread
(``thread_time``) per frame, on inproc sockets (no I/O thread on the path), both ways
alternated.

Run from the repo root:
    .venv/bin/python -m bench.node_frames [--repeat 5] [-n 200000]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import zmq

from mesh.node.zmqloop import recv_frames, send_frame, send_frames

_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)

FRAME = b"\x96" + b"s" * 109           # a SUBMIT's size, more or less
SHAPES = [("client batch in: id + 256 frames", 256, "in"),
          ("lone SUBMIT in: id + 1 frame", 1, "in"),
          ("reply out: id + 16 RESULTs + ACK", 17, "out"),
          ("reply out: id + RESULT", 1, "out"),
          ("one frame to a peer", 0, "peer")]


def _pyzmq_recv(sock: zmq.Socket[bytes]) -> list[Any]:
    # the node's drain before: EVENTS through get(), then recv_multipart
    if int(sock.get(_EVENTS)) & _POLLIN:
        return sock.recv_multipart(_NOBLOCK)
    return []


def _mesh_recv(sock: zmq.Socket[bytes]) -> list[Any]:
    if int(zmq.backend.Socket.get(sock, _EVENTS)) & _POLLIN:    # type: ignore[arg-type]
        return recv_frames(sock)
    return []


def _pyzmq_send(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    sock.send_multipart(frames, _NOBLOCK)


def _pyzmq_send1(sock: zmq.Socket[bytes], frame: bytes) -> None:
    sock.send(frame, _NOBLOCK)


def _one(n: int, size: int, way: str, mesh: bool) -> float:
    """us of this thread's CPU per frame (the routing id not counted)."""
    ctx: zmq.Context[Any] = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
    dealer.setsockopt(zmq.ROUTING_ID, b"client-0123456789")
    router.bind("inproc://frames")
    dealer.connect("inproc://frames")
    try:
        if way == "in":
            msgs = n // size
            for _ in range(msgs):
                dealer.send_multipart([FRAME] * size)
            recv: Callable[[zmq.Socket[bytes]], list[Any]] = _mesh_recv if mesh else _pyzmq_recv
            t = time.thread_time()
            got = 0
            while got < msgs:
                if recv(router):
                    got += 1
            return (time.thread_time() - t) / (msgs * size) * 1e6
        if way == "out":
            ident = b"client-0123456789"
            send_frames(dealer, [b"hello"])
            router.recv_multipart()
            msgs = n // size
            msg = [ident] + [FRAME] * size
            send: Callable[[zmq.Socket[bytes], list[bytes]], None] = (
                send_frames if mesh else _pyzmq_send)
            t = time.thread_time()
            for _ in range(msgs):
                send(router, msg)
            return (time.thread_time() - t) / (msgs * size) * 1e6
        one: Callable[[zmq.Socket[bytes], bytes], None] = send_frame if mesh else _pyzmq_send1
        t = time.thread_time()
        for _ in range(n):
            one(dealer, FRAME)
        return (time.thread_time() - t) / n * 1e6
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("-n", "--frames", type=int, default=200_000)
    args = ap.parse_args()
    print(f"us of the thread's CPU per payload frame (the routing id's frame counted in), "
          f"medians of {args.repeat} (alternated)")
    print(f"{'':40s}{'pyzmq multipart':>18s}{'zmqloop (backend)':>20s}")
    for label, size, way in SHAPES:
        n = args.frames if size != 1 else args.frames // 4
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.repeat):
            old.append(_one(n, max(size, 1), way, False))
            new.append(_one(n, max(size, 1), way, True))
        print(f"{label:40s}{statistics.median(old):>18.2f}{statistics.median(new):>20.2f}")


if __name__ == "__main__":
    main()
