"""Remote control, node side: the commands every node answers on its front door.

A CONTROL message names a command and carries its arguments; the node answers with
a CONTROL_REPLY (unless ``args["noreply"]`` is true: node-to-node forwards). Names
follow Celery's ``inspect`` and ``control``:

    ping, status (= stats), members, result           (what a node is and knows)
    active, reserved, scheduled, registered, revoked  (inspect)
    revoke, rate_limit, time_limit, pool_grow, pool_shrink, shutdown   (control)
    duplicate                                         (a client reports a late result)
    forget                                            (AsyncResult.forget: drop a result)

Arguments are checked here: a bad one is a clear error in the reply, never an
exception that escapes into the node.
"""
from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mesh import __version__, states
from mesh.node import taskstate
from mesh.node.events import short_repr
from mesh.node.journal import JournalError
from mesh.ratelimit import TokenBucket, parse_rate
from mesh.wire import codec
from mesh.wire.protocol import (
    PROTOCOL_VERSION,
    Control,
    ControlReply,
    Submit,
    decode,
    encode,
)

if TYPE_CHECKING:
    from mesh.node.node import Node
    from mesh.node.pool import Entry

log = logging.getLogger("mesh.remote")

MAX_REVOKED = 100_000        # revoked ids a node remembers in memory (the journal keeps them too)
FORWARD_CHUNK = 5_000        # ids per forwarded revoke message
MAX_IDS_PER_REVOKE = 10_000


class BadArgs(ValueError):
    """A control command's arguments are wrong; the message says how."""


def _str_arg(args: dict[str, Any], key: str, what: str) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not 0 < len(v) <= 500:
        raise BadArgs(f"{what} needs '{key}': a non-empty string")
    return v


def _count_arg(args: dict[str, Any], key: str = "n") -> int:
    v = args.get(key, 1)
    if type(v) is not int or not 1 <= v <= 1000:
        raise BadArgs(f"'{key}' must be an integer from 1 to 1000, got {v!r}")
    return v


def _limit_arg(args: dict[str, Any], key: str) -> float | None:
    v = args.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e7:
        raise BadArgs(f"'{key}' must be a number of seconds > 0, or null for none; got {v!r}")
    return float(v)


def _signal_arg(args: dict[str, Any]) -> int:
    name = args.get("signal", "SIGKILL")
    if not isinstance(name, str):
        raise BadArgs("'signal' must be a signal name like SIGKILL or SIGTERM")
    name = name.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    sig = getattr(signal.Signals, name, None)
    if sig is None or name in ("SIGSTOP", "SIGCONT"):
        raise BadArgs(f"unknown or unusable signal {args.get('signal')!r}")
    return int(sig)


