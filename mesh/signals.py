"""Signals: light hooks with Celery's names and arguments.

A receiver is any callable taking keyword arguments (``signal``, ``sender`` and the
signal's own, plus ``**kwargs`` for what later versions add)::

    from mesh import signals

    @signals.task_prerun.connect
    def opened(sender=None, task_id=None, task=None, args=None, kwargs=None, **kw): ...

    @signals.task_success.connect(sender="tasks.add")   # only for this task
    def added(sender=None, result=None, **kw): ...

Each signal is sent in the process where Celery sends it (see docs/signals.md): the
publish signals in the client process, the task signals in the child that runs the
task, ``worker_process_init``/``worker_process_shutdown`` in every child (recycled ones
included), ``worker_init``/``worker_ready``/``worker_shutdown`` in the node.

A receiver that raises is logged with its traceback and the others still run: a hook
never breaks the task, the node or the client (Celery's ``Signal.send`` does the same).
Receivers are held weakly by default, as in Celery; pass ``weak=False`` for a lambda or
a closure that nothing else keeps alive.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from mesh.security.text import safe_logger

log = safe_logger("mesh.signals")

Receiver = Callable[..., Any]


def _sender_matches(wanted: Any, sender: Any) -> bool:
    """``wanted`` is what a receiver was connected for: None (any sender), the sender
    object itself, or a name (a task's name matches the task object too)."""
    if wanted is None or wanted is sender:
        return True
    if isinstance(wanted, str):
        if isinstance(sender, str):
            return wanted == sender
        return wanted == getattr(sender, "name", None)
    return False


class Signal:
    """A named hook. ``connect`` adds a receiver (also as a decorator, with or without
    arguments), ``disconnect`` removes it, ``send`` calls every receiver and returns
    ``[(receiver, response), ...]``; a receiver that raised has its exception as the
    response."""

    def __init__(self, name: str, providing_args: tuple[str, ...] = ()):
        self.name = name
        self.providing_args = providing_args
        self._lock = threading.Lock()
        # (key, sender, ref): ref() gives the receiver, or None once it is gone
        self._receivers: list[tuple[Any, Any, Callable[[], Receiver | None]]] = []

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None,
                weak: bool = True, dispatch_uid: str | None = None) -> Any:
        if receiver is None:
            def decorate(fn: Receiver) -> Receiver:
                self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
                return fn
            return decorate
        if not callable(receiver):
            raise TypeError(f"signal receivers must be callable, got {receiver!r}")
        key = (dispatch_uid or _receiver_id(receiver), id(sender) if not isinstance(sender, str) else sender)
        ref: Callable[[], Receiver | None]
        if weak:
            if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
                ref = weakref.WeakMethod(receiver)
            else:
                try:
                    ref = weakref.ref(receiver)
                except TypeError:          # builtins and some callables cannot be weakly held
                    ref = _strong(receiver)
        else:
            ref = _strong(receiver)
        with self._lock:
            # drop the dead first: a new receiver may have been given a dead one's id
            self._receivers = [e for e in self._receivers if e[2]() is not None]
            if not any(k == key for k, _s, _r in self._receivers):
                self._receivers.append((key, sender, ref))
        return receiver

    def disconnect(self, receiver: Receiver | None = None, *, sender: Any = None,
                   dispatch_uid: str | None = None) -> bool:
        """Remove a receiver; True if it was connected."""
        if receiver is None and dispatch_uid is None:
            raise TypeError("disconnect needs a receiver or a dispatch_uid")
        key = (dispatch_uid or _receiver_id(receiver),
               id(sender) if not isinstance(sender, str) else sender)
        with self._lock:
            before = len(self._receivers)
            self._receivers = [r for r in self._receivers if r[0] != key]
            return len(self._receivers) != before

    @property
    def receivers(self) -> list[Receiver]:
        """The live receivers, in the order they were connected."""
        with self._lock:
            entries = list(self._receivers)
        return [fn for _k, _s, ref in entries if (fn := ref()) is not None]

    def has_receivers(self) -> bool:
        # no lock: the list is replaced, never changed in place (send() reads it so too),
        # and delay() asks two signals per task
        return bool(self._receivers)

    def send(self, sender: Any = None, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver for ``sender``; never raises on a receiver's account."""
        if not self._receivers:            # the common case, on hot paths: no lock, no list
            return []
        with self._lock:
            entries = list(self._receivers)
            dead = [e for e in entries if e[2]() is None]
            if dead:
                self._receivers = [e for e in self._receivers if e not in dead]
        out: list[tuple[Receiver, Any]] = []
        for _key, wanted, ref in entries:
            fn = ref()
            if fn is None or not _sender_matches(wanted, sender):
                continue
            try:
                response = fn(signal=self, sender=sender, **named)
            except Exception as e:
                log.exception("signal %s: receiver %s raised %r (ignored)", self.name,
                              getattr(fn, "__qualname__", fn), e)
                response = e
            out.append((fn, response))
        return out


def _receiver_id(receiver: Any) -> Any:
    if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


def _strong(receiver: Receiver) -> Callable[[], Receiver]:
    return lambda: receiver


# Client process (where apply_async/delay/send_task runs)
before_task_publish = Signal("before_task_publish", (
    "body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"))
after_task_publish = Signal("after_task_publish", ("body", "headers", "exchange", "routing_key"))

# Child process, around each task run
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal("task_failure", (
    "task_id", "exception", "args", "kwargs", "traceback", "einfo"))
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_unknown = Signal("task_unknown", ("name", "id", "message", "exc"))
task_rejected = Signal("task_rejected", ("message", "exc"))

# Node process (meshnode) and every child it forks
worker_init = Signal("worker_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
worker_process_init = Signal("worker_process_init")
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))

