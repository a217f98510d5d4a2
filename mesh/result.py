"""AsyncResult: the handle a caller holds for a task, sync and async.

A result completes when its ``Result`` message reaches this process's client. The
remote exception is rebuilt with its own type when that type's module is already
imported here (a task's module usually is, since the caller imported the task);
otherwise it becomes :class:`~mesh.exceptions.TaskError`. Rebuilding never imports
a module named by the network.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.exceptions import (
    MeshError,
    RemoteTraceback,
    ResultIgnored,
    TaskError,
    TimeoutError,
    UnreachableError,
)
from mesh.security.text import safe_logger
from mesh.slot import Slot, retry_meta, trim_retry
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, decode

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.workflow.results import GroupResult, ResultSet


LOOKUP_TIMEOUT = 1.0   # s that AsyncResult.state waits for the nodes' answers
UNHELD_LOG_AFTER = 30.0  # s a get() without a timeout waits before it says no node holds the
                         # task (then again after twice as long, up to UNHELD_LOG_MAX)
UNHELD_LOG_MAX = 600.0

log = safe_logger("mesh.result")


def _retry_cause(meta: bytes) -> tuple[BaseException | None, str | None]:
    try:
        d = codec.loads(meta)
    except Exception:
        return None, None
    if not isinstance(d, dict) or not isinstance(d.get("exc"), dict):
        return None, None
    tb = d.get("traceback") if isinstance(d.get("traceback"), str) else None
    return rebuild_exception(d["exc"], tb), tb


def _meta_value(state: str, meta: bytes | None) -> Any:
    """What ``AsyncResult.result`` gives for a task not finished, from its meta."""
    if meta is None:
        return None
    if state == states.RETRY:
        return _retry_cause(meta)[0]
    return codec.loads(meta)


def rebuild_exception(exc: dict[str, Any] | None, tb: str | None) -> BaseException:
    """The remote exception as a local one (see module docstring)."""
    exc = exc or {}
    module, qual = str(exc.get("module") or ""), str(exc.get("type") or "Exception")
    message = str(exc.get("message") or "")
    err: BaseException | None = None
    cls: Any = sys.modules.get(module)
    for part in qual.split("."):
        cls = getattr(cls, part, None) if cls is not None else None
    # only Exception subclasses: a rebuilt SystemExit or KeyboardInterrupt would stop
    # the caller's process instead of reporting the task's failure
    if isinstance(cls, type) and issubclass(cls, Exception):
        args: Any = None
        if exc.get("args") is not None:
            try:
                args = codec.loads(exc["args"])
            except Exception:
                args = None
        try:
            err = cls(*args) if isinstance(args, list) else cls(message)
        except Exception:
            err = None
    if err is None:
        name = f"{module}.{qual}" if module and module != "builtins" else qual
        err = TaskError(message, type_name=name, remote_traceback=tb)
    if tb:
        err.__cause__ = RemoteTraceback(tb)
        try:
            err.remote_traceback = tb  # type: ignore[attr-defined]
        except Exception:
            pass
    return err


class AsyncResult:
    """The state and result of one task, by id."""

    __slots__ = ("id", "app", "_slot", "parent", "_children")

    def __init__(self, task_id: str, app: "Mesh | None" = None, slot: Slot | None = None):
        if app is None and slot is None:     # AsyncResult(id) in a web view: the current
            from mesh.shared import current_app  # app asks the nodes, as Celery's does
            app = current_app()
        self.id = task_id
        self.app = app
        self.parent: Any = None     # the previous step of a chain (Celery's ``parent``)
        self._children: list[Any] | None = None  # the steps it started (known here)
        if slot is None and app is not None:
            slot = app._lookup_slot(task_id)
        self._slot = slot       # None until needed for a task this process did not submit

    @property
    def task_id(self) -> str:
        """The task's id (Celery's ``task_id``, the same as ``id``)."""
        return self.id

    def __eq__(self, other: object) -> bool:
        """Equal to a result of the same id, or to the id itself, as in Celery."""
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        """The id, as Celery's (``str(r)``, ``f"/status/{r}"``): asks no node."""
        return str(self.id)

    def __repr__(self) -> str:
        try:
            state = self.state
        except UnreachableError:
            state = "(no node reachable)"
        return f"<AsyncResult {self.id} {state}>"

    # -- state ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The task's state. For a task submitted by another process, the nodes are
        asked (up to LOOKUP_TIMEOUT, longer while none has answered); an id that the
        nodes asked do not know is UNKNOWN. Raises UnreachableError when no node
        answered (none could be reached)."""
        slot = self._slot
        if slot is None or (slot.remote and slot.msg is None):
            if self.app is None:
                return states.UNKNOWN
            slot = self._require_slot()
            client = self.app.client
            if not client.query(slot, wait=LOOKUP_TIMEOUT) and slot.msg is None:
                raise UnreachableError(f"cannot look task {self.id} up: no mesh node could be "
                                       f"reached (tried {', '.join(client.endpoints())})")
        return slot.state

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value when successful, the exception when failed; before that,
        the meta of the state the task reported (``update_state``: ``r.info`` of a
        PROGRESS), else None. (``info`` is the same, as in Celery.)"""
        self.state  # noqa: B018  (a task submitted elsewhere: look it up)
        slot = self._slot
        if slot is None:
            return None
        msg = slot.msg
        if msg is None:
            with Slot.lock:
                state, meta = slot.state, slot.meta
            return _meta_value(state, meta)     # (a RETRY's: the exception it retries for)
        return self._value(msg, propagate=False)

    info = result

    # -- result_extended: what the task was, when it finished, where it ran -------------
    def _submit(self) -> Submit | None:
        self.state  # noqa: B018  (a lookup brings the Submit of a task sent elsewhere)
        slot = self._slot
        frame = (slot.frame or slot.submit) if slot is not None else None
        if frame is None:
            return None
        try:
            msg = decode(frame)
        except MeshError:
            return None
        return msg if isinstance(msg, Submit) else None

    @property
    def name(self) -> str | None:
        """The task's name, once known here (sent from here, or looked up)."""
        msg = self._submit()
        return msg.name if msg is not None else None

    @property
    def args(self) -> list[Any] | None:
        msg = self._submit()
        return codec.load_call(msg.payload)[0] if msg is not None else None

    @property
    def kwargs(self) -> dict[str, Any] | None:
        msg = self._submit()
        return codec.load_call(msg.payload)[1] if msg is not None else None

    @property
    def retries(self) -> int | None:
        """How many times the task was retried (once it finished)."""
        self.state  # noqa: B018
        msg = self._slot.msg if self._slot else None
        return msg.retries if msg is not None else None

    @property
    def date_done(self) -> datetime.datetime | None:
        """When the task finished (an aware UTC datetime), once it has."""
        self.state  # noqa: B018
        msg = self._slot.msg if self._slot else None
        if msg is None or msg.date_done is None:
            return None
        return datetime.datetime.fromtimestamp(msg.date_done, datetime.UTC)

    @property
    def children(self) -> list[Any] | None:
        """Celery's: the results this task started. Once it succeeded, Celery's shape:
        its ``link`` callbacks (one: its result; two or more: a GroupResult of them, each
        group among them its own GroupResult first, as Celery's worker applies them),
        then the workflow's next step. Their ids derive from the task's: found in any
        process. Before that, the next step where the workflow was sent (Celery has
        none until the task is done); None when there are none."""
        kids = list(self._children or ())
        if self._slot is not None or self.app is not None:
            known = {getattr(k, "id", None): k for k in kids}   # (those made here first)
            started = [known.get(k.id, k) for k in self._started()]
            ids = {k.id for k in started}
            kids = [*started, *(k for k in kids if getattr(k, "id", None) not in ids)]
        return kids or None

    @children.setter
    def children(self, value: list[Any] | None) -> None:
        self._children = value

    def _started(self) -> list[Any]:
        """What this task started once it succeeded (a node starts its callbacks then,
        ``derive(id, "link<j>")``, and the next unit: mesh/node/workflows.py), from its
        Submit's workflow header."""
        if self.state != states.SUCCESS:
            return []
        msg = self._submit()
        wf = msg.headers.get("wf") if msg is not None else None
        if not isinstance(wf, dict):
            return []
        from mesh.workflow.describe import describe
        from mesh.workflow.ids import derive
        from mesh.workflow.plan import Wf, kind, uid
        from mesh.workflow.results import GroupResult, handle
        try:
            w = Wf.of(wf)
            links = [handle(self.app, describe(d, derive(self.id, f"link{j}"), stubs=False))
                     for j, d in enumerate(w.cb.get("link") or ())]
            nxt = [handle(self.app, describe(w.next[0], uid(w.next[0]), stubs=False))] \
                if w.next else []
            grouped = [kind(d) == "group" for d in w.cb.get("link") or ()]
        except Exception:
            return []
        if len(links) > 1:       # Celery: each group applied alone, the rest as one group
            rest = [h for h, g in zip(links, grouped) if not g]
            links = [h for h, g in zip(links, grouped) if g]
            if rest:
                links.append(GroupResult(derive(self.id, "links"), rest, self.app))
        return [*links, *nxt]

    @property
    def worker(self) -> str | None:
        """The node that ran it (Celery's ``worker``), once it finished."""
        self.state  # noqa: B018
        return self.node

    def forget(self) -> None:
        """Drop the task's result from every node that keeps it (Celery's forget);
        afterwards its state is UNKNOWN everywhere. A task still running keeps its
        result when it finishes: forget raises MeshError then."""
        if self.app is None:
            raise MeshError("this AsyncResult has no app to forget through")
        replies = self.app.control.forget(self.id)
        running = [n for n, r in replies.items() if isinstance(r, dict) and self.id in r.get("running", ())]
        if running:
            raise MeshError(f"task {self.id} is still running on {', '.join(sorted(running))}: "
                            "forget it once it has finished")
        self._slot = None

    @property
    def traceback(self) -> str | None:
        self.state  # noqa: B018  (looks the task up when submitted elsewhere)
        slot = self._slot
        msg = slot.msg if slot else None
        if msg is None and slot is not None and slot.state == states.RETRY and slot.meta:
            return _retry_cause(slot.meta)[1]    # the retry's cause's traceback
        return msg.traceback if msg else None

    @property
    def node(self) -> str | None:
        """The node that ran the task, once known."""
        msg = self._slot.msg if self._slot else None
        return msg.node if msg else None

    def revoke(self, connection: Any = None, terminate: bool = False, signal: str | None = None,
               wait: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Revoke this task on every node (see ``app.control.revoke``), with Celery's
        arguments: ``connection`` is not used (no broker), and the nodes' answers are
        always waited for (``wait``), up to ``timeout`` s."""
        if self.app is None:
            raise MeshError("this AsyncResult has no app to revoke through")
        control = self.app.control
        if timeout is None:
            result: dict[str, Any] = control.revoke(self.id, terminate=terminate,
                                                    signal=signal or "SIGKILL")
        else:
            result = control.ask("revoke", {"task_ids": [self.id], "terminate": terminate,
                                            "signal": signal or "SIGKILL"}, timeout=timeout)
        return result

    # -- waiting ----------------------------------------------------------------------
    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5, no_ack: bool = True, follow_parents: bool = True,
            callback: Callable[[str, Any], Any] | None = None,
            on_message: Callable[[dict[str, Any]], Any] | None = None,
            on_interval: Callable[[], Any] | None = None,
            disable_sync_subtasks: bool = True) -> Any:
        """Wait for the task; return its value or raise its exception (``propagate``).
        Raises :class:`mesh.exceptions.TimeoutError` after ``timeout`` seconds.
        ``no_ack``, ``follow_parents`` and ``disable_sync_subtasks`` are Celery's and
        taken so its calls move over: a node pushes the result (nothing is acked), and
        a chain's earlier steps fail the chain themselves. As in Celery, ``on_message``
        is called with each state the task reaches (``update_state``'s PROGRESS, then
        the final one) as Celery's message (``status``, ``result``, ``traceback``,
        ``task_id``, ``date_done``, ``children``), ``on_interval`` every ``interval``
        seconds of the wait, and ``callback(task_id, value)`` once it ends."""
        if on_message is not None or on_interval is not None:
            self._watch(timeout, interval, on_message, on_interval)
        value = self._get(timeout, propagate)
        if callback is not None:
            callback(self.id, value)
        return value

    def _watch(self, timeout: float | None, interval: float,
               on_message: Callable[[dict[str, Any]], Any] | None,
               on_interval: Callable[[], Any] | None) -> None:
        """Wait in steps of ``interval`` until the task ends or ``timeout``, telling
        ``on_message`` of each state not told yet (the final one too) and calling
        ``on_interval`` after each step. A task sent from this process has its states
        pushed to it; one sent elsewhere is looked up at each step."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        # every (state, meta) told: a lookup of a task sent elsewhere may answer an older
        # state after a newer one (PROGRESS, STARTED, PROGRESS): each is told once
        told: set[tuple[str, bytes | None]] = set()
        step = max(interval, 0.01)
        while True:
            self.state    # noqa: B018  (looks the task up when submitted elsewhere)
            slot = self._require_slot()
            with Slot.lock:   # state and meta as one pair (read apart, a PROGRESS was told
                state, meta, done = slot.state, slot.meta, slot.msg is not None   # twice)
            seen = (state, meta)
            if on_message is not None and seen not in told:
                told.add(seen)
                result = self.result if done else _meta_value(state, meta)
                on_message({"task_id": self.id, "status": state, "result": result,
                            "traceback": self.traceback if done else None,
                            "date_done": self.date_done if done else None, "children": []})
            if done:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return                     # _get raises the TimeoutError, saying why
            woken = threading.Lock()
            woken.acquire()
            if slot.add_waiter(woken.release):
                woken.acquire(timeout=step if left is None else min(step, left))
                slot.remove_waiter(woken.release)
            if on_interval is not None:
                on_interval()

    def _get(self, timeout: float | None, propagate: bool) -> Any:
        slot = self._require_slot()
        if slot.msg is None:
            if timeout is None and self.app is not None:
                timeout = self.app.config.result_timeout
            # a held lock that completion releases: lighter than an Event (a Condition
            # and a lock per wait) on both sides of a handoff made once per get()
            done = threading.Lock()
            done.acquire()
            if slot.add_waiter(done.release):
                if slot.remote and self.app is not None:    # ask now; the client asks again
                    self.app.client.query(slot, wait=None)  # while we wait
                # as Celery: wait for ever, but not silently; so too for a timeout past
                # what a lock waits (inf: OverflowError at once, the task said PENDING)
                if timeout is None or timeout >= threading.TIMEOUT_MAX:
                    waited, step = 0.0, UNHELD_LOG_AFTER
                    while not done.acquire(timeout=step):
                        waited += step
                        self._say_if_unheld(slot, waited)
                        step = min(step * 2, UNHELD_LOG_MAX)
                elif not done.acquire(timeout=max(timeout, 0.0)):
                    slot.remove_waiter(done.release)
                    if slot.msg is None:
                        why = self._why_unheld(slot)
                        raise TimeoutError(f"task {self.id} did not finish within {timeout} s "
                                           f"(state {slot.state}{'; ' + why if why else ''})")
        assert slot.msg is not None
        return self._value(slot.msg, propagate)

    wait = get

    def __await__(self) -> Generator[Any, None, Any]:
        return self._aget().__await__()

    async def _aget(self, propagate: bool = True) -> Any:
        slot = self._require_slot()
        if slot.msg is None:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()

            def settle() -> None:
                if not fut.done():
                    fut.set_result(None)

            def wake() -> None:
                loop.call_soon_threadsafe(settle)

            if slot.add_waiter(wake):
                if slot.remote and self.app is not None:
                    self.app.client.query(slot, wait=None)
                try:
                    waited, step = 0.0, UNHELD_LOG_AFTER
                    while True:
                        done, _ = await asyncio.wait({fut}, timeout=step)
                        if done:
                            break
                        waited += step
                        self._say_if_unheld(slot, waited)
                        step = min(step * 2, UNHELD_LOG_MAX)
                finally:
                    slot.remove_waiter(wake)
        assert slot.msg is not None
        return self._value(slot.msg, propagate)

    def _say_if_unheld(self, slot: Slot, waited: float) -> None:
        """A caller has waited ``waited`` seconds: say so if no node holds the task
        (nothing is going to finish it unless a node comes back or takes it)."""
        why = self._why_unheld(slot)
        if why:
            log.warning("still waiting for task %s after %.0f s: %s", self.id, waited, why)

    def _why_unheld(self, slot: Slot) -> str:
        """Why nothing is finishing the task, if that is so ("" otherwise)."""
        if slot.msg is not None or self.app is None:
            return ""
        client = self.app.client
        eps = ", ".join(client.endpoints())
        if client.unreachable:
            return f"no mesh node could be reached (tried {eps})"
        if slot.remote and slot.state == states.UNKNOWN:
            return f"no node holds it (nodes asked: {eps})"
        if not slot.remote and slot.state == states.PENDING:
            return f"no node has acknowledged it (nodes tried: {eps})"
        return self._why_rate_limited(slot) or self._why_in_task()

    def _why_rate_limited(self, slot: Slot) -> str:
        """A task waiting in a node's queue under its rate limit: say so."""
        if slot.state != states.RECEIVED or self.app is None:
            return ""
        task = self.app.tasks.get(slot.name) if slot.name else None
        options = getattr(task, "options", None)
        limits = [f"{kind} {rate!r}" for kind, rate in (
            ("rate_limit", getattr(options, "rate_limit", None)),
            ("mesh_rate_limit", getattr(options, "mesh_rate_limit", None))) if rate]
        if not limits:
            return ""
        return (f"task {slot.name} has {' and '.join(limits)}: it waits in a node's queue "
                "for its turn")

    @staticmethod
    def _why_in_task() -> str:
        """When get() runs inside a task on a node (Celery refuses that: "Never call
        result.get() within a task!"; mesh allows it), what the wait holds."""
        from mesh.task import _current_request
        req = _current_request.get()
        if req is None or req.called_directly or req.is_eager:
            return ""
        return (f"this get() runs inside task {req.task}[{req.id}] on {req.hostname}, whose "
                "worker it holds while it waits: when every worker of the nodes waits so, "
                "the tasks waited for stay queued behind them; prefer a chain or a chord "
                "(docs/migrating-from-celery.md, 'What differs')")

    def _require_slot(self) -> Slot:
        if self._slot is None:
            if self.app is None:
                raise MeshError(f"task {self.id} is not known to this process, and this "
                                "AsyncResult has no app to look it up with")
            self._slot = self.app._lookup_slot(self.id) or self.app.client.watch(self.id)
        return self._slot

    @staticmethod
    def _value(msg: Result, propagate: bool) -> Any:
        if msg.state == states.SUCCESS and msg.result is not None:
            return codec.loads(msg.result)
        if msg.state in (states.SUCCESS, states.IGNORED):     # no value was kept
            if not propagate:
                return None
            why = ("it ignores its result (ignore_result=True)" if msg.state == states.SUCCESS
                   else "it raised Ignore")
            raise ResultIgnored(f"task {msg.task_id} ended in {msg.state}, but it has no result: "
                                f"{why}")
        err = rebuild_exception(msg.exc, msg.traceback)
        if propagate:
            raise err
        return err


def __getattr__(name: str) -> Any:
    """``GroupResult`` and ``ResultSet`` (mesh/workflow/results.py, built on AsyncResult),
    also importable from here: loaded when first asked for, so either module may be
    imported first (mesh.app no longer imports this one: round 15)."""
    if name in ("GroupResult", "ResultSet"):
        from mesh.workflow import results
        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def allow_join_result() -> Iterator[None]:
    """Celery's ``with allow_join_result(): r.get()`` in a task. mesh never refuses a
    ``get()`` in a task (it holds the child while it waits: prefer a chain or a chord),
    so there is nothing to allow."""
    yield


__all__ = ["AsyncResult", "GroupResult", "ResultSet", "Slot", "allow_join_result",
           "rebuild_exception", "retry_meta", "trim_retry"]
