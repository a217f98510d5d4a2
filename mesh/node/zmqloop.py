"""Drive a ZeroMQ socket from asyncio without a future per message.

ZeroMQ's FD is edge-triggered: it signals "something changed", after which the owner
must read ZMQ_EVENTS and drain every pending message. A send may also consume the
signal, so after sending we schedule one more look. Messages are taken in batches
with NOBLOCK straight from the loop's reader callback, which is what makes a Python
node fast: no task switch, no future per message.

Frames are read and sent through pyzmq's backend (``zmq.backend.Socket``'s ``recv``,
``send`` and ``get``) with integer flags, as the client does (mesh/client/frames.py):
pyzmq's ``send_multipart`` ORs ``SNDMORE | flags`` as enum flags and goes through the
Python ``Socket.send`` wrapper for each frame, and ``recv_multipart`` asks ``RCVMORE``
through ``get``, which makes an enum of the option, for each frame (round 9 of
docs/performance.md; ``python -m bench.node_frames``).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import zmq
from zmq.backend import Socket as _Base

from mesh.security.text import safe_logger

log = safe_logger("mesh.zmqloop")

# plain ints: pyzmq's enum wrappers cost more than the calls themselves
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_send = _Base.send
_recv = _Base.recv
_get = _Base.get


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """``sock.send_multipart(frames, zmq.NOBLOCK)``, cheaper (raises as it would:
    zmq.Again when the message cannot be queued; a message is queued whole or not at
    all, so only its first frame can fail so)."""
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], _MORE)
    _send(sock, frames[last], _NOBLOCK)


def send_frame(sock: zmq.Socket[bytes], frame: bytes) -> None:
    """``sock.send(frame, zmq.NOBLOCK)``, cheaper (raises as it would)."""
    _send(sock, frame, _NOBLOCK)


def recv_frames(sock: zmq.Socket[bytes], copy: bool = True) -> list[Any]:
    """``sock.recv_multipart(zmq.NOBLOCK, copy=copy)``, cheaper: bytes, or zmq.Frame
    objects with ``copy=False`` (raises as it would; zmq.Again when none waits). Each
    frame is read as a zmq.Frame, whose ``more`` needs no getsockopt (``RCVMORE``
    through ``get`` makes an enum of the option each time)."""
    frame: Any = _recv(sock, _NOBLOCK, False)
    if copy:
        parts: list[Any] = [frame.bytes]
        while frame.more:
            frame = _recv(sock, _NOBLOCK, False)
            parts.append(frame.bytes)
        return parts
    parts = [frame]
    while frame.more:
        frame = _recv(sock, _NOBLOCK, False)
        parts.append(frame)
    return parts


class SocketDriver:
    """Owns one socket's receive side for the life of ``run()``; ``send`` may be
    called from any code on the same event loop."""

    def __init__(self, sock: zmq.Socket[bytes], on_frames: Callable[[list[Any]], None],
                 name: str, after_batch: Callable[[], None] | None = None, batch: int = 1000,
                 copy: bool = True):
        self.sock = sock
        self._copy = copy          # False: on_frames gets zmq.Frame objects (their metadata:
                                   # the User-Id of the key a message came with)
        self.name = name
        self._on_frames = on_frames
        self._after_batch = after_batch
        self._batch = batch
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0

    async def run(self) -> None:
        """Serve the socket until cancelled."""
        loop = self._loop = asyncio.get_running_loop()
        fd = int(self.sock.get(zmq.FD))
        loop.add_reader(fd, self._drain)
        self._schedule()              # messages may be waiting already
        try:
            await loop.create_future()   # until cancelled
        finally:
            loop.remove_reader(fd)
            self._loop = None

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        sock, on_frames, copy = self.sock, self._on_frames, self._copy
        n = 0
        while cast(int, _get(sock, _EVENTS)) & _POLLIN:
            try:
                frames = recv_frames(sock, copy)
            except zmq.Again:
                break
            try:
                on_frames(frames)
            except Exception:
                log.exception("%s: handler failed; message dropped", self.name)
            n += 1
            if n >= self._batch:       # let other sockets and timers run, then go on
                self._schedule()
                break
        if n and self._after_batch is not None:
            try:
                self._after_batch()
            except Exception:
                log.exception("%s: after-batch hook failed", self.name)

    def send(self, frames: list[bytes]) -> bool:
        """Send without blocking; False (and counted) if it could not be queued."""
        try:
            send_frames(self.sock, frames)
            return True
        except zmq.ZMQError as e:
            self.dropped += 1
            log.debug("%s: send dropped: %s", self.name, e)
            return False
        finally:
            self._schedule()           # a send can swallow the FD's edge: look again
