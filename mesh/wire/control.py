"""Control commands' arguments and replies, as typed dataclasses (no I/O).

A CONTROL message carries ``args``, a msgpack map; the node turns it into the
command's request dataclass with :func:`parse_args` (a bad argument is a
:class:`BadArgs` that says which and why) and turns the command's reply into the
CONTROL_REPLY payload with :func:`to_payload`. Clients can build ``args`` from the
same dataclasses (:func:`to_args`). Keys a request does not name are ignored, so
older nodes and newer clients get along. docs/protocol.md (5.6) lists the commands.
"""
from __future__ import annotations

import dataclasses
import signal as _signal
import types
import typing
from dataclasses import field
from typing import Any

from mesh.exceptions import ConfigError
from mesh.routing import check_queue
from mesh.wire.frozen import Frozen, frozen

MAX_IDS_PER_REVOKE = 10_000
MAX_ID = 200


class BadArgs(ValueError):
    """A control command's arguments are wrong; the message says how."""


OMIT_NONE = {"omit_none": True}   # field metadata: leave the key out of the payload when None


# ---- parsing -------------------------------------------------------------------------

def _type_ok(value: Any, tp: Any) -> bool:
    if tp is Any or tp is object:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return type(value) is int
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp in (str, bytes):
        return isinstance(value, tp)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_HINTS: dict[type, dict[str, Any]] = {}


def parse_args(cls: type[Any], args: dict[str, Any], command: str = "") -> Any:
    """The request dataclass ``cls`` from a CONTROL's ``args`` map, checked."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in args:
            v = args[f.name]
            if not _type_ok(v, hints.get(f.name, Any)):
                raise BadArgs(f"'{f.name}' must be {_type_name(hints.get(f.name))}, got {v!r}"[:300])
            values[f.name] = v
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise BadArgs(f"{command or cls.__name__} needs '{f.name}'")
    try:
        return cls(**values)
    except BadArgs:
        raise
    except (TypeError, ValueError) as e:
        raise BadArgs(str(e)) from None


def to_payload(value: Any) -> Any:
    """A reply as msgpack-able data: dataclasses become maps (without the optional
    keys that are None), lists and maps are converted item by item."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = to_payload(v)
        return out
    if isinstance(value, (list, tuple)):
        return [to_payload(v) for v in value]
    if isinstance(value, dict):
        return {k: to_payload(v) for k, v in value.items()}
    return value


def to_args(request: Any) -> dict[str, Any]:
    """A request dataclass as a CONTROL's ``args`` map (what a client sends)."""
    out: dict[str, Any] = to_payload(request)
    return out


# ---- checks shared by requests -------------------------------------------------------

def _name(v: str, key: str, command: str) -> None:
    if not 0 < len(v) <= 500:
        raise BadArgs(f"{command} needs '{key}': a non-empty string")


def _count(v: int, key: str = "n") -> None:
    if not 1 <= v <= 1000:
        raise BadArgs(f"'{key}' must be an integer from 1 to 1000, got {v!r}")


def _seconds(v: float | None, key: str) -> None:
    if v is not None and not 0 < v < 1e7:
        raise BadArgs(f"'{key}' must be a number of seconds > 0, or null for none; got {v!r}")


def signal_number(name: str) -> int:
    """SIGKILL, KILL, sigterm, ... as a signal number; BadArgs if unknown or unusable."""
    up = name.upper()
    if not up.startswith("SIG"):
        up = "SIG" + up
    sig = getattr(_signal.Signals, up, None)
    if sig is None or up in ("SIGSTOP", "SIGCONT"):
        raise BadArgs(f"unknown or unusable signal {name!r}")
    return int(sig)


# ---- requests ------------------------------------------------------------------------

@frozen
class NoArgs(Frozen):
    """A command that takes no arguments."""


@frozen
class ResultArgs(Frozen):
    task_id: str
    watch: bool = False            # also send the RESULT when the task finishes here

    def __post_init__(self) -> None:
        if not 0 < len(self.task_id) <= MAX_ID:
            raise BadArgs("result needs args {'task_id': '<id>'}")


@frozen
class RevokeArgs(Frozen):
    task_ids: list[str] | str
    terminate: bool = False
    signal: str = "SIGKILL"
    forwarded: bool = False        # from another node: do not forward again

    def __post_init__(self) -> None:
        ids = [self.task_ids] if isinstance(self.task_ids, str) else self.task_ids
        if not ids or len(ids) > MAX_IDS_PER_REVOKE or not all(0 < len(t) <= MAX_ID for t in ids):
            raise BadArgs(f"revoke needs 'task_ids': a list of 1 to {MAX_IDS_PER_REVOKE} ids")
        object.__setattr__(self, "task_ids", ids)
        signal_number(self.signal)

    @property
    def ids(self) -> list[str]:
        return typing.cast(list[str], self.task_ids)


