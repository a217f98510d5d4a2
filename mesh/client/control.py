"""Control requests to nodes (ping, status, ...), synchronous and self-contained.

Used by meshctl and by tests. Each call opens a DEALER per endpoint, sends one
Control frame to each, and gathers replies until all answered or the timeout.

With keys (``security``, by default from MESH_KEYS as an admin), the DEALERs speak
CurveZMQ; while the mesh key is rotated there is one per endpoint and mesh key, and
the first answer counts. A handshake that fails (a refused key, a node with other
keys or none) is reported as such at once, not as a silent timeout."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from mesh.exceptions import ConfigError, DecodeError, MeshError
from mesh.security.curve import FAILED_AUTH, FAILED_KEY, FAILED_PROTOCOL, Security
from mesh.security.text import safe_logger
from mesh.wire.protocol import Control, ControlReply, Error, decode, encode

log = safe_logger("mesh.client")

_FAILURES = FAILED_AUTH | FAILED_KEY | FAILED_PROTOCOL
# Celery's argument names for the commands its Workers guide broadcasts
# (app.control.broadcast("rate_limit", arguments={"task_name": ..., "rate_limit": ...}))
CELERY_ARGS = {"rate_limit": {"task_name": "task", "rate_limit": "rate"},
               "time_limit": {"task_name": "task"},
               "revoke": {"task_id": "task_ids"}}


class Refusal(str):
    """Why a node turned us down (``"refused: ..."``): its handshake failed on keys (we
    have none, others, or one it does not accept) or it answered with an Error (a
    client key asking what only an admin may). The node is there, unlike a silence
    (``"no answer within ..."``), and the words say what to change."""


class KeyRefusal(Refusal):
    """A Refusal at the handshake (keys): the node would take no message of ours."""


def gather(ctx: zmq.Context[Any], security: Security, endpoints: Iterable[str], frame: bytes,
           req_id: str, timeout: float) -> dict[str, ControlReply | str]:
    """Send one Control ``frame`` to every endpoint and gather the replies whose
    ``req_id`` matches: endpoint -> reply, or why there is none."""
    eps = list(dict.fromkeys(endpoints))
    if security.ring is not None:      # a long-lived caller sees keys added or rotated
        try:
            security.ring.reload()
        except (ConfigError, OSError):
            pass                       # the keys read before stay in use
    out: dict[str, ControlReply | str] = {}
    socks: dict[zmq.Socket[bytes], str] = {}
    mons: dict[zmq.Socket[bytes], tuple[str, zmq.Socket[bytes]]] = {}
    open_per_ep = dict.fromkeys(eps, 0)
    problems: dict[str, str] = {}
    poller = zmq.Poller()
    try:
        for ep in eps:
            for key in security.server_keys():
                s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                security.client(s, key)
                mon = s.get_monitor_socket(_FAILURES, addr=f"inproc://mesh-ctl-{uuid.uuid4().hex}")
                s.connect(ep)
                try:
                    # never a blocking send: a handshake that fails before it (a node
                    # that will not take our keys, on a loaded machine) leaves the socket
                    # no pipe, libzmq does not connect again, and a blocking send waited
                    # for ever (a cluster test's meshctl ping, 30 s); the monitor says why
                    s.send(frame, zmq.NOBLOCK)
                except zmq.Again:
                    pass
                socks[s] = ep
                mons[mon] = (ep, s)
                open_per_ep[ep] += 1
                poller.register(s, zmq.POLLIN)
                poller.register(mon, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while len(out) < len(eps):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for s, _ in poller.poll(int(left * 1000) + 1):
                if s in mons:
                    ep, dealer = mons[s]
                    try:
                        event = parse_monitor_message(s.recv_multipart(zmq.NOBLOCK))["event"]
                    except (zmq.ZMQError, ValueError):
                        continue
                    problem = security.handshake_problem(int(event), ep)
                    if int(event) == FAILED_KEY:   # libzmq tries again (the node may be
                        problems[ep] = problem     # switching keys): so do we, until timeout
                        continue
                    poller.unregister(s)
                    poller.unregister(dealer)
                    open_per_ep[ep] -= 1
                    if open_per_ep[ep] <= 0 and ep not in out:
                        out[ep] = KeyRefusal(f"refused: {problem}")
                    continue
                ep = socks[s]
                try:
                    msg = decode(s.recv_multipart(zmq.NOBLOCK)[-1])
                except (DecodeError, zmq.Again) as e:
                    out.setdefault(ep, f"bad reply: {e}")
                    poller.unregister(s)
                    continue
                if isinstance(msg, ControlReply) and msg.req_id == req_id:
                    out[ep] = msg
                    poller.unregister(s)
                elif isinstance(msg, Error):
                    out[ep] = Refusal(f"refused: {msg.code}: {msg.message}")
                    poller.unregister(s)
        for ep in eps:
            if ep in problems:     # every handshake failed on its mesh key till the end
                out.setdefault(ep, KeyRefusal(f"refused: {problems[ep]}"))
            out.setdefault(ep, f"no answer within {timeout:g} s")
        return out
    finally:
        for s in socks:
            s.disable_monitor()
            s.close(linger=0)
        for mon in mons:
            mon.close(linger=0)


class ControlClient:
    def __init__(self, ctx: zmq.Context[Any] | None = None, security: Security | None = None):
        self._own = ctx is None
        self.ctx: zmq.Context[Any] = ctx or zmq.Context()
        self.security = security if security is not None else Security.from_env()

    def close(self) -> None:
        if self._own:
            self.ctx.term()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def broadcast(self, endpoints: Iterable[str], command: str, args: dict[str, Any] | None = None,
                  timeout: float = 2.0, req_id: str | None = None) -> dict[str, ControlReply | str]:
        """Send ``command`` to every endpoint; return endpoint -> reply, or an error
        text for nodes that did not answer or answered garbage. ``req_id``: the
        request id to send (default: a fresh one)."""
        req_id = req_id or uuid.uuid4().hex
        frame = encode(Control(req_id, command, args or {}))
        return gather(self.ctx, self.security, endpoints, frame, req_id, timeout)

    def send(self, endpoints: Iterable[str], command: str, args: dict[str, Any]) -> None:
        """Send ``command`` to every endpoint and wait for no answer (``noreply``).
        Each socket lingers up to a second so the frame leaves before it closes."""
        frame = encode(Control(uuid.uuid4().hex, command, args))
        for ep in dict.fromkeys(endpoints):
            for key in self.security.server_keys():
                s = self.ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 1000)
                self.security.client(s, key)
                s.connect(ep)
                try:
                    s.send(frame, zmq.NOBLOCK)     # (never blocking: see gather)
                except zmq.Again:
                    log.warning("control %s not sent to %s: its handshake failed (keys?)",
                                command, ep)
                s.close()


NO_SUCH_NODE = "no such node"    # the start of the error for a destination no member has


def alive_endpoints(cc: ControlClient, seeds: Iterable[str], timeout: float = 2.0,
                    destination: Iterable[str] | None = None,
                    members: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """Every alive node's endpoint, from the first seed that answers ``members``.
    The seeds themselves when none knows members (a lone node answers for itself).
    With ``destination``, only the endpoints of the nodes it names (none if none of
    them is alive): a command for one node must not reach the others. ``members``
    (optional, filled in): every member the seeds know, ``{node: (endpoint, state)}``."""
    seeds = list(dict.fromkeys(seeds))
    known = _members(cc, seeds, timeout)
    if members is not None:
        members.update(known)
    found = {node: ep for node, (ep, state) in known.items() if state == "alive"}
    if destination is not None:
        want = set(destination)
        return [ep for node, ep in found.items() if node in want]
    return list(found.values()) or seeds


def _members(cc: ControlClient, seeds: list[str], timeout: float) -> dict[str, tuple[str, str]]:
    """``{node: (endpoint, state)}`` of the members the seeds name (alive where any
    seed sees it alive), and of the seeds that answered (alive)."""
    replies = cc.broadcast(seeds, "members", timeout=timeout)
    found: dict[str, tuple[str, str]] = {}
    for ep, reply in replies.items():
        if not isinstance(reply, ControlReply) or not reply.ok or not isinstance(reply.payload, list):
            continue
        for m in reply.payload:
            if (isinstance(m, dict) and isinstance(m.get("node"), str)
                    and isinstance(m.get("endpoint"), str)):
                state = str(m.get("state", "?"))
                old = found.get(m["node"])
                if old is None or (state == "alive" and old[1] != "alive"):
                    found[m["node"]] = (m["endpoint"], state)
        if found.get(reply.node, ("", ""))[1] != "alive":
            found[reply.node] = (ep, "alive")
    return found


def no_such_node(name: str, members: dict[str, tuple[str, str]]) -> str:
    """The error for a destination that names no member: the names there are."""
    names = ", ".join(n if state == "alive" else f"{n} ({state})"
                      for n, (_, state) in sorted(members.items()))
    return (f"{NO_SUCH_NODE} named {name!r}; the mesh's nodes: {names}" if names else
            f"{NO_SUCH_NODE} named {name!r}, and no node answered to say which there are")


class Controller:
    """``app.control``: remote control of every node, with Celery's names.

    Each call asks every alive node (found from the app's seeds) and returns
    ``{node name: answer}``; a node that did not answer, or refused, maps to
    ``{"error": "..."}``. ``destination`` limits a call to the named nodes."""

    def __init__(self, seeds: Callable[[], list[str]], timeout: float = 2.0,
                 security: Security | None = None):
        self._seeds = seeds
        self.timeout = timeout
        self.security = security

    def broadcast(self, command: str, args: Any = None,
                  destination: Iterable[str] | None = None,
                  timeout: float | None = None, *, arguments: Any = None,
                  reply: bool = True) -> Any:
        """Send ``command`` with ``arguments`` (or ``args``: a dict, or a request
        dataclass from mesh.wire.control) to every alive node, or the ones named in
        ``destination``. Returns ``{node: reply}`` (``{"error": ...}`` for a node that
        refused or did not answer); with ``reply=False``, sends and returns None."""
        if arguments is not None:
            args = arguments
        if args is not None and not isinstance(args, dict):
            from mesh.wire.control import to_args
            args = to_args(args)
        names = CELERY_ARGS.get(command)
        if names and args:
            args = {names.get(k, k): v for k, v in args.items()}
        if reply:
            return self.ask(command, args, destination, timeout)
        timeout = self.timeout if timeout is None else timeout
        with ControlClient(security=self.security) as cc:
            eps = alive_endpoints(cc, self._seeds(), timeout, destination)
            cc.send(eps, command, {**(args or {}), "noreply": True})
        return None

    def ask(self, command: str, args: dict[str, Any] | None = None,
            destination: Iterable[str] | None = None,
            timeout: float | None = None) -> dict[str, Any]:
        """``broadcast`` with replies: ``{node: reply}``."""
        timeout = self.timeout if timeout is None else timeout
        want = set(destination) if destination is not None else None
        out: dict[str, Any] = {}
        with ControlClient(security=self.security) as cc:
            # only the named nodes are sent it: filtering the replies instead, a
            # `meshctl control shutdown --node a` stopped every node of the mesh
            members: dict[str, tuple[str, str]] = {}
            eps = alive_endpoints(cc, self._seeds(), timeout, want, members)
            for ep, reply in cc.broadcast(eps, command, args, timeout=timeout).items():
                if isinstance(reply, ControlReply):
                    if want is not None and reply.node not in want:
                        continue
                    out[reply.node] = reply.payload if reply.ok else {"error": reply.error}
                elif want is None:
                    out[ep] = {"error": reply}
        if want is not None:
            for name in sorted(want - set(out)):
                state = members[name][1] if name in members else None
                out[name] = {"error": no_such_node(name, members) if state is None else
                             f"it did not answer (the mesh sees it {state})"}
        return out

    def inspect(self, destination: Iterable[str] | None = None,
                timeout: float | None = None) -> "Inspect":
        return Inspect(self, destination, timeout)

    def ping(self, destination: Iterable[str] | None = None, timeout: float = 1.0,
             **kwargs: Any) -> list[dict[str, Any]]:
        """Celery's ``control.ping``: ``[{node: {"ok": "pong"}}, ...]``, one item per
        node that answered within ``timeout`` seconds (``[]`` when none did). Each
        node's name, address and version: ``ask("ping")``."""
        return [{node: reply} for node, reply in self.pongs(destination, timeout).items()]

    def pongs(self, destination: Iterable[str] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
        """``{node: {"ok": "pong"}}`` for the nodes that answered ``ping`` (Celery's
        ``inspect().ping()`` shape); the ones that did not are left out."""
        return {node: PONG for node, reply in self.ask("ping", destination=destination,
                                                       timeout=timeout).items()
                if not is_error(reply)}

    def revoke(self, task_id: str | Iterable[str], destination: Iterable[str] | None = None,
               terminate: bool = False, signal: str = "SIGKILL", reply: bool = True,
               timeout: float | None = None) -> Any:
        """Revoke tasks everywhere: not started ones never run (on any node, now or
        later); with ``terminate``, a running one is killed (its child is replaced),
        by SIGKILL unless ``signal`` says (Celery's default is SIGTERM). Celery's order
        of arguments; ``destination`` only chooses who answers: every node learns a
        revoke from the others."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        return self.broadcast("revoke", {"task_ids": ids, "terminate": terminate,
                                         "signal": signal}, destination, timeout, reply=reply)

    def terminate(self, task_id: str | Iterable[str], destination: Iterable[str] | None = None,
                  signal: str = "SIGKILL", **kwargs: Any) -> Any:
        """Celery's: ``revoke(task_id, terminate=True, signal=signal)`` (SIGKILL unless
        ``signal`` says, as mesh's revoke; Celery's default is SIGTERM)."""
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal,
                           **kwargs)

    def forget(self, task_id: str | Iterable[str]) -> dict[str, Any]:
        """Drop finished tasks' results on every node (``AsyncResult.forget``)."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        return self.ask("forget", {"task_ids": ids})

    def rate_limit(self, task_name: str, rate: str | float | None,
                   destination: Iterable[str] | None = None, reply: bool = True,
                   timeout: float | None = None) -> Any:
        """Per node, as in Celery: "100/m", "10/s", a number per second, or None.
        ``reply``/``timeout`` as Celery's (``reply=False``: send, return None); so for
        the commands below."""
        return self.broadcast("rate_limit", {"task": task_name, "rate": rate}, destination,
                              timeout, reply=reply)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: Iterable[str] | None = None, reply: bool = True,
                   timeout: float | None = None) -> Any:
        """New limits for tasks received from now on."""
        return self.broadcast("time_limit", {"task": task_name, "soft": soft, "hard": hard},
                              destination, timeout, reply=reply)

    def pool_grow(self, n: int = 1, destination: Iterable[str] | None = None,
                  reply: bool = True, timeout: float | None = None) -> Any:
        return self.broadcast("pool_grow", {"n": n}, destination, timeout, reply=reply)

    def pool_shrink(self, n: int = 1, destination: Iterable[str] | None = None,
                    reply: bool = True, timeout: float | None = None) -> Any:
        return self.broadcast("pool_shrink", {"n": n}, destination, timeout, reply=reply)

    def autoscale(self, max: int, min: int = 1, destination: Iterable[str] | None = None,
                  reply: bool = True, timeout: float | None = None) -> Any:
        """Autoscale the pools between ``min`` and ``max`` workers (Celery's name)."""
        return self.broadcast("autoscale", {"max": max, "min": min}, destination, timeout,
                              reply=reply)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str = "direct", routing_key: str | None = None,
                     options: dict[str, Any] | None = None,
                     destination: Iterable[str] | None = None, reply: bool = True,
                     timeout: float | None = None, **kwargs: Any) -> Any:
        """Celery's: the nodes take tasks routed to ``queue`` from now on, until they
        restart; ``{node: {"ok": "add consumer QUEUE"}}``. ``exchange``,
        ``exchange_type``, ``routing_key`` and ``options`` are broker words, not used."""
        return self.broadcast("add_consumer", {"queue": queue}, destination, timeout,
                              reply=reply)

    def cancel_consumer(self, queue: str, destination: Iterable[str] | None = None,
                        reply: bool = True, timeout: float | None = None,
                        **kwargs: Any) -> Any:
        """Celery's: the nodes take no more tasks routed to ``queue`` (until they
        restart; tasks they hold still run); ``{node: {"ok": "no longer consuming from
        QUEUE"}}``."""
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, timeout,
                              reply=reply)

    def enable_events(self, destination: Iterable[str] | None = None, reply: bool = True,
                      timeout: float | None = None, **kwargs: Any) -> Any:
        """Celery's: the nodes send task events (``task-*``) again, until they restart;
        a node started with --no-events starts publishing. ``{node: {"ok": "task
        events enabled"}}`` (or ``"task events already enabled"``)."""
        return self.broadcast("enable_events", {}, destination, timeout, reply=reply)

    def disable_events(self, destination: Iterable[str] | None = None, reply: bool = True,
                       timeout: float | None = None, **kwargs: Any) -> Any:
        """Celery's: the nodes send no task events to subscribers (``meshctl events``,
        monitors) until ``enable_events`` or a restart; node events go on."""
        return self.broadcast("disable_events", {}, destination, timeout, reply=reply)

    def purge(self, connection: Any = None, queues: Iterable[str] | None = None,
              exclude: Iterable[str] | None = None) -> int:
        """Revoke every task waiting in a node's queue that has not started, on every
        alive node (Celery's purge: its waits end in ``TaskRevokedError``); only those
        routed to ``queues``, less ``exclude``. Returns how many, those waiting on
        disk included (purged just after the reply: mesh/node/purge.py; with
        ``queues`` or ``exclude`` every task on disk is counted, as it is looked at
        after the reply: the node logs how many it purged). Running,
        scheduled (eta, countdown, retry) and sent-ahead tasks are not purged.
        ``connection`` is Celery's and not used. A node that refused or did not answer
        is an error, after the others have purged."""
        args: dict[str, Any] = {}
        if queues is not None:
            args["queues"] = [queues] if isinstance(queues, str) else list(queues)
        if exclude is not None:
            args["exclude"] = [exclude] if isinstance(exclude, str) else list(exclude)
        answers = self.ask("purge", args)
        total = sum(int(a.get("purged", 0)) + int(a.get("on_disk", 0))
                    for a in answers.values() if isinstance(a, dict) and "error" not in a)
        failed = {n: a["error"] for n, a in answers.items() if isinstance(a, dict) and "error" in a}
        if failed:
            raise MeshError(f"purge: {total} task(s) purged, but not on every node: " +
                            "; ".join(f"{n}: {e}" for n, e in sorted(failed.items())))
        return total

    discard_all = purge             # Celery's old name

    def shutdown(self, destination: Iterable[str] | None = None, reply: bool = True,
                 timeout: float | None = None) -> Any:
        """Warm shutdown of the nodes (as SIGTERM)."""
        return self.broadcast("shutdown", None, destination, timeout, reply=reply)


