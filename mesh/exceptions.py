"""One exception tree for mesh, named by meaning.

Every error mesh raises on purpose derives from :class:`MeshError`, so callers can
catch "anything mesh said" in one place. Task-side errors (the ones a task's caller
sees through ``AsyncResult.get``) derive from :class:`TaskError` when they describe
what happened to a task rather than a bug in mesh.

Every name of ``celery.exceptions`` is here too, so ``from celery.exceptions import X``
moves by its import: ``CeleryError`` is ``MeshError`` (``except CeleryError`` catches
what mesh raises), ``ImproperlyConfigured`` is ``ConfigError``, ``TaskPredicate`` is
the base of ``Retry``, ``Ignore`` and ``Reject``, as in Celery. The ones about parts
mesh does not have (a broker, a result backend, worker shutdown by exception) exist
so that code which catches or defines them imports; mesh never raises them
(``CELERY_ONLY`` lists them).
"""
from __future__ import annotations

import builtins


class MeshError(Exception):
    """Base class of every error raised by mesh itself."""


CeleryError = MeshError          # Celery's base class: the same tree


class ConfigError(MeshError, ValueError):
    """A setting, flag or environment variable has a bad value or an unknown name."""


ImproperlyConfigured = ConfigError   # Celery's name for it


class DecodeError(MeshError, ValueError):
    """A frame could not be decoded: not msgpack, wrong shape, bad field, too large,
    or an unsupported protocol version. Raised at the edge; never crashes a node.
    ``ref``: the task or request id the frame names (its third item, a str of at most
    200 characters), when it was msgpack at all; for the ERROR that refuses it."""

    ref: str | None = None


class EncodeError(MeshError, TypeError):
    """A value cannot be put on the wire (not a msgpack type, or too large)."""


class UnreachableError(MeshError, ConnectionError):
    """No mesh node could be reached to ask (``AsyncResult.state`` of a task sent
    elsewhere, when none of the nodes answered): not the same as UNKNOWN, which
    means the nodes were asked and none knows the task."""


class TaskError(MeshError):
    """A task failed remotely with an exception whose type is not importable here.
    As in Celery, also the base of the errors about a task (``except TaskError``
    catches TimeoutError, NotRegistered, TaskRevokedError, MaxRetriesExceededError,
    ChordError, InvalidTaskError); those have no ``type_name``.

    ``type_name`` is the remote exception's ``module.QualName``; the remote traceback
    is on ``remote_traceback`` and chained as ``__cause__``.
    """

    def __init__(self, message: str = "", type_name: str = "", remote_traceback: str | None = None):
        super().__init__(message)
        self.type_name = type_name
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{self.type_name}: {msg}" if self.type_name else msg


class TimeoutError(TaskError, builtins.TimeoutError):
    """Waiting for a result took longer than the caller allowed."""


class NotRegistered(TaskError, KeyError):
    """No task of this name is registered on the node (or in the local app)."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0]) if self.args else ""


class SoftTimeLimitExceeded(MeshError):
    """Raised inside a running task when its soft time limit expires; the task may
    catch it to clean up."""


class TimeLimitExceeded(MeshError):
    """The task ran past its hard time limit; its child process was killed."""


class WorkerLostError(MeshError):
    """The child process running the task died (os._exit, signal, OOM kill) before
    it reported a result."""


class TaskPredicate(MeshError):
    """Celery's base of the exceptions a task raises to say how it ends (Retry,
    Ignore, Reject)."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry`` to ask for the task to run again after ``countdown``
    seconds; ``exc`` is the exception that caused it, if any; ``call`` the next run's
    ``(args, kwargs)`` when retry() changed them."""

    def __init__(self, message: str = "", exc: BaseException | None = None,
                 countdown: float | None = None):
        super().__init__(message)
        self.exc = exc
        self.countdown = countdown
        self.call: tuple[list[object], dict[str, object]] | None = None


class Ignore(TaskPredicate):
    """Raised by a task to end without a result: nothing is kept and its state is
    IGNORED (Celery's ``Ignore``). ``get()`` raises ResultIgnored."""


class Replace(Ignore):
    """Raised by ``Task.replace(sig)``: the task ends without a result of its own and
    ``sig`` runs in its place; its result becomes the task's (docs/workflows.md). An
    Ignore, as in Celery (code that catches Ignore catches it too). ``sig`` is the
    signature's map (``to_dict``)."""

    def __init__(self, message: str, sig: dict[str, object]):
        super().__init__(message)
        self.sig = sig
        self.canvas: object = None       # the Canvas itself (eager mode runs it)


class ReplaceNestingError(MeshError):
    """A task replaced itself (``Task.replace``) more than MAX_NESTING (50) times over:
    a replacement that replaces itself for ever (mesh/workflow/replace.py)."""


class Reject(TaskPredicate):
    """Raised by a task to refuse its message (Celery's ``Reject``): the task ends
    (state FAILURE, and ``get()`` raises this exception; Celery says REJECTED). With
    ``requeue=True`` it runs again instead, after a second, at most ``max_retries``
    times (counted as retries)."""

    def __init__(self, reason: object = None, requeue: bool = False):
        super().__init__(str(reason) if reason is not None else "rejected")
        self.reason = reason
        self.requeue = requeue


class ResultIgnored(MeshError):
    """``get()`` on a task that keeps no result: it has ``ignore_result=True`` or it
    raised Ignore. Its state still says how it ended."""


class ResultTooLarge(MeshError):
    """A task's result is larger than this client's ``max_message_size``: no node sends
    it here (the node keeps it, and a client with a larger limit reads it by id)."""


def result_too_large(task_id: str, size: int, limit: int, node: str) -> str:
    """The one wording of a result too big for the client that wants it, on the node
    that declines to send it (protocol ERROR ``reply-too-large``) and in the client."""
    return (f"the result of task {task_id} is {size:,} bytes, over this client's "
            f"max_message_size ({limit:,}); it stays stored on node {node}: raise the "
            f"client's max_message_size to {size:,} or more to read it (AsyncResult by id), "
            "or return a smaller result")


class MaxRetriesExceededError(TaskError):
    """A task asked to retry more often than its ``max_retries`` allows."""


class TaskRevokedError(TaskError):
    """The task was revoked before or while it ran."""


def revoked_message(task_id: str, name: str = "", how: str = "was revoked") -> str:
    """The one wording of a revoked task's error, wherever a node ends it: ``task
    NAME[ID] was revoked ...`` (the id alone when the node never saw the name)."""
    return f"task {name}[{task_id}] {how}" if name else f"task {task_id} {how}"


class ChordError(TaskError):
    """A chord's header failed (a member raised, was revoked or expired), so its body
    did not run; the message names the member and its exception (Celery's name)."""


class RemoteTraceback(Exception):
    """Carries a remote traceback as text; chained as ``__cause__`` of a rebuilt
    remote exception so that printing it shows where it really happened."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n" + self.tb.rstrip("\n") + "\n(the traceback above is from the node that ran the task)"


# ---- the rest of celery.exceptions: importable, never raised by mesh ---------------------

class SecurityError(MeshError):
    """Celery's message-signing error (mesh's security is CurveZMQ keys: a refused key
    is a handshake that fails, docs/security.md)."""


class AlreadyRegistered(TaskError):
    """Celery's: a task of this name is already registered (mesh replaces it)."""


