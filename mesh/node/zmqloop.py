"""Drive a ZeroMQ socket from asyncio without a future per message.

ZeroMQ's FD is edge-triggered: it signals "something changed", after which the owner
must read ZMQ_EVENTS and drain every pending message. A send may also consume the
signal, so after sending we schedule one more look. Messages are taken in batches
with NOBLOCK straight from the loop's reader callback, which is what makes a Python
node fast: no task switch, no future per message.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger("mesh.zmqloop")

# plain ints: pyzmq's enum wrappers cost more than the calls themselves
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)


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
        while int(sock.get(_EVENTS)) & _POLLIN:
            try:
                frames = sock.recv_multipart(_NOBLOCK, copy=copy)
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
            self.sock.send_multipart(frames, _NOBLOCK)
            return True
        except zmq.ZMQError as e:
            self.dropped += 1
            log.debug("%s: send dropped: %s", self.name, e)
            return False
        finally:
            self._schedule()           # a send can swallow the FD's edge: look again