@frozen
class RateLimitArgs(Frozen):
    task: str
    rate: str | int | float | None = None   # "10/s", "100/m", a number per second, or None

    def __post_init__(self) -> None:
        _name(self.task, "task", "rate_limit")


@frozen
class QueueArgs(Frozen):
    """add_consumer / cancel_consumer: one queue (Celery's ``exchange``,
    ``exchange_type`` and ``routing_key`` are broker words, taken and not used)."""
    queue: str

    def __post_init__(self) -> None:
        try:
            check_queue(self.queue, "queue")
        except ConfigError as e:
            raise BadArgs(str(e)) from None


@frozen
class TimeLimitArgs(Frozen):
    task: str
    soft: float | None = None
    hard: float | None = None

    def __post_init__(self) -> None:
        _name(self.task, "task", "time_limit")
        _seconds(self.soft, "soft")
        _seconds(self.hard, "hard")
        if self.soft is not None and self.hard is not None and self.soft > self.hard:
            raise BadArgs(f"the soft limit ({self.soft:g} s) must not exceed the hard limit "
                          f"({self.hard:g} s)")


@frozen
class PoolArgs(Frozen):
    n: int = 1

    def __post_init__(self) -> None:
        _count(self.n)


@frozen
class AutoscaleArgs(Frozen):
    """Celery's ``autoscale max min``: the pool's range of workers."""
    max: int
    min: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max <= 1000:
            raise BadArgs(f"autoscale needs 1 <= min <= max <= 1000, got max={self.max!r} "
                          f"min={self.min!r}")


@frozen
class DuplicateArgs(Frozen):
    task_id: str
    first_node: Any = None

    def __post_init__(self) -> None:
        _name(self.task_id, "task_id", "duplicate")


MAX_IDS_PER_FORGET = 10_000


@frozen
class ForgetArgs(Frozen):
    task_ids: list[str] | str

    def __post_init__(self) -> None:
        ids = [self.task_ids] if isinstance(self.task_ids, str) else self.task_ids
        if not ids or len(ids) > MAX_IDS_PER_FORGET or not all(0 < len(t) <= MAX_ID for t in ids):
            raise BadArgs(f"forget needs 'task_ids': a list of 1 to {MAX_IDS_PER_FORGET} ids")
        object.__setattr__(self, "task_ids", ids)


# ---- replies -------------------------------------------------------------------------

@frozen
class PingReply(Frozen):
    node: str
    address: str
    version: str
    protocol: int
    events: str


@frozen
class TaskStateReply(Frozen):
    task_id: str
    state: str
    result: bytes | None = field(default=None, metadata=OMIT_NONE)  # the RESULT frame, when final
    meta: bytes | None = field(default=None, metadata=OMIT_NONE)    # a reported state's meta
    submit: bytes | None = field(default=None, metadata=OMIT_NONE)  # the SUBMIT frame, if kept
    result_size: int | None = field(default=None, metadata=OMIT_NONE)   # instead of result: its
                                    # size, over the asker's max_message_size (not sent)


@frozen
class TaskInfo(Frozen):
    """A task in ``active``, ``reserved`` or ``scheduled``."""
    id: str
    name: str
    node: str
    priority: int
    received: float
    args: str = ""
    kwargs: str | None = field(default=None, metadata=OMIT_NONE)
    retries: int | None = field(default=None, metadata=OMIT_NONE)
    started: float | None = field(default=None, metadata=OMIT_NONE)   # active
    pid: int | None = field(default=None, metadata=OMIT_NONE)         # active
    eta: float | None = field(default=None, metadata=OMIT_NONE)       # scheduled


@frozen
class RegisteredTask(Frozen):
    name: str
    rate_limit: float | None
    time_limit: float | None
    soft_time_limit: float | None
    acks_late: bool
    max_retries: int | None


@frozen
class RevokeReply(Frozen):
    revoked: list[str]
    dropped: list[str]
    terminated: list[str]
    still_running: list[str]


@frozen
class ForgetReply(Frozen):
    forgotten: list[str]           # ids whose result this node dropped
    running: list[str]             # ids it holds unfinished (they keep their result)


@frozen
class RateLimitReply(Frozen):
    task: str
    rate_per_s: float | None


@frozen
class TimeLimitReply(Frozen):
    task: str
    soft: float | None
    hard: float | None


@frozen
class PoolSizeReply(Frozen):
    size: int


@frozen
class AutoscaleReply(Frozen):
    ok: str                        # Celery's reply: "autoscale now max=8 min=2"
    max: int
    min: int
    size: int                      # workers now


@frozen
class ShutdownReply(Frozen):
    node: str
    stopping: bool
