"""The machinery of wire messages: the :class:`Message` base, the ``@message``
decorator that makes a class a frozen, slotted dataclass and registers its type, the
checks of field values, and the per-class ``__init__`` and decoder, generated on first
use or by :func:`prepare` (docs/performance.md, "Round 11").

The messages themselves, their checks, ``encode`` and ``decode`` are the schema, in
:mod:`mesh.wire.protocol`, which re-exports what is public here.
"""
from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from mesh.exceptions import DecodeError
from mesh.wire.frozen import FrozenBase, values_getter

MAX_NESTING = 100        # containers in containers, in any one field value


# ---- field validation -----------------------------------------------------------------

def _plain(value: Any, depth: int = 0) -> bool:
    """True if a decoded value holds only plain msgpack types, nested at most
    MAX_NESTING containers deep. msgpack decodes its Timestamp extension (-1)
    without calling ext_hook; the envelope allows no extension types, so it is
    refused here. (msgpack unpacks ~1,000 levels; checking those recursively would
    raise RecursionError, and re-encoding them may fail.) Scalars in a container are
    passed over without a call (most of what a frame holds)."""
    t = type(value)
    if t is dict or t is list:
        if not value:
            return True
        if depth >= MAX_NESTING:
            raise DecodeError(f"values nested over {MAX_NESTING} deep are not allowed")
        d = depth + 1
        if t is dict:
            for k, v in value.items():
                if type(k) not in _SCALARS:
                    _plain(k, d)
                if type(v) not in _SCALARS:
                    _plain(v, d)
        else:
            for v in value:
                if type(v) not in _SCALARS:
                    _plain(v, d)
        return True
    if t is msgpack.Timestamp:
        raise DecodeError("extension type -1 (msgpack Timestamp) is not allowed in a message envelope")
    return True


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
_ONLY_STR = frozenset({str})
_ONLY_INT = frozenset({int})
_ONLY_BYTES = frozenset({bytes})