class RemoteControl:
    """Answers control commands for one node and keeps what they change."""

    def __init__(self, node: "Node"):
        self.node = node
        self.revoked: dict[str, float] = {}      # task id -> when (oldest first)
        self.time_limits: dict[str, tuple[float | None, float | None]] = {}  # name -> (soft, hard)
        self.handlers: dict[str, Callable[[bytes, dict[str, Any]], Any]] = {
            "ping": lambda i, a: self.ping(),
            "status": lambda i, a: node.status(), "stats": lambda i, a: node.status(),
            "members": lambda i, a: node.members(),
            "result": node.task_state,
            "active": lambda i, a: self.active(), "reserved": lambda i, a: self.reserved(),
            "scheduled": lambda i, a: self.scheduled(),
            "registered": lambda i, a: self.registered(),
            "revoked": lambda i, a: list(self.revoked)[-MAX_IDS_PER_REVOKE:],
            "revoke": lambda i, a: self.revoke(a),
            "rate_limit": lambda i, a: self.rate_limit(a),
            "time_limit": lambda i, a: self.time_limit(a),
            "pool_grow": lambda i, a: {"size": node.pool.grow(_count_arg(a))},
            "pool_shrink": lambda i, a: {"size": node.pool.shrink(_count_arg(a))},
            "shutdown": lambda i, a: self.shutdown(),
            "duplicate": lambda i, a: self.duplicate(a),
            "forget": lambda i, a: taskstate.forget(node, a),
        }

    # -- dispatch ---------------------------------------------------------------------
    def handle(self, ident: bytes, msg: Control) -> None:
        node = self.node
        fn = self.handlers.get(msg.command)
        if fn is None:
            reply = ControlReply(msg.req_id, False, node.name, None,
                                 f"unknown command {msg.command!r} (known: "
                                 f"{', '.join(sorted(self.handlers))})")
        else:
            try:
                reply = ControlReply(msg.req_id, True, node.name, fn(ident, msg.args))
            except BadArgs as e:
                reply = ControlReply(msg.req_id, False, node.name, None, f"{msg.command}: {e}")
            except Exception as e:
                log.exception("control command %s failed", msg.command)
                reply = ControlReply(msg.req_id, False, node.name, None, f"{type(e).__name__}: {e}")
        if msg.args.get("noreply") is not True:
            node._reply(ident, encode(reply))

    # -- inspect ----------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        n = self.node
        return {"node": n.name, "address": n.address, "version": __version__,
                "protocol": PROTOCOL_VERSION, "events": n.events_endpoint}

    def _describe(self, e: "Entry", **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"id": e.task_id, "name": e.name, "node": self.node.name,
                               "priority": e.priority, "received": e.received, **extra}
        try:
            msg = decode(e.frame)
            if isinstance(msg, Submit):
                args, kwargs = codec.load_call(msg.payload)
                out.update(args=short_repr(tuple(args), 200), kwargs=short_repr(kwargs, 200),
                           retries=msg.retries)
        except Exception as err:
            out["args"] = f"<undecodable: {err}>"
        return out

    def active(self) -> list[dict[str, Any]]:
        pool = self.node.pool
        return [self._describe(c.entry, started=c.entry.started, pid=c.pid)
                for c in pool.children.values() if c.entry is not None]

    def reserved(self) -> list[dict[str, Any]]:
        return [self._describe(e) for _, _, e in sorted(self.node.pool.queue)]

    def scheduled(self) -> list[dict[str, Any]]:
        return [self._describe(e, eta=e.eta) for e in
                sorted(self.node.pool.scheduled.values(), key=lambda e: e.eta or 0.0)]

    def registered(self) -> list[dict[str, Any]]:
        out = []
        for name, task in sorted(self.node.app.tasks.items()):
            o = task.options
            bucket = self.node.pool.limits.get(name)
            soft, hard = self.time_limits.get(name, (o.soft_time_limit, o.time_limit))
            out.append({"name": name, "rate_limit": bucket.rate if bucket else None,
                        "time_limit": hard, "soft_time_limit": soft, "acks_late": o.acks_late,
                        "max_retries": o.max_retries})
        return out

    # -- revoke -----------------------------------------------------------------------
    def load_revoked(self) -> None:
        """At start: the revokes the journal remembers."""
        j = self.node.journal
        if j is None:
            return
        try:
            since = time.time() - self.node.config.result_expires
            for tid, at in j.revoked_since(since, MAX_REVOKED):
                self.revoked[tid] = at
        except JournalError as e:
            log.error("journal: could not read revoked ids: %s", e)

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self.revoked

    def revoke(self, args: dict[str, Any]) -> dict[str, Any]:
        """Revoke ids: a queued or scheduled one is dropped (REVOKED result to its
        owner), a running one is killed with ``terminate``, and every id is
        remembered, journalled and forwarded to every peer, so it does not run
        anywhere later either."""
        ids = args.get("task_ids")
        if isinstance(ids, str):
            ids = [ids]
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_IDS_PER_REVOKE
                or not all(isinstance(t, str) and 0 < len(t) <= 200 for t in ids)):
            raise BadArgs(f"revoke needs 'task_ids': a list of 1 to {MAX_IDS_PER_REVOKE} ids")
        terminate = args.get("terminate") is True
        sig = _signal_arg(args)
        node, now = self.node, time.time()
        new = [t for t in ids if t not in self.revoked]
        for tid in ids:
            self.revoked.pop(tid, None)
            self.revoked[tid] = now
        while len(self.revoked) > MAX_REVOKED:
            del self.revoked[next(iter(self.revoked))]
        if node.journal is not None and new:
            try:
                node.journal.revoke(new, now)
            except JournalError as e:
                log.error("journal: revoked ids not stored: %s", e)
        dropped, terminated, running = [], [], []
        for tid in ids:
            entry = node.held.get(tid)
            if entry is None:
                continue
            if node.pool.remove(tid) is not None:
                dropped.append(tid)
                node.task_failed(entry, "TaskRevokedError", f"task {tid} was revoked", states.REVOKED)
            elif entry.started is not None:
                if terminate and node.pool.terminate(tid, sig):
                    terminated.append(tid)
                else:
                    running.append(tid)
        if new and args.get("forwarded") is not True:
            self.forward(new, terminate, args.get("signal", "SIGKILL"))
        if dropped or terminated:
            log.info("revoked %d task(s): %d dropped before they started, %d terminated",
                     len(ids), len(dropped), len(terminated))
        return {"revoked": ids, "dropped": dropped, "terminated": terminated,
                "still_running": running}

    def forward(self, ids: list[str], terminate: bool, sig: Any,
                to: list[str] | None = None) -> None:
        """Tell peers (all alive ones, or ``to``) about revoked ids; no replies."""
        node = self.node
        if node.transport is None or node.membership is None:
            return
        if to is None:
            to = [m.address for m in node.membership.alive_members(include_self=False)]
        for i in range(0, len(ids), FORWARD_CHUNK):
            frame = encode(Control(f"revoke-{node.name}-{time.monotonic_ns()}", "revoke", {
                "task_ids": ids[i:i + FORWARD_CHUNK], "terminate": terminate, "signal": sig,
                "forwarded": True, "noreply": True}))
            for address in to:
                node.transport.send(address, frame)

    def share_with(self, address: str) -> None:
        """A member joined (or came back): tell it what we revoked."""
        if self.revoked:
            self.forward(list(self.revoked), False, "SIGKILL", [address])

    # -- limits, pool, lifecycle ------------------------------------------------------
    def rate_limit(self, args: dict[str, Any]) -> dict[str, Any]:
        name = _str_arg(args, "task", "rate_limit")
        if name not in self.node.app.tasks:
            raise BadArgs(f"task {name!r} is not registered on node {self.node.name}")
        try:
            rate = parse_rate(args.get("rate"))
        except Exception as e:
            raise BadArgs(str(e)) from None
        limits = self.node.pool.limits
        if rate is None:
            limits.pop(name, None)
        else:
            limits[name] = TokenBucket(rate)
        log.info("rate limit of %s: %s", name, f"{rate:g}/s" if rate else "none")
        return {"task": name, "rate_per_s": rate}

    def time_limit(self, args: dict[str, Any]) -> dict[str, Any]:
        name = _str_arg(args, "task", "time_limit")
        if name not in self.node.app.tasks:
            raise BadArgs(f"task {name!r} is not registered on node {self.node.name}")
        soft, hard = _limit_arg(args, "soft"), _limit_arg(args, "hard")
        if soft is not None and hard is not None and soft > hard:
            raise BadArgs(f"the soft limit ({soft:g} s) must not exceed the hard limit ({hard:g} s)")
        self.time_limits[name] = (soft, hard)
        log.info("time limits of %s: soft %s, hard %s (for tasks received from now on)",
                 name, soft, hard)
        return {"task": name, "soft": soft, "hard": hard}

    def shutdown(self) -> dict[str, Any]:
        self.node.stop_soon()
        return {"node": self.node.name, "stopping": True}

    def duplicate(self, args: dict[str, Any]) -> None:
        """A client got a second result for a task (its first came from another node,
        or from this one before a restart): say so on the event stream."""
        tid = _str_arg(args, "task_id", "duplicate")
        first = args.get("first_node")
        self.node.counts["duplicates_reported"] += 1
        self.node.events.emit("task-duplicate", uuid=tid,
                              first_node=first if isinstance(first, str) else None)