# meshnode's start, in Celery's order: import_modules (the app's include and imports),
# setup_logging (a receiver configures logging itself: meshnode then configures nothing)
# or after_setup_logger and after_setup_task_logger (the root logger and mesh.task, once
# configured), celeryd_init (sender: the node's name), then in the node worker_init,
# celeryd_after_setup and worker_ready
import_modules = Signal("import_modules")
_LOGGING = ("loglevel", "logfile", "format", "colorize")
setup_logging = Signal("setup_logging", _LOGGING)
after_setup_logger = Signal("after_setup_logger", ("logger", *_LOGGING))
after_setup_task_logger = Signal("after_setup_task_logger", ("logger", *_LOGGING))
celeryd_init = Signal("celeryd_init", ("instance", "conf", "options"))
celeryd_after_setup = Signal("celeryd_after_setup", ("instance", "conf"))


class UnsentSignal(Signal):
    """A Celery signal mesh never sends: importable, so a moved project's module loads,
    and connecting a receiver logs a warning saying why it will not run (once per
    signal in a process) instead of staying silent."""

    def __init__(self, name: str, why: str, providing_args: tuple[str, ...] = ()):
        super().__init__(name, providing_args)
        self.why = why
        self._warned = False

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None,
                weak: bool = True, dispatch_uid: str | None = None) -> Any:
        if receiver is not None and not self._warned:
            self._warned = True
            log.warning("signal %s is never sent by mesh: %s; %s will not run (docs/signals.md)",
                        self.name, self.why, getattr(receiver, "__qualname__", receiver))
        return super().connect(receiver, sender=sender, weak=weak, dispatch_uid=dispatch_uid)


_NO_BEAT = "mesh has no beat process (every node carries the schedule)"
task_received = UnsentSignal(
    "task_received", "a node takes a task in its event loop, where no user code runs; "
    "task_prerun (in the child) is a task's first signal, and meshctl events shows "
    "task-received", ("request",))
task_internal_error = UnsentSignal(
    "task_internal_error", "mesh's children do not send it: a failure around a task is "
    "logged by its node", ("task_id", "args", "kwargs", "request", "exception",
                                     "traceback", "einfo"))
beat_init = UnsentSignal("beat_init", _NO_BEAT)
beat_embedded_init = UnsentSignal("beat_embedded_init", _NO_BEAT)
heartbeat_sent = UnsentSignal("heartbeat_sent", "a node's heartbeats are membership pings "
                              "(node-heartbeat events: meshctl events)")
worker_shutting_down = UnsentSignal(
    "worker_shutting_down", "use worker_shutdown, sent in the node as it stops",
    ("sig", "how", "exitcode"))
worker_before_create_process = UnsentSignal(
    "worker_before_create_process", "use worker_process_init, sent in each child")

__all__ = [
    "Signal", "UnsentSignal",
    "after_setup_logger", "after_setup_task_logger", "after_task_publish",
    "before_task_publish", "celeryd_after_setup", "celeryd_init", "import_modules",
    "setup_logging",
    "task_failure", "task_postrun", "task_prerun", "task_rejected", "task_retry",
    "task_revoked", "task_success", "task_unknown",
    "worker_init", "worker_process_init", "worker_process_shutdown", "worker_ready",
    "worker_shutdown",
    "beat_embedded_init", "beat_init", "heartbeat_sent", "task_internal_error",
    "task_received", "worker_before_create_process", "worker_shutting_down",
]
