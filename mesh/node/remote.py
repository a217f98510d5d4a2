"""Remote control, node side: mesh's own control commands, and the component that
answers every registered command on the front door.

A CONTROL message names a command and carries its arguments; the node parses them
into the command's request dataclass (mesh/wire/control.py), runs the registered
function (mesh/node/commands.py) and answers with a CONTROL_REPLY (unless
``args["noreply"]`` is true: node-to-node forwards). Names follow Celery's
``inspect`` and ``control``:

    ping, status (= stats), members, result           (what a node is and knows)
    active_queues                                     (the queues it takes)
    active, reserved, scheduled, registered, revoked  (inspect)
    revoke, rate_limit, time_limit, pool_grow, pool_shrink, shutdown   (control)
    autoscale                                          (control; mesh/node/autoscale.py)
    duplicate                                         (a client reports a late result)
    forget                                            (AsyncResult.forget: drop a result)
    purge                                             (control; mesh/node/purge.py)
    add_consumer, cancel_consumer                     (control; mesh/node/consumers.py)

A bad argument is a clear error in the reply, never an exception that escapes into
the node; so is a command that raises.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mesh import __version__
from mesh import states as task_states
from mesh.exceptions import revoked_message
from mesh.node import consumers as _consumers  # noqa: F401  (registers add_consumer...)
from mesh.node import purge as _purge  # noqa: F401  (registers the purge command)
from mesh.node import taskstate
from mesh.node.commands import ControlState, register
from mesh.node.commands import registry as default_registry
from mesh.node.component import Component
from mesh.node.events import short_repr
from mesh.node.journal import JournalError
from mesh.node.peers import request_id
from mesh.node.view import NodeView
from mesh.ratelimit import parse_rate
from mesh.security.text import safe_logger
from mesh.wire import codec
from mesh.wire.control import (
    MAX_IDS_PER_REVOKE,
    BadArgs,
    DuplicateArgs,
    ForgetArgs,
    ForgetReply,
    PingReply,
    PoolArgs,
    PoolSizeReply,
    RateLimitArgs,
    RateLimitReply,
    RegisteredTask,
    ResultArgs,
    RevokeArgs,
    RevokeReply,
    ShutdownReply,
    TaskInfo,
    TaskStateReply,
    TimeLimitArgs,
    TimeLimitReply,
    parse_args,
    signal_number,
    to_payload,
)
from mesh.wire.protocol import PROTOCOL_VERSION, Control, ControlReply, Submit, decode, encode
from mesh.workflow.builtins import user_tasks

if TYPE_CHECKING:
    from mesh.node.ledger import Entry
    from mesh.node.node import Node

log = safe_logger("mesh.remote")

MAX_REVOKED = 100_000        # revoked ids a node remembers in memory (the journal keeps them too)
FORWARD_CHUNK = 5_000        # ids per forwarded revoke message


class RemoteControl(Component):
    """Answers control commands for one node and keeps what they change."""

    name = "control"
    requires = ("journal",)

    def __init__(self) -> None:
        self.revoked: dict[str, float] = {}      # task id -> when (oldest first)
        self.time_limits: dict[str, tuple[float | None, float | None]] = {}  # name -> (soft, hard)
        self.commands = default_registry.copy()  # mesh's and the app's, as registered now

    async def start(self, node: "Node") -> None:
        self.node = node
        self.view = NodeView(node, "control")
        node.control = self
        self.load_revoked()

    # -- dispatch ---------------------------------------------------------------------
    def kind_of(self, command: str) -> str | None:
        """"inspect" or "control" (the gate's question), None for an unknown command."""
        cmd = self.commands.get(command)
        return cmd.kind if cmd is not None else None

    def handle(self, ident: bytes, msg: Control) -> None:
        node = self.node
        cmd = self.commands.get(msg.command)
        if cmd is None:
            reply = ControlReply(msg.req_id, False, node.name, None,
                                 f"unknown command {msg.command!r} (known: "
                                 f"{', '.join(self.commands.names())})")
        else:
            try:
                req = (msg.args if cmd.request is dict      # takes the map as it came
                       else parse_args(cmd.request, msg.args, msg.command))
                state = ControlState(node if cmd.builtin else self.view, ident)
                payload = to_payload(cmd.handler(state, req))
                reply = ControlReply(msg.req_id, True, node.name, payload)
                frame = encode(reply)          # a reply msgpack cannot carry is an error too
            except BadArgs as e:
                reply = ControlReply(msg.req_id, False, node.name, None, f"{msg.command}: {e}")
            except Exception as e:
                log.exception("control command %s failed", msg.command)
                reply = ControlReply(msg.req_id, False, node.name, None,
                                     f"{type(e).__name__}: {e}"[:1000])
            else:
                if msg.args.get("noreply") is not True:
                    node.front.reply(ident, frame)
                return
        if msg.args.get("noreply") is not True:
            node.front.reply(ident, encode(reply))

    # -- revoke -----------------------------------------------------------------------
    def load_revoked(self) -> None:
        """At start: the revokes the journal remembers."""
        try:
            since = time.time() - self.node.config.result_expires
            for tid, at in self.node.journal.revoked_since(since, MAX_REVOKED):
                self.revoked[tid] = at
        except JournalError as e:
            log.error("journal: could not read revoked ids: %s", e)

    def is_revoked(self, task_id: str) -> bool:
        return task_id in self.revoked

    def revoke(self, req: RevokeArgs) -> RevokeReply:
        """Revoke ids: a queued or scheduled one is dropped (REVOKED result to its
        owner), a running one is killed with ``terminate``, and every id is
        remembered, journalled and forwarded to every peer, so it does not run
        anywhere later either."""
        ids = req.ids
        sig = signal_number(req.signal)
        node, now = self.node, time.time()
        new = [t for t in ids if t not in self.revoked]
        for tid in ids:
            self.revoked.pop(tid, None)
            self.revoked[tid] = now
        while len(self.revoked) > MAX_REVOKED:
            del self.revoked[next(iter(self.revoked))]
        if new:
            try:
                node.journal.revoke(new, now)
            except JournalError as e:
                log.error("journal: revoked ids not stored: %s", e)
        dropped, terminated, running = [], [], []
        for tid in ids:
            entry = node.ledger.held.get(tid)
            if entry is None:
                entry = node.spill.take(tid)      # waiting on disk (mesh/node/spill.py)
                if entry is not None:
                    dropped.append(tid)
                    node.ledger.task_failed(entry, "TaskRevokedError",
                                            revoked_message(tid, entry.name),
                                            task_states.REVOKED)
                continue
            if node.pool.remove(tid) is not None or node.spill.unqueue(tid):
                dropped.append(tid)
                node.ledger.task_failed(entry, "TaskRevokedError",
                                        revoked_message(tid, entry.name), task_states.REVOKED)
            elif node.workflows is not None and node.workflows.revoke(tid):
                dropped.append(tid)          # a group's coordinator: the group ends
            elif entry.started is None and node.pool.skip(tid):
                running.append(tid)          # sent ahead to a child: skipped there, unless
                                             # it has started (mesh/node/pool_ahead.py)
            elif entry.started is not None:
                if req.terminate and node.pool.terminate(tid, sig):
                    terminated.append(tid)
                else:
                    running.append(tid)
        if new and not req.forwarded:
            self.forward(new, req.terminate, req.signal)
        if dropped or terminated:
            log.info("revoked %d task(s): %d dropped before they started, %d terminated",
                     len(ids), len(dropped), len(terminated))
        return RevokeReply(ids, dropped, terminated, running)

    def forward(self, ids: list[str], terminate: bool, sig: Any,
                to: list[str] | None = None) -> None:
        """Tell peers (all alive ones, or ``to``) about revoked ids; no replies."""
        node = self.node
        if to is None:
            to = [m.address for m in node.membership.alive_members(include_self=False)]
        for i in range(0, len(ids), FORWARD_CHUNK):
            frame = encode(Control(request_id("revoke", node.name), "revoke", {
                "task_ids": ids[i:i + FORWARD_CHUNK], "terminate": terminate, "signal": sig,
                "forwarded": True, "noreply": True}))
            for address in to:
                node.transport.send(address, frame)

    def share_with(self, address: str) -> None:
        """A member joined (or came back): tell it what we revoked."""
        if self.revoked:
            self.forward(list(self.revoked), False, "SIGKILL", [address])


# ---- mesh's own commands ----------------------------------------------------------------

def _describe(node: "Node", e: "Entry", started: float | None = None, pid: int | None = None,
              eta: float | None = None) -> TaskInfo:
    args, kwargs, retries = "", None, None
    try:
        msg = decode(e.frame)
        if isinstance(msg, Submit):
            a, kw = codec.load_call(msg.payload)
            args, kwargs, retries = short_repr(tuple(a), 200), short_repr(kw, 200), msg.retries
    except Exception as err:
        args = f"<undecodable: {err}>"
    return TaskInfo(e.task_id, e.name, node.name, e.priority, e.received, args, kwargs, retries,
                    started, pid, eta)


@register("ping", "inspect", builtin=True)
def ping(state: ControlState, req: Any) -> PingReply:
    """The node's name, address, version and events endpoint."""
    n = state.node
    return PingReply(n.name, n.address, __version__, PROTOCOL_VERSION, n.events_endpoint)


@register("active_queues", "inspect", builtin=True)
def active_queues(state: ControlState, req: Any) -> dict[str, Any]:
    """The queues the node takes (--queues; else every queue: the ones its app names)."""
    queues: dict[str, Any] = state.node.routing.active_queues()
    return queues


@register("status", "inspect", builtin=True)
def status(state: ControlState, req: Any) -> dict[str, Any]:
    """Load, counts, resources and registered tasks (a map: new keys may appear)."""
    return dict(state.node.status())


register("stats", "inspect", builtin=True, help="The same as status (Celery's name).")(status)


@register("members", "inspect", builtin=True)
def members(state: ControlState, req: Any) -> list[dict[str, Any]]:
    """Every member this node knows, with its state and load."""
    return list(state.node.members())


@register("result", "inspect", ResultArgs, builtin=True)
def result(state: ControlState, req: ResultArgs) -> TaskStateReply:
    """What this node knows of a task id; with watch, the RESULT when it finishes."""
    answer = taskstate.lookup(state.node, state.sender, req.task_id, req.watch)
    return TaskStateReply(answer["task_id"], answer["state"], answer.get("result"),
                          answer.get("meta"), answer.get("submit"), answer.get("result_size"))


@register("active", "inspect", builtin=True)
def active(state: ControlState, req: Any) -> list[TaskInfo]:
    """Running tasks."""
    node = state.node
    return [_describe(node, e, started=e.started, pid=pid) for e, pid in node.pool.running()]


@register("reserved", "inspect", builtin=True)
def reserved(state: ControlState, req: Any) -> list[TaskInfo]:
    """Accepted tasks waiting for a free child."""
    node = state.node
    pool = node.pool
    return [_describe(node, e) for e in pool.ahead_entries()] + \
        [_describe(node, e) for _, _, e in sorted(pool.queue)]


@register("scheduled", "inspect", builtin=True)
def scheduled(state: ControlState, req: Any) -> list[TaskInfo]:
    """Tasks waiting for their eta (countdown, retries, rate limits)."""
    node = state.node
    return [_describe(node, e, eta=e.eta) for e in
            sorted(node.pool.scheduled.values(), key=lambda e: e.eta or 0.0)]


@register("registered", "inspect", builtin=True)
def registered(state: ControlState, req: Any) -> list[RegisteredTask]:
    """The tasks this node runs, with their limits."""
    node = state.node
    out = []
    for name in user_tasks(node.app.tasks):
        o = node.app.tasks[name].options
        bucket = node.pool.limits.get(name)
        soft, hard = node.control.time_limits.get(name, (o.soft_time_limit, o.time_limit))
        out.append(RegisteredTask(name, bucket.rate if bucket else None, hard, soft,
                                  o.acks_late, o.max_retries))
    return out


@register("revoked", "inspect", builtin=True)
def revoked(state: ControlState, req: Any) -> list[str]:
    """The ids this node remembers as revoked (the newest 10,000)."""
    return list(state.node.control.revoked)[-MAX_IDS_PER_REVOKE:]


@register("revoke", "control", RevokeArgs, builtin=True)
def revoke(state: ControlState, req: RevokeArgs) -> RevokeReply:
    """Revoke task ids everywhere; with terminate, kill the child running one."""
    reply: RevokeReply = state.node.control.revoke(req)
    return reply


@register("rate_limit", "control", RateLimitArgs, builtin=True)
def rate_limit(state: ControlState, req: RateLimitArgs) -> RateLimitReply:
    """A task's rate limit on this node ("10/s", "100/m", a number per second, None)."""
    node = state.node
    if req.task not in node.app.tasks:
        raise BadArgs(f"task {req.task!r} is not registered on node {node.name}")
    try:
        rate = parse_rate(req.rate)
    except Exception as e:
        raise BadArgs(str(e)) from None
    node.limits.set_node_rate(req.task, rate)      # with its mesh-wide share, if any
    log.info("rate limit of %s: %s", req.task, f"{rate:g}/s" if rate else "none")
    return RateLimitReply(req.task, rate)


@register("time_limit", "control", TimeLimitArgs, builtin=True)
def time_limit(state: ControlState, req: TimeLimitArgs) -> TimeLimitReply:
    """A task's soft and hard time limits, for tasks received from now on."""
    node = state.node
    if req.task not in node.app.tasks:
        raise BadArgs(f"task {req.task!r} is not registered on node {node.name}")
    node.control.time_limits[req.task] = (req.soft, req.hard)
    log.info("time limits of %s: soft %s, hard %s (for tasks received from now on)",
             req.task, req.soft, req.hard)
    return TimeLimitReply(req.task, req.soft, req.hard)


def _resize(node: "Node", size: int) -> PoolSizeReply:
    """Resize the pool; with autoscale on, within its range (the autoscaler carries
    on from the new size)."""
    pool = node.pool
    if pool.kind == "solo":
        raise BadArgs("the solo pool runs one task at a time: it cannot grow or shrink")
    scaler = node.autoscaler
    if scaler is not None and scaler.range is not None:
        mx, mn = scaler.range
        size = max(mn, min(mx, size))
        scaler.spare_since = None
    return PoolSizeReply(pool.resize(max(1, size)))


@register("pool_grow", "control", PoolArgs, builtin=True)
def pool_grow(state: ControlState, req: PoolArgs) -> PoolSizeReply:
    """n more workers: children (prefork) or threads (threads pool); with autoscale,
    up to its max."""
    return _resize(state.node, state.node.pool.size + req.n)


@register("pool_shrink", "control", PoolArgs, builtin=True)
def pool_shrink(state: ControlState, req: PoolArgs) -> PoolSizeReply:
    """n fewer workers (idle children at once, busy ones after their task), never below
    one; with autoscale, down to its min."""
    return _resize(state.node, state.node.pool.size - req.n)


@register("shutdown", "control", builtin=True)
def shutdown(state: ControlState, req: Any) -> ShutdownReply:
    """Warm shutdown, as SIGTERM."""
    state.node.stop_soon()
    return ShutdownReply(state.node.name, True)


@register("forget", "control", ForgetArgs, builtin=True)
def forget(state: ControlState, req: ForgetArgs) -> ForgetReply:
    """Drop finished tasks' results (AsyncResult.forget); running ones keep theirs."""
    answer = taskstate.forget(state.node, list(req.task_ids))
    return ForgetReply(answer["forgotten"], answer["running"])


@register("duplicate", "control", DuplicateArgs, builtin=True)
def duplicate(state: ControlState, req: DuplicateArgs) -> None:
    """A client got a second result for a task (its first came from another node, or
    from this one before a restart): say so on the event stream."""
    node = state.node
    node.ledger.counts["duplicates_reported"] += 1
    node.events.emit("task-duplicate", uuid=req.task_id,
                     first_node=req.first_node if isinstance(req.first_node, str) else None)
