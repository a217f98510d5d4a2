"""The beat's outbox: periodic runs sent to the node their id chooses, owned until done.

A run goes to ``hrw(task_id, nodes with our tasks)``: every node that fires the same run
(two nodes that both believe they fire an entry, for a moment, while membership
changes) sends it to the same node, and that node answers a task id it already holds
or has finished from its held tasks or its journal instead of running it again. So a
second firing of a run is recognised and not executed twice.

The outbox owns each run as a client owns its tasks: one DEALER per target node
(replies come back on it), resent with the same id when the target refuses it, gives
it back, does not acknowledge it in time, or is declared dead before the result came;
followed to its new holder when the target hands it on (MOVED: shedding, shutdown).
After the ACK it asks the target to be told the result
(``result`` with ``watch``), since a second firer's resend makes that firer the
owner the target answers. An ACK or a result counts only from the node the run was
sent to (any node may say anything about an id; only the holder's word is taken).
With keys, the sockets speak CurveZMQ as the node (one per mesh key while the key is
rotated: only the right one completes its handshake).
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import zmq

from mesh import states
from mesh.exceptions import DecodeError
from mesh.node.peers import routing_id
from mesh.node.zmqloop import SocketDriver
from mesh.security.curve import Security
from mesh.security.text import safe_logger
from mesh.wire.protocol import (
    Ack,
    Control,
    ControlReply,
    Error,
    Moved,
    Release,
    Result,
    decode,
    encode,
)

log = safe_logger("mesh.beat")

ACK_TIMEOUT = 5.0      # s without an ACK before a run is sent again (same id)


@dataclass
class Run:
    task_id: str
    entry: str
    due: float
    frame: bytes
    target: str = ""           # node id
    address: str = ""
    sent_at: float = 0.0
    acked: bool = False
    sends: int = 0
    # nodes that said they do not hold it (they handed it on, gave it back) or are gone,
    # since its last ACK: not sent to again, so a MOVED that points back at a node that
    # gave it back does not send it round that loop (a CI run: 1,000 times a second)
    avoid: set[str] = field(default_factory=set)


# (task_ids, excluded node) -> (node id, address) or None
PickTarget = Callable[[str, set[str]], tuple[str, str] | None]
Done = Callable[[Run, str, str], None]          # run, state, node


class Outbox:
    def __init__(self, ctx: zmq.Context[Any], node_name: str, pick: PickTarget, done: Done,
                 spawn: Callable[[Any], "asyncio.Task[None]"], security: Security | None = None):
        self.ctx = ctx
        self.security = security or Security(None)
        self.routing_id = routing_id("beat", node_name)
        self.pick = pick
        self.done = done
        self.spawn = spawn
        self.runs: dict[str, Run] = {}
        self.closed = False        # (the node stops) no socket is opened any more
        self.socks: dict[str, list[tuple[zmq.Socket[bytes], asyncio.Task[None]]]] = {}
        self.resent = 0
        self._now = 0.0            # the time of the last check() (a MOVED's resend is timed from it)
        self._graces: dict[str, float] = {}  # target that left, holding runs -> its grace
        self._left: dict[str, float] = {}    # target that left -> when first seen so
        self._alive: Mapping[str, str] = {}  # as of the last check()
        self._leaving: Set[str] = frozenset()

    # -- sending ----------------------------------------------------------------------
    def send(self, run: Run, now: float, avoid: set[str] | None = None) -> bool:
        """Send (or resend) a run to the node its id picks; False if no node can take it
        now (it stays owned and is tried again by check())."""
        self.runs[run.task_id] = run           # first: pick reads the run (its task's queue)
        if self.closed:
            # the node is stopping (its beat stopped first, while the node drains): a
            # socket opened now would never be closed, and the node would hang in its
            # context's term() after "stopped" (a user trial: a run resent because its
            # target left at the same time). The runs of its entries are other nodes' now.
            return False
        if avoid:
            run.avoid |= avoid
        choice = self.pick(run.task_id, run.avoid)
        if choice is None and run.avoid:
            run.avoid = set()                  # every node was tried: all again next time
        run.sent_at = now
        if choice is None:
            run.target, run.address = "", ""
            return False
        run.target, run.address = choice
        run.sends += 1
        if run.sends > 1:
            self.resent += 1
        return self._send_to(run, now)

    def _socks(self, address: str) -> list[zmq.Socket[bytes]]:
        entry = self.socks.get(address)
        if entry is None:
            entry = self.socks[address] = [self._open(address, key)
                                           for key in self.security.server_keys()]
        return [s for s, _task in entry]

    def _open(self, address: str, server_key: bytes | None
              ) -> tuple[zmq.Socket[bytes], "asyncio.Task[None]"]:
        s: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.ROUTING_ID, self.routing_id)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 1000)
        s.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.security.client(s, server_key)
        s.connect(address)
        driver = SocketDriver(s, functools.partial(self._on_frames, address), f"beat->{address}")
        return s, self.spawn(driver.run())

    def forget_socket(self, address: str) -> None:
        for sock, task in self.socks.pop(address, ()):
            task.cancel()
            task.add_done_callback(functools.partial(_close, sock))

    def sweep(self, keep: set[str]) -> None:
        """Close the sockets to nodes no longer among ``keep`` (addresses) that hold no run."""
        busy = {r.address for r in self.runs.values()}
        for address in [a for a in self.socks if a not in keep and a not in busy]:
            self.forget_socket(address)

    def close(self) -> None:
        """For good (the node stops): close every socket; nothing is sent any more."""
        self.closed = True
        self._close_sockets()

    def _close_sockets(self) -> None:
        for address in list(self.socks):
            self.forget_socket(address)

    def shift(self, by: float) -> None:
        """The wall clock stepped by ``by`` seconds: the times kept move with it, so a
        run is not left unacknowledged for as long as the clock went back."""
        for run in self.runs.values():
            run.sent_at += by
        self._left = {k: v + by for k, v in self._left.items()}
        self._now += by

    def reset(self, now: float) -> None:
        """New keys: close every socket and send every run again (same id) on new ones;
        its target answers with an ACK (then it is watched again) or its result."""
        if self.closed:
            return
        self._close_sockets()
        for run in list(self.runs.values()):
            if run.target:
                self.send(run, now)

    # -- replies ----------------------------------------------------------------------
    def _on_frames(self, address: str, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                msg = decode(frame)
            except DecodeError as e:
                log.warning("beat: undecodable reply from %s: %s", address, e)
                continue
            if isinstance(msg, Ack):
                for tid in msg.task_ids:
                    run = self.runs.get(tid)
                    if run is not None and not run.acked and run.address == address:
                        run.acked = True
                        run.avoid.clear()
                        self._watch(run)
            elif isinstance(msg, Result):
                self._result(msg.task_id, msg.state, msg.node, address)
            elif isinstance(msg, ControlReply):
                p = msg.payload
                if msg.ok and isinstance(p, dict) and isinstance(p.get("task_id"), str):
                    self._result(p["task_id"], str(p.get("state")), msg.node, address)
            elif isinstance(msg, Moved):
                self._moved(msg, address)
            elif isinstance(msg, Release):
                for tid in msg.task_ids:
                    run = self.runs.get(tid)
                    if run is not None and run.address == address:
                        log.info("beat: %s gave run %s of %s back (%s); sending it again",
                                 msg.node, tid, run.entry, msg.reason)
                        self.send(run, run.sent_at, avoid={msg.node})
            elif isinstance(msg, Error):
                run = self.runs.get(msg.ref or "")
                if run is not None and run.address != address:
                    run = None                   # not from the node holding it
                if run is None:
                    log.warning("beat: %s refused a frame: %s %s", address, msg.code, msg.message)
                elif msg.code in ("journal", "queue"):     # the node will not take it
                    log.warning("beat: %s did not take run %s of %s (%s); sending it elsewhere",
                                run.target, run.task_id, run.entry, msg.code)
                    self.send(run, run.sent_at, avoid={run.target})
                else:
                    log.error("beat: run %s of %s was refused by %s: %s %s", run.task_id,
                              run.entry, run.target, msg.code, msg.message)
                    self.runs.pop(run.task_id, None)
                    self.done(run, "REFUSED", run.target)

    def _moved(self, msg: Moved, address: str) -> None:
        """The target handed runs on (shedding, stopping): follow them, as a client
        does: the run goes to its new holder, which acknowledges it (then it is watched
        there) or answers its stored result. Without this the run stayed owned by the
        node it had left, and was sent again (and executed twice) when that node died
        or left, long after it had run elsewhere."""
        if self.closed or not msg.target.startswith("tcp://"):
            return
        for tid in msg.task_ids:
            run = self.runs.get(tid)
            if run is None or run.address != address:
                continue                     # only the holder's word is taken
            log.info("beat: %s handed run %s of %s to %s (%s)", msg.node, tid, run.entry,
                     msg.target_node or msg.target, msg.reason)
            run.avoid.add(msg.node)
            target = msg.target_node
            if target and (target in run.avoid or (
                    self._alive and target not in self._alive and target not in self._leaving)):
                # handed to a node that gave it back or is gone: it is elsewhere now (the
                # node it went to handed it on) or nowhere; sent to another node (one that
                # holds it acknowledges it; else it runs there)
                self.send(run, max(run.sent_at, self._now), avoid={target})
                continue
            run.target, run.address = target or run.target, msg.target
            self._send_to(run, max(run.sent_at, self._now))

    def _send_to(self, run: Run, now: float) -> bool:
        """(Re)send a run to the node it is owned by now; it is acknowledged again."""
        run.acked, run.sent_at = False, now
        try:
            for sock in self._socks(run.address):
                sock.send(run.frame, zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.warning("beat: could not send run %s of %s to %s: %s", run.task_id, run.entry,
                        run.target, e)
            return False
        return True

    def _watch(self, run: Run) -> None:
        req = encode(Control(f"beat-watch-{run.task_id}", "result",
                             {"task_id": run.task_id, "watch": True}))
        for sock, _task in self.socks.get(run.address, ()):
            try:
                sock.send(req, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass

    def _result(self, task_id: str, state: str, node: str, address: str) -> None:
        held = self.runs.get(task_id)
        if held is not None and held.address != address:
            return                               # only the holder's word counts
        if state == states.UNKNOWN:           # acknowledged, yet the target does not know it
            run = self.runs.get(task_id)       # (restarted without a journal): send it again
            if run is not None and run.acked:
                self.send(run, run.sent_at)
            return
        if state not in states.READY_STATES:
            return
        run = self.runs.pop(task_id, None)
        if run is not None:
            self.done(run, state, node)

    # -- timers -------------------------------------------------------------------------
    def check(self, now: float, alive: Mapping[str, str],
              leaving: Mapping[str, float] | None = None) -> None:
        """Resend runs whose target died, or that were not acknowledged in time
        (``alive``: node id -> address).

        A target that left (``leaving``: node id -> its grace; it stops gracefully)
        still finishes the runs it is running and answers their results, and hands its
        queued ones on (MOVED): its acknowledged runs are waited for its grace (that of
        its own shutdown timeout, which it gossips), also once the membership forgot
        it, as the nodes wait for a departed holder's copies (mesh/node/takeover.py).
        Sent again at once, a run already running there ran twice (a CI run: due
        17:42:19 executed on the stopping node and on the one the run was resent to).
        A target back alive within the grace (restarted under its name) is sent the
        run again, same id: it answers the result from its journal or acknowledges it."""
        leaving = leaving or {}
        self._now, self._alive, self._leaving = now, alive, frozenset(leaving)
        for name in [n for n in self._left if n in alive or n not in leaving]:
            if name not in alive and any(r.target == name for r in self.runs.values()):
                continue                  # forgotten by the membership: still in its grace
            since = self._left.pop(name)
            for run in [r for r in self.runs.values() if r.target == name and r.acked]:
                run.address = alive.get(name) or run.address
                log.info("beat: %s is back (it left %.0f s ago); sending it run %s of %s again",
                         name, now - since, run.task_id, run.entry)
                self._send_to(run, now)
        # a grace is kept while the node holds runs of ours (the membership may forget
        # it first), not for every node ever seen leaving
        self._graces = {n: g for n, g in {**self._graces, **leaving}.items()
                        if n in leaving or n in self._left}
        for run in list(self.runs.values()):
            if run.acked and (run.target in leaving or run.target in self._left):
                since = self._left.setdefault(run.target, now)
                if now - since > self._graces.get(run.target, 0.0):
                    log.info("beat: %s left %.0f s ago without answering run %s of %s; "
                             "sending it again", run.target, now - since, run.task_id, run.entry)
                    self.send(run, now, avoid={run.target})
            elif run.target and run.target not in alive:
                log.info("beat: %s died holding run %s of %s; sending it again", run.target,
                         run.task_id, run.entry)
                self.send(run, now, avoid={run.target})
            elif not run.target or (not run.acked and now - run.sent_at > ACK_TIMEOUT):
                self.send(run, now)


def _close(sock: zmq.Socket[bytes], _task: Any) -> None:
    sock.close(linger=0)