def _check_for(tp: Any) -> Callable[[Any], bool]:
    """A fast predicate for a (simple) annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:          # X | None
            inner = _check_for(rest[0])
            return lambda v: v is None or inner(v)
        checks = [_check_for(a) for a in args]
        return lambda v: any(c(v) for c in checks)
    if tp is type(None) or tp is None:
        return lambda v: v is None
    if tp is Any:
        return _plain
    if tp is float:
        return lambda v: (type(v) is float or type(v) is int)
    if tp is int:
        return lambda v: type(v) is int
    if tp is bool:
        return lambda v: type(v) is bool
    if tp is str:
        return lambda v: type(v) is str
    if tp is bytes:
        return lambda v: type(v) is bytes
    if origin is list or tp is list:
        args = typing.get_args(tp)
        if args and args[0] is str:     # (a set of the items' types: ~2x an all())
            return lambda v: type(v) is list and set(map(type, v)) <= _ONLY_STR
        if args and args[0] is int:
            return lambda v: type(v) is list and set(map(type, v)) <= _ONLY_INT
        if args and args[0] is bytes:
            return lambda v: type(v) is list and set(map(type, v)) <= _ONLY_BYTES
        if args:
            item = _check_for(args[0])
            return lambda v: type(v) is list and all(item(x) for x in v)
        return lambda v: type(v) is list
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        if args and args[0] is str:
            return lambda v: type(v) is dict and set(map(type, v)) <= _ONLY_STR and _plain(v)
        return lambda v: type(v) is dict and _plain(v)
    raise TypeError(f"unsupported field type {tp!r}")


class Message(FrozenBase):
    """Base of all wire messages. Subclasses are frozen dataclasses with a TYPE.

    Frozen, compared, hashed and shown by :class:`FrozenBase` (through ``_values``,
    every field, as ``encode`` sends them), not by ``dataclass(frozen=True)``, whose
    methods generated per class cost ~35 ms of CPU and ~0.2 MiB of heap at import, in
    every process (docs/performance.md, "Round 11"). Each message class's ``__init__``
    and decoder are generated on first use (:func:`message`)."""

    __slots__ = ()
    TYPE: ClassVar[enum.IntEnum]     # (the schema's MsgType)
    _spec: ClassVar[tuple[tuple[str, Callable[[Any], bool], Any, str], ...]]
    _required: ClassVar[int]
    _build: ClassVar[Callable[[list[Any]], "Message"]]   # checked fields -> message

    def validate(self) -> None:
        """Extra per-type checks after field types are known good; raise DecodeError."""

    def __getstate__(self) -> tuple[Any, ...]:        # pickle, copy: through the slots
        return type(self)._values(self)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for s, v in zip(self._spec, state):
            object.__setattr__(self, s[0], v)


_REGISTRY: dict[int, type[Message]] = {}
_MISSING = object()


class _Factory:
    """Marks a default made fresh per message (a dataclass default_factory)."""
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]):
        self.make = make


_M = typing.TypeVar("_M", bound=type)
_HINTS: dict[tuple[str, str], Any] = {}   # (module, annotation's text) -> its type


def _hint(text: Any, module: str) -> Any:
    """The type an annotation names, read in the module that declares the message
    (``from __future__ import annotations`` keeps annotations as text; the schema's,
    in mesh.wire.protocol, name ``Any``, ``str | None``, ...): evaluated once per
    distinct text, not per field as ``typing.get_type_hints`` does."""
    if not isinstance(text, str):
        return text
    tp = _HINTS.get((module, text))
    if tp is None:
        scope = vars(sys.modules[module])
        tp = _HINTS[module, text] = eval(text, scope)   # noqa: S307 (the declared annotations)
    return tp


@typing.dataclass_transform(field_specifiers=(field,), frozen_default=True)
def message(cls: _M) -> _M:
    """Class decorator: make ``cls`` a frozen, slotted dataclass and register it.

    Its ``__init__`` and its decoder (``_build``) are generated on first use: a child,
    a client or meshctl uses a few of the ~30 types, and each generated function is
    compiled code kept for the process's life."""
    if "__post_init__" in cls.__dict__ or "__init__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: a message may not define __post_init__ or "
                        "__init__ (decode builds messages slot by slot; put checks in "
                        "validate())")
    dc: Any = dataclass(slots=True, init=False, repr=False, eq=False)(cls)
    spec: list[tuple[str, Callable[[Any], bool], Any, str]] = []
    hints: dict[str, Any] = {}
    required = 0
    for f in dataclasses.fields(dc):
        tp = hints[f.name] = _hint(f.type, cls.__module__)
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = _Factory(f.default_factory)
        else:
            if spec and spec[-1][2] is not _MISSING:
                raise TypeError("required fields must come before optional ones")
            default = _MISSING
            required += 1
        spec.append((f.name, _check_for(tp), default, str(tp)))
    dc._spec = tuple(spec)
    dc._required = required
    dc._build = _lazy_build(dc, hints)
    dc.__init__ = _lazy_init
    names = [name for name, _c, _d, _t in spec]
    dc._values = values_getter(names)
    dc._shown = tuple(names)
    if dc.TYPE in _REGISTRY:
        raise RuntimeError(f"duplicate message type {dc.TYPE}")
    _REGISTRY[int(dc.TYPE)] = dc
    return typing.cast(_M, dc)


def _lazy_build(cls: Any, hints: dict[str, Any]) -> Callable[[list[Any]], Message]:
    """A stand-in for ``cls._build`` that generates it on the first decode of ``cls``."""
    def build(values: list[Any]) -> Message:
        real = _make_build(cls, hints)
        cls._build = real
        return real(values)
    build.hints = hints                                  # type: ignore[attr-defined]
    return build


def prepare(*classes: type[Message]) -> None:
    """Generate these classes' ``__init__`` and decoder now, not on first use: for a
    process about to fork children that use them (mesh/node/child.py). Generated in
    each child, they would be private copies there, and the compiler's code (~0.6 MiB
    of libpython) would join each child's RSS."""
    for cls in classes:
        hints = getattr(cls._build, "hints", None)
        if hints is not None:
            cls._build = _make_build(cls, hints)
        if cls.__init__ is _lazy_init:
            cls.__init__ = _make_init(cls)               # type: ignore[method-assign]


def _lazy_init(self: Message, *args: Any, **kwargs: Any) -> None:
    """A stand-in for a message's ``__init__`` that generates it on its first call."""
    cls = type(self)
    init = _make_init(cls)
    cls.__init__ = init                                  # type: ignore[method-assign]
    init(self, *args, **kwargs)