class QueueNotFound(TaskError, KeyError):
    """Celery's: a queue not in ``task_queues`` (mesh has none to declare: a queue
    exists by being served)."""


class IncompleteStream(TaskError):
    """Celery's: the end of a stream of data was not found."""


class InvalidTaskError(TaskError):
    """Celery's: a task message is malformed (mesh refuses such a frame with ERROR)."""


class OperationalError(MeshError):
    """Celery's (kombu's) broker connection error: mesh has no broker."""


class BackendError(MeshError):
    """Celery's result backend error: mesh has no result backend."""


class BackendGetMetaError(BackendError):
    """Celery's: reading a result from the backend failed."""


class BackendStoreError(BackendError):
    """Celery's: storing a result in the backend failed."""


class Terminated(MeshError):
    """Billiard's: the task's process was terminated (mesh says TaskRevokedError for
    a revoke with terminate)."""


class WorkerShutdown(SystemExit):
    """Celery's: raised in a worker to stop it warmly (stop a node with SIGTERM or
    ``app.control.shutdown()``)."""


class WorkerTerminate(SystemExit):
    """Celery's: raised in a worker to stop it at once."""


SystemTerminate = WorkerTerminate


class CeleryCommandException(MeshError):
    """Celery's command-line error, with its exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class CeleryWarning(UserWarning):
    """Celery's base warning."""


class AlwaysEagerIgnored(CeleryWarning):
    """Celery's: send_task ignores task_always_eager (mesh does not: it runs a
    registered task here)."""


class DuplicateNodenameWarning(CeleryWarning):
    """Celery's: two workers share a name (mesh's membership tells them apart)."""


class FixupWarning(CeleryWarning):
    """Celery's: a fixup (its Django one) could not be applied."""


class NotConfigured(CeleryWarning):
    """Celery's: the app is used without configuration."""


class SecurityWarning(CeleryWarning):
    """Celery's: an insecure setting."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """Celery's."""


class CDeprecationWarning(DeprecationWarning):
    """Celery's."""


def reraise(tp: type[BaseException] | None, value: BaseException, tb: object = None) -> None:
    """Celery's: raise ``value`` again, with traceback ``tb``."""
    if value.__traceback__ is not tb:
        raise value.with_traceback(tb)  # type: ignore[arg-type]
    raise value


CELERY_ONLY = ("SecurityError", "AlreadyRegistered", "QueueNotFound", "IncompleteStream",
               "InvalidTaskError", "OperationalError", "BackendError", "BackendGetMetaError",
               "BackendStoreError", "Terminated", "WorkerShutdown", "WorkerTerminate",
               "SystemTerminate", "CeleryCommandException", "CeleryWarning",
               "AlwaysEagerIgnored", "DuplicateNodenameWarning", "FixupWarning",
               "NotConfigured", "SecurityWarning", "CPendingDeprecationWarning",
               "CDeprecationWarning")