class Inspect:
    """``app.control.inspect()``: what the nodes hold, by node name."""

    def __init__(self, control: Controller, destination: Iterable[str] | None,
                 timeout: float | None):
        self._c, self._dest, self._timeout = control, destination, timeout

    def _ask(self, command: str) -> dict[str, Any]:
        return self._c.ask(command, destination=self._dest, timeout=self._timeout)

    def _tasks(self, command: str) -> dict[str, Any]:
        return {node: [celery_info(t) for t in a] if isinstance(a, list) else a
                for node, a in self._ask(command).items()}

    def active(self, safe: bool | None = None) -> dict[str, Any]:
        """Running tasks: id, name, args, kwargs (as reprs), started, pid, node, and
        Celery's keys for the same (hostname, time_start, worker_pid, type...)."""
        return self._tasks("active")

    def reserved(self, safe: bool | None = None) -> dict[str, Any]:
        """Accepted, waiting for a free child (the same keys as ``active``)."""
        return self._tasks("reserved")

    def scheduled(self, safe: bool | None = None) -> dict[str, Any]:
        """Waiting for their eta (countdown, retries, rate limits): each task's keys
        and ``eta`` (a Unix time), and Celery's ``request`` (the task, as ``active``)."""
        return {node: [{**t, "request": t} for t in tasks] if isinstance(tasks, list) else tasks
                for node, tasks in self._tasks("scheduled").items()}

    def query_task(self, *ids: str | Iterable[str]) -> dict[str, Any]:
        """Celery's: ``{node: {task_id: [kind, info]}}`` for the given ids each node
        holds unfinished: ``"active"`` (running) or ``"reserved"`` (waiting for a child,
        or for its eta, which Celery's worker holds as reserved too); ``info`` as
        ``active()`` gives it. A node holding none of them answers ``{}``; a finished
        task is in no node's list (``AsyncResult(id)`` says how it ended)."""
        wanted = {i for x in ids for i in ([x] if isinstance(x, str) else x)}
        out: dict[str, Any] = {}
        for kind, command in (("active", "active"), ("reserved", "reserved"),
                              ("reserved", "scheduled")):
            for node, tasks in self._tasks(command).items():
                found = out.setdefault(node, {} if isinstance(tasks, list) else tasks)
                if not isinstance(tasks, list) or is_error(found):
                    continue
                for t in tasks:
                    if isinstance(t, dict) and t.get("id") in wanted and t["id"] not in found:
                        found[t["id"]] = [kind, t]
        return out

    def registered(self, *taskinfoitems: str) -> dict[str, Any]:
        """``{node: [task name, ...]}``, sorted, as Celery's; with ``taskinfoitems``
        (``"rate_limit"``, ``"time_limit"``, ``"soft_time_limit"``, ``"acks_late"``,
        ``"max_retries"``) each task that has one is ``"name [rate_limit=0.5 ...]"``
        (rates per second). Each task's limits as maps: ``registered_tasks()``."""
        return {node: [_task_line(t, taskinfoitems) for t in a] if isinstance(a, list) else a
                for node, a in self._ask("registered").items()}

    def registered_tasks(self) -> dict[str, Any]:
        """``{node: [{"name", "rate_limit", "time_limit", ...}, ...]}``: mesh's own
        answer, each task's options as a map (``meshctl --json inspect registered``)."""
        return self._ask("registered")

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def revoked(self) -> dict[str, Any]:
        return self._ask("revoked")

    def ping(self) -> dict[str, Any] | None:
        """``{node: {"ok": "pong"}}`` for each node that answered; None when none did
        (as Celery's)."""
        return self._c.pongs(self._dest, self._timeout) or None

    def active_queues(self) -> dict[str, Any]:
        """``{node: [queue, ...]}``: the queues each node takes, each as Celery's
        ``Queue.as_dict`` (name, exchange, routing_key, ...). A node started without
        --queues takes every queue: it lists the ones its app names, less those it
        was told not to take (-X, cancel_consumer)."""
        return {node: queue_dicts(a) if not is_error(a) else a
                for node, a in self._ask("active_queues").items()}