def _make_init(cls: Any) -> Callable[..., None]:
    """``cls.__init__`` as dataclass(frozen=True) makes it (the same parameters,
    defaults and default factories), storing each field in its slot directly."""
    env: dict[str, Any] = {"_NOARG": _MISSING}
    params, body = ["self"], []
    for i, (name, _c, default, _t) in enumerate(cls._spec):
        env[f"_s{i}"] = getattr(cls, name).__set__       # the slot's descriptor
        if default is _MISSING:
            params.append(name)
        elif type(default) is _Factory:
            env[f"_f{i}"] = default.make
            params.append(f"{name}=_NOARG")
            body.append(f"    if {name} is _NOARG: {name} = _f{i}()")
        else:
            env[f"_d{i}"] = default
            params.append(f"{name}=_d{i}")
        body.append(f"    _s{i}(self, {name})")
    text = f"def __init__({', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    exec(text, env)                                     # noqa: S102 (our own text)
    init: Callable[..., None] = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


# The checks of a type, inline (the fast path of decode: one generated function per
# message type instead of a loop calling a predicate per field; see _make_build).
_INLINE: dict[Any, str] = {
    str: "type({v}) is str", int: "type({v}) is int", bool: "type({v}) is bool",
    bytes: "type({v}) is bytes", float: "(type({v}) is float or type({v}) is int)",
}


def _inline_check(tp: Any) -> str | None:
    """``tp``'s check as a Python expression over ``{v}``, or None (then the field's
    predicate from _check_for is called)."""
    if tp in _INLINE:
        return _INLINE[tp]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2 and rest[0] in _INLINE:
            return "({v} is None or " + _INLINE[rest[0]] + ")"
    return None


def _make_build(cls: Any, hints: dict[str, Any]) -> Callable[[list[Any]], Message]:
    """Generate ``cls``'s decoder: ``build(values)`` checks the fields of a decoded frame
    (``values``: what follows version and type) exactly as the loop in ``mesh.wire.protocol.decode``
    would, fills defaults, builds the frozen message without going through its
    ``__init__`` (one slot store per field), and runs ``validate``. Same errors, same
    result; about 2.5x faster for a SUBMIT (the node, the child and the client decode
    several frames per task)."""
    spec = cls._spec
    env: dict[str, Any] = {"DecodeError": DecodeError, "_Factory": _Factory,
                           "_new": object.__new__, "cls": cls}
    lines = ["def build(values):", "    n = len(values)"]
    req = cls._required
    if req:                 # (texts reach the generated code as names, never as source)
        lines.append(f"    if n < {req}:")
        lines.append("        raise DecodeError(_missing + repr(_names[n]))")
    env["_names"] = [name for name, _c, _d, _t in spec]
    env["_missing"] = f"{cls.__name__} is missing field "
    for i, (name, check, default, tname) in enumerate(spec):
        v = f"v{i}"
        expr = _inline_check(hints[name])
        if expr is None:
            env[f"_c{i}"] = check
            test = f"_c{i}({v})"
        else:
            test = expr.format(v=v)
        env[f"_e{i}"] = f"{cls.__name__}.{name} must be {tname}, got "
        err = f"raise DecodeError(_e{i} + type({v}).__name__)"
        if default is _MISSING:
            lines.append(f"    {v} = values[{i}]")
            lines.append(f"    if not ({test}): {err}")
        else:
            env[f"_d{i}"] = default
            fill = f"_d{i}.make()" if type(default) is _Factory else f"_d{i}"
            lines.append(f"    if n > {i}:")
            lines.append(f"        {v} = values[{i}]")
            lines.append(f"        if not ({test}): {err}")
            lines.append("    else:")
            lines.append(f"        {v} = {fill}")
    lines.append("    m = _new(cls)")
    for i, (name, _c, _d, _t) in enumerate(spec):
        env[f"_s{i}"] = cls.__dict__[name].__set__      # the slot's descriptor
        lines.append(f"    _s{i}(m, v{i})")
    lines.append("    m.validate()")
    lines.append("    return m")
    exec("\n".join(lines), env)                        # noqa: S102 (our own text)
    build: Callable[[list[Any]], Message] = env["build"]
    return build
