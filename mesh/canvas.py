"""Signatures: a task call as plain data (Celery's ``signature``, ``task.s``, ``task.si``).

A signature names a task, its arguments and its options; it does not run anything by
itself here. Periodic entries (``app.add_periodic_task(10, add.s(1, 1))``) are its first
user; workflows (chain, group, chord) will build on the same value. It is frozen:
``set()`` and ``clone()`` return a new one.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from mesh.exceptions import ConfigError


def _frozen(d: Mapping[str, Any] | None, what: str) -> Mapping[str, Any]:
    if d is None:
        return MappingProxyType({})
    if not isinstance(d, Mapping):
        raise ConfigError(f"signature {what} must be a dict, got {type(d).__name__}")
    if not all(isinstance(k, str) for k in d):
        raise ConfigError(f"signature {what} keys must be strings")
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class Signature:
    """``task`` (a registered name), ``args``, ``kwargs``, ``options`` (apply_async's
    keyword arguments: countdown, expires, priority, ...), ``immutable`` (made with
    ``si``: a workflow will not pass it a parent's result)."""
    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    immutable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ConfigError(f"a signature needs a task name, got {self.task!r}")
        if isinstance(self.args, (str, bytes)) or not isinstance(self.args, Iterable):
            raise ConfigError(f"signature args must be a list or tuple, got {type(self.args).__name__}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", _frozen(self.kwargs, "kwargs"))
        object.__setattr__(self, "options", _frozen(self.options, "options"))

    @property
    def name(self) -> str:
        """Celery's ``sig.name``: the task's name."""
        return self.task

    def set(self, **options: Any) -> "Signature":
        """The same call with these options added (``sig.set(countdown=1)``)."""
        return replace(self, options={**self.options, **options})

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> "Signature":
        """A copy; ``args`` are appended (unless immutable), kwargs and options merged."""
        new_args = self.args if self.immutable or args is None else (*self.args, *args)
        return replace(self, args=new_args, kwargs={**self.kwargs, **(kwargs or {})},
                       options={**self.options, **options})

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"


def signature(task: Any, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              options: Mapping[str, Any] | None = None, immutable: bool = False,
              **more_options: Any) -> Signature:
    """A signature by task name (no import of the task's code needed) or from a task."""
    if isinstance(task, Signature):
        return task.clone(args, kwargs, **{**(options or {}), **more_options})
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if not isinstance(name, str):
        raise ConfigError(f"signature() needs a task or a task name, got {task!r}")
    return Signature(name, tuple(args or ()), kwargs or {}, {**(options or {}), **more_options},
                     immutable)


__all__ = ["Signature", "signature"]
