"""The client: one I/O thread that owns a DEALER socket per node.

Callers (any thread, or asyncio code) never touch a socket: ``submit`` appends to an
outbox and wakes the I/O thread through an eventfd, at most once per batch. The I/O
thread sends, receives ACK/RESULT/RELEASE/ERROR and completes slots. The client owns
every task it submitted until its result arrives: it keeps the encoded frame, and a
task a node gives back unstarted (RELEASE, at node shutdown) is sent again elsewhere.
"""
from __future__ import annotations

import atexit
import collections
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from typing import Any

import zmq

from . import states
from .config import Config
from .exceptions import ConfigError, DecodeError
from .protocol import Ack, Error, Release, Result, decode
from .result import Slot

log = logging.getLogger("mesh.client")

RELEASE_RETRY_DELAY = 0.5   # seconds before resending a released task to the node it left
BATCH = 256                 # most frames sent to a node in one zmq message


def _close_at_exit(ref: "weakref.ref[Client]") -> None:
    """Flush what is queued before the interpreter exits (fire-and-forget delay())."""
    client = ref()
    if client is not None:
        client.close()


class Client:
    def __init__(self, config: Config):
        if not config.peers:
            raise ConfigError("no nodes to send tasks to: pass peers=['tcp://HOST:PORT'] to Mesh "
                              "or set MESH_PEERS (mDNS discovery is not available in this version yet)")
        self.config = config
        self.client_id = uuid.uuid4().hex.encode()
        self.endpoints = list(dict.fromkeys(config.peers))
        self.loads: dict[str, list[int]] = {}          # endpoint -> [busy, total, queued]
        self.duplicates = 0                             # results for already-complete tasks
        self._slots: dict[str, Slot] = {}               # I/O thread writes; others read
        self._outbox: collections.deque[Any] = collections.deque()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self._closing = False
        self._linger = 5.0
        self._retry: list[tuple[float, Slot]] = []     # (not before, slot) for released tasks
        self._left: dict[str, float] = {}               # endpoint -> when it released work
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._run, name="mesh-client-io", daemon=True)
        self._thread.start()
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)

    # -- called from any thread -------------------------------------------------------
    def submit(self, slot: Slot) -> None:
        if self._closing:
            raise RuntimeError("the mesh client is closed")
        self._outbox.append(slot)
        self._wake()

    def lookup(self, task_id: str) -> Slot | None:
        return self._slots.get(task_id)

    @property
    def outstanding(self) -> int:
        return len(self._slots)

    def close(self, linger: float = 5.0) -> None:
        """Send what is queued (up to ``linger`` seconds), then stop the I/O thread."""
        if self._closing:
            return
        self._linger = linger
        self._closing = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(linger + 5)

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            os.eventfd_write(self._efd, 1)

    # -- the I/O thread ---------------------------------------------------------------
    def _run(self) -> None:
        socks: dict[zmq.Socket[bytes], str] = {}
        by_ep: dict[str, zmq.Socket[bytes]] = {}
        poller = zmq.Poller()
        poller.register(self._efd, zmq.POLLIN)
        for ep in self.endpoints:
            s = self._ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.ROUTING_ID, self.client_id)
            s.setsockopt(zmq.SNDHWM, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size * 2)
            s.connect(ep)
            socks[s] = ep
            by_ep[ep] = s
            poller.register(s, zmq.POLLIN)
        self._by_ep = by_ep
        self._rr = itertools.cycle(self.endpoints)
        try:
            while True:
                timeout = 1000.0
                if self._retry:
                    timeout = max(0.0, min(t for t, _ in self._retry) - time.monotonic()) * 1000
                events = poller.poll(int(timeout) + 1 if timeout else 0)
                for sock_or_fd, _ev in events:
                    if sock_or_fd == self._efd:
                        try:
                            os.eventfd_read(self._efd)
                        except BlockingIOError:
                            pass
                        self._wake_pending = False
                        self._drain_outbox()
                    else:
                        self._drain_socket(sock_or_fd, socks[sock_or_fd])
                if self._retry:
                    self._resend_due()
                if self._closing:
                    self._drain_outbox()
                    break
        except Exception:
            log.exception("mesh client I/O thread failed")
        finally:
            for s in socks:
                s.close(linger=int(self._linger * 1000))
            self._ctx.term()
            os.close(self._efd)

    def _drain_outbox(self) -> None:
        """Send what callers queued, frames for one node together (one zmq message
        of up to BATCH frames; each frame is one protocol message)."""
        popleft = self._outbox.popleft
        batches: dict[str, list[bytes]] = {}
        now = time.monotonic()
        while self._outbox:
            slot = popleft()
            self._slots[slot.task_id] = slot
            ep = self._pick()
            slot.node, slot.sent_at = ep, now
            slot.attempts += 1
            batch = batches.get(ep)
            if batch is None:
                batch = batches[ep] = []
            if slot.frame is not None:
                batch.append(slot.frame)
            if len(batch) >= BATCH:
                self._by_ep[ep].send_multipart(batch, zmq.NOBLOCK)
                batches[ep] = []
        for ep, batch in batches.items():
            if batch:
                self._by_ep[ep].send_multipart(batch, zmq.NOBLOCK)

    def _pick(self, avoid: str | None = None) -> str:
        """Round-robin over nodes, skipping ones that recently gave work back."""
        now = time.monotonic()
        for _ in range(len(self.endpoints)):
            ep = next(self._rr)
            left = self._left.get(ep)
            if ep != avoid and (left is None or now - left > 5.0):
                return ep
        return next(self._rr)

    def _send(self, slot: Slot, ep: str) -> None:
        if slot.frame is None:
            return
        slot.node = ep
        slot.sent_at = time.monotonic()
        slot.attempts += 1
        self._by_ep[ep].send(slot.frame, zmq.NOBLOCK)

    def _drain_socket(self, sock: zmq.Socket[bytes], ep: str) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for frame in frames:       # each frame is one message
                try:
                    msg = decode(frame, self.config.max_message_size)
                except DecodeError as e:
                    log.warning("dropped a bad frame from %s: %s", ep, e)
                    continue
                try:
                    self._handle(msg, ep)
                except Exception:
                    log.exception("error handling %s from %s", type(msg).__name__, ep)

    def _handle(self, msg: Any, ep: str) -> None:
        if type(msg) is Result:
            slot = self._slots.pop(msg.task_id, None)
            if slot is None or not slot.complete(msg):
                self.duplicates += 1
        elif type(msg) is Ack:
            if msg.load:
                self.loads[ep] = msg.load
            for tid in msg.task_ids:
                slot = self._slots.get(tid)
                if slot is not None and slot.state == states.PENDING:
                    slot.state = states.RECEIVED
        elif type(msg) is Release:
            self._left[ep] = time.monotonic()
            for tid in msg.task_ids:
                slot = self._slots.get(tid)
                if slot is None or slot.msg is not None:
                    continue
                slot.state = states.PENDING
                others = [e for e in self.endpoints if e != ep]
                if others:
                    self._send(slot, self._pick(avoid=ep))
                else:   # the only node is restarting: try it again shortly
                    self._retry.append((time.monotonic() + RELEASE_RETRY_DELAY, slot))
            log.info("node %s gave back %d unstarted task(s): %s", msg.node, len(msg.task_ids), msg.reason)
        elif type(msg) is Error:
            log.warning("node at %s refused a frame: %s: %s", ep, msg.code, msg.message)
            slot = self._slots.pop(msg.ref, None) if msg.ref else None
            if slot is not None:
                slot.complete(Result(task_id=slot.task_id, state=states.FAILURE, node=ep, exc={
                    "type": "DecodeError", "module": "mesh.exceptions",
                    "message": f"node refused the task ({msg.code}): {msg.message}"}))
        else:
            log.debug("ignored %s from %s", type(msg).__name__, ep)

    def _resend_due(self) -> None:
        now = time.monotonic()
        due = [s for t, s in self._retry if t <= now]
        self._retry = [(t, s) for t, s in self._retry if t > now]
        for slot in due:
            if slot.msg is None:
                self._send(slot, self._pick())
