"""Frozen dataclasses that generate nothing at import: the control commands' requests
and replies (mesh/wire/control.py).

``@frozen`` on a subclass of :class:`Frozen` makes a dataclass that behaves as
``@dataclass(frozen=True)`` (the same fields, ``__init__`` parameters, defaults,
``__post_init__``, equality, hash, repr, and ``FrozenInstanceError``), but equality,
hash, repr and frozen-ness are :class:`FrozenBase`'s, once for every class, and each
class's ``__init__`` is generated on its first call. ``dataclass(frozen=True)``
compiles six functions per class at import, in every process that imports mesh
(~35 ms of CPU and ~0.2 MiB of heap for control.py's 20 classes; a node's children
inherit that heap and count it again: docs/performance.md, "Round 11").
"""
from __future__ import annotations

import dataclasses
import operator
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

_T = TypeVar("_T", bound=type)
_NOARG = object()


class FrozenBase:
    """What ``dataclass(frozen=True)`` generates per class, once for every class:
    frozen-ness, and equality, hash and repr read through the class's ``_values``
    (instance -> the values equality and hash compare) and ``_shown`` (the fields repr
    shows). The base of :class:`Frozen` and of the wire messages
    (:class:`mesh.wire.message.Message`), whose decorators set both per class."""

    __slots__ = ()
    # read through the class, never an instance (a function would be bound to it)
    _values: ClassVar[Callable[[Any], tuple[Any, ...]]]
    _shown: ClassVar[tuple[str, ...]]

    def __setattr__(self, name: str, value: Any) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return bool(type(self)._values(self) == type(other)._values(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(type(self)._values(self))

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{type(self).__qualname__}({values})"


def values_getter(names: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    """instance -> the tuple of these attributes (``attrgetter``'s, a tuple for any
    number of names)."""
    if len(names) > 1:
        return operator.attrgetter(*names)
    if names:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


class Frozen(FrozenBase):
    """Base of ``@frozen`` classes."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        init = _make_init(cls)
        cls.__init__ = init                               # type: ignore[method-assign]
        init(self, *args, **kwargs)


@typing.dataclass_transform(field_specifiers=(dataclasses.field,), frozen_default=True)
def frozen(cls: _T) -> _T:
    """``@dataclass(frozen=True)`` for a subclass of :class:`Frozen` (see the module)."""
    if not issubclass(cls, Frozen):
        raise TypeError(f"{cls.__name__} must derive from Frozen")
    if cls.__doc__ is None:       # (dataclass would make one from inspect.signature)
        cls.__doc__ = f"{cls.__name__}({', '.join(cls.__dict__.get('__annotations__', {}))})"
    dc: Any = dataclasses.dataclass(init=False, repr=False, eq=False)(cls)
    dc._values, dc._shown = _LAZY_VALUES, _LAZY_SHOWN     # (its own, not a base's)
    return typing.cast(_T, dc)


class _OnFirstUse:
    """A class attribute of a ``@frozen`` class made from its dataclass fields when
    first read, then stored on the class (nothing is made at import)."""

    def __init__(self, name: str, make: Callable[[tuple[dataclasses.Field[Any], ...]], Any]):
        self.name, self.make = name, make

    def __get__(self, obj: object, cls: type) -> Any:
        value = self.make(dataclasses.fields(cls))
        setattr(cls, self.name, value)
        return value


_LAZY_VALUES = _OnFirstUse("_values", lambda fields: values_getter(
    [f.name for f in fields if f.compare]))
_LAZY_SHOWN = _OnFirstUse("_shown", lambda fields: tuple(f.name for f in fields if f.repr))


def _make_init(cls: Any) -> Callable[..., None]:
    """``cls.__init__`` as ``dataclass(frozen=True)`` makes it."""
    env: dict[str, Any] = {"_NOARG": _NOARG, "_set": object.__setattr__}
    params, body = ["self"], []
    for i, f in enumerate(dataclasses.fields(cls)):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            env[f"_d{i}"] = f.default
            params.append(f"{f.name}=_d{i}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_f{i}"] = f.default_factory
            params.append(f"{f.name}=_NOARG")
            body.append(f"    if {f.name} is _NOARG: {f.name} = _f{i}()")
        else:
            params.append(f.name)
        body.append(f"    _set(self, {f.name!r}, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    text = f"def __init__({', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(text, env)                                      # noqa: S102 (our own text)
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init