PONG = {"ok": "pong"}


def celery_info(t: Any) -> Any:
    """A task of ``active``/``reserved``/``scheduled`` with Celery's keys added (its
    ``Request.info``): ``hostname``, ``time_start``, ``worker_pid``, ``type``,
    ``acknowledged``, ``delivery_info``. mesh's keys stay (``args`` and ``kwargs`` are
    reprs, as Celery's ``safe`` answer)."""
    if not isinstance(t, dict):
        return t
    return {**t, "hostname": t.get("node"), "time_start": t.get("started"),
            "worker_pid": t.get("pid"), "type": t.get("name"), "acknowledged": True,
            "delivery_info": {"priority": t.get("priority"), "redelivered": False}}


def _task_line(t: Any, items: tuple[str, ...]) -> Any:
    """A registered task as Celery lists it: its name, then the asked-for options it has."""
    if not isinstance(t, dict):
        return t
    info = " ".join(f"{k}={t[k]}" for k in items if t.get(k) is not None)
    return f"{t.get('name')} [{info}]" if info else t.get("name")


def is_error(answer: Any) -> bool:
    """Whether a node's answer (from ``Controller.ask``) says it did not answer."""
    return isinstance(answer, dict) and set(answer) == {"error"}


def queue_dicts(answer: Any) -> list[dict[str, Any]]:
    """A node's ``active_queues`` answer as Celery's list of queue dicts (kombu's
    ``Queue.as_dict(recurse=True)`` keys: mesh has no exchanges, each queue is shown
    bound to a direct exchange of its name, as Celery declares a default queue)."""
    names = answer.get("queues") if isinstance(answer, dict) else None
    return [{"name": q, "exchange": {"name": q, "type": "direct", "arguments": None,
                                      "durable": True, "passive": False, "auto_delete": False,
                                      "delivery_mode": None, "no_declare": False},
             "routing_key": q, "queue_arguments": None, "binding_arguments": None,
             "consumer_arguments": None, "durable": True, "exclusive": False,
             "auto_delete": False, "no_ack": False, "alias": None, "bindings": [],
             "no_declare": None, "expires": None, "message_ttl": None, "max_length": None,
             "max_length_bytes": None, "max_priority": None}
            for q in (names if isinstance(names, list) else []) if isinstance(q, str)]
