"""Signatures and workflows as plain data (Celery's canvas): ``signature``, ``task.s``,
``task.si``, ``chain``, ``group``, ``chord``, ``chunks``, ``task.map``, ``task.starmap``.

A signature names a task by its name, its arguments and its options; composites hold
signatures. As in Celery, ``set()``, ``link()``, ``link_error()``/``on_error()`` and
``set_immutable()`` change the signature they are called on (and return it), while
``clone()``, ``|`` and ``apply_async(**options)`` leave it as it is. Each one
has ``to_dict()``, a map of plain, msgpack-encodable values in Celery's shape, and
``signature(d)`` rebuilds it, so a workflow can be built and sent by a process that
does not import the tasks' code. ``apply_async`` hands the workflow to the mesh
(mesh/workflow/submit.py): the nodes drive it; the sender may exit at once.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self

from mesh.exceptions import ConfigError

if TYPE_CHECKING:
    from mesh.app import Mesh

# apply_async/set options a workflow step understands (also Celery's names)
OPTIONS = frozenset({"task_id", "countdown", "eta", "expires", "priority", "time_limit",
                     "soft_time_limit", "link", "link_error", "headers", "queue"})
# Celery's transport options: accepted and not used (there is no broker)
IGNORED = frozenset({"routing_key", "exchange", "exchange_type", "serializer",
                     "compression", "retry", "retry_policy", "delivery_mode", "mandatory",
                     "immediate", "reply_to", "add_to_parent", "producer", "connection",
                     "publisher"})
CALLBACKS = ("link", "link_error")
MAP, STARMAP = "mesh.map", "mesh.starmap"      # builtin tasks (mesh/workflow/builtins.py)


def _frozen(d: Mapping[str, Any] | None, what: str) -> Mapping[str, Any]:
    if d is None:
        return MappingProxyType({})
    if not isinstance(d, Mapping):
        raise ConfigError(f"signature {what} must be a dict, got {type(d).__name__}")
    if not all(isinstance(k, str) for k in d):
        raise ConfigError(f"signature {what} keys must be strings")
    return MappingProxyType(dict(d))


def _options(options: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Checked options; link/link_error become tuples of signatures."""
    opts = dict(_frozen(options, "options"))
    for key in opts:
        if key not in OPTIONS and key not in IGNORED:
            import difflib
            hint = difflib.get_close_matches(key, OPTIONS, n=1)
            raise ConfigError(f"unknown signature option {key!r}"
                              + (f"; did you mean {hint[0]!r}?" if hint else "")
                              + f" (known: {', '.join(sorted(OPTIONS))})")
    for key in CALLBACKS:
        if key in opts:
            v = opts[key]
            items = v if isinstance(v, (list, tuple)) else [v]
            opts[key] = tuple(maybe_signature(x) for x in items if x is not None)
            if not opts[key]:
                del opts[key]
    tid = opts.get("task_id")
    if tid is not None and (not isinstance(tid, str) or not tid):
        raise ConfigError(f"task_id must be a non-empty string, got {tid!r}")
    return MappingProxyType(opts)


class Canvas:
    """What every signature and workflow has (Celery's ``Signature`` methods)."""

    options: Mapping[str, Any]
    subtask_type: str | None = None

    # -- building ---------------------------------------------------------------------
    def _with(self, **changes: Any) -> Self:
        if isinstance(self, Signature):
            new: Any = replace(self, **changes)
        else:                           # composites: their __init__ takes *tasks
            new = object.__new__(type(self))
            for f in fields(self):      # type: ignore[arg-type]
                v = changes.get(f.name, getattr(self, f.name))
                object.__setattr__(new, f.name, _options(v) if f.name == "options" else v)
        object.__setattr__(new, "_app", getattr(self, "_app", None))
        out: Self = new
        return out

    def set(self, immutable: bool | None = None, **options: Any) -> Self:
        """Add these options to this signature, in place, and return it, as Celery's
        ``set`` does: ``sig.set(countdown=1); sig.delay()`` sends it with the
        countdown. ``immutable=`` is ``set_immutable``. (``clone(**options)`` makes a
        changed copy instead.)"""
        if immutable is not None:
            self.set_immutable(immutable)
        if options:
            object.__setattr__(self, "options", _options({**self.options, **options}))
        return self

    def set_immutable(self, immutable: bool) -> None:
        """Celery's ``set_immutable``: an immutable signature gets no parent's result
        (a chain's or group's: each of its tasks)."""
        if isinstance(self, Signature):
            object.__setattr__(self, "immutable", bool(immutable))
        elif isinstance(self, _Tasks):
            for t in self.tasks:
                t.set_immutable(immutable)
        else:
            raise ConfigError(f"a chord cannot be made immutable: {self!r}")

    def freeze(self, _id: str | None = None, **_: Any) -> Any:
        """Celery's ``freeze``: give this signature its id now (its ``task_id`` option,
        set in place, or ``_id``) and return the handle ``apply_async`` will return
        for it (AsyncResult; GroupResult for a group; a chord's body's AsyncResult),
        so its ids are known before it is sent."""
        from mesh.app import new_task_id
        from mesh.workflow.describe import describe
        from mesh.workflow.results import handle
        tid = _id or self.options.get("task_id") or new_task_id()
        self.set(task_id=tid)
        app = self._find_app() or _current_app()
        return handle(app, describe(self.to_dict(compact=True), tid, stubs=False))

    def _merged(self, options: Mapping[str, Any]) -> Self:
        """A copy with these options added (this one is left as it is)."""
        return self._with(options={**self.options, **options}) if options else self

    def _add(self, key: str, sig: Any) -> Self:
        opts = {**self.options, key: (*self.options.get(key, ()), maybe_signature(sig))}
        object.__setattr__(self, "options", _options(opts))
        return self

    def link(self, callback: Any) -> Self:
        """Apply ``callback`` to this one's result when it succeeds: added in place,
        as in Celery (which returns ``callback``; this returns the signature)."""
        return self._add("link", callback)

    def link_error(self, errback: Any) -> Self:
        """Run ``errback`` when this one fails, with Celery's arguments ``(request,
        exc, traceback)`` (or ``(task_id,)`` for a one-argument task): added in place,
        as in Celery (which returns ``errback``; this returns the signature)."""
        return self._add("link_error", errback)

    def on_error(self, errback: Any) -> Self:
        """``link_error``, returning this signature, as Celery's."""
        return self.link_error(errback)

    def __or__(self, other: Any) -> "Canvas":
        other = maybe_signature(other)
        if isinstance(self, group) and not isinstance(other, group):
            return chord(self, other)
        left = self.tasks if isinstance(self, chain) and not self.options else (self,)
        right = other.tasks if isinstance(other, chain) and not other.options else (other,)
        return chain(*left, *right)

    @property
    def app(self) -> "Mesh | None":
        return getattr(self, "_app", None)

    def bind(self, app: "Mesh") -> Self:
        """The same, sent through ``app`` by ``apply_async``."""
        new = self._with()
        object.__setattr__(new, "_app", app)
        return new

    def _find_app(self) -> "Mesh | None":
        return self.app

    # -- sending ----------------------------------------------------------------------
    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: Mapping[str, Any] | None = None, app: "Mesh | None" = None,
                    **options: Any) -> Any:
        """Hand it to the mesh. ``args`` go first (before the signature's own), to
        every header task of a group or chord, to the first task of a chain. Returns
        an AsyncResult (a task, a chain: its last step, a chord: its body) or a
        GroupResult (a group)."""
        app = app or self._find_app() or _current_app()   # by name: the current app, as Celery
        from mesh.workflow.submit import apply_async
        return apply_async(app, self, args, kwargs, options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __invert__(self) -> Any:
        """Celery's ``~sig``, a shell's shortcut: ``sig.apply_async().get()``."""
        return self.apply_async().get()

    def apply(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              app: "Mesh | None" = None, **options: Any) -> Any:
        """Run it here and now (eager mode, mesh/workflow/eager.py): every task must be
        registered in this process. Returns EagerResult / EagerGroupResult."""
        app = app or self._find_app() or _current_app()
        from mesh.workflow.eager import apply
        from mesh.workflow.submit import partial
        c = partial(self, args, kwargs)
        return apply(app, c._merged(options))

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        """A map of plain values in Celery's shape (``signature(d)`` rebuilds it);
        ``compact`` leaves out the keys whose value is the default (what is sent)."""
        raise NotImplementedError

    def _opts_dict(self, compact: bool = False) -> dict[str, Any]:
        out = dict(self.options)
        for key in CALLBACKS:
            if key in out:
                out[key] = [s.to_dict(compact) for s in out[key]]
        return out

    def _shape(self, d: dict[str, Any], compact: bool) -> dict[str, Any]:
        if compact:
            for key, empty in (("args", []), ("kwargs", {}), ("options", {}),
                               ("subtask_type", None), ("immutable", False)):
                if key in d and d[key] == empty:
                    del d[key]
        return d


@dataclass(frozen=True, eq=True)
class Signature(Canvas):
    """``task`` (a registered name), ``args``, ``kwargs``, ``options`` (apply_async's
    keyword arguments: countdown, expires, priority, link, ...), ``immutable`` (made with
    ``si``: a workflow does not pass it a parent's result)."""
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
        object.__setattr__(self, "options", _options(self.options))

    @property
    def name(self) -> str:
        """Celery's ``sig.name``: the task's name."""
        return self.task

    @property
    def id(self) -> str | None:
        return self.options.get("task_id")

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> "Signature":
        """A copy; ``args`` go first (unless immutable, as in Celery), kwargs and options
        merged."""
        new_args = self.args if self.immutable or args is None else (*args, *self.args)
        new_kwargs = self.kwargs if self.immutable else {**self.kwargs, **(kwargs or {})}
        out: Signature = self._with(args=new_args, kwargs=new_kwargs,
                                    options={**self.options, **options})
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, in this process, as a plain call (Celery's ``sig()``):
        ``task.map(it)()`` is ``[task(x) for x in it]``, ``task.starmap(it)()``
        ``[task(*x) for x in it]`` (the builtins, which a Celery app always has)."""
        app = self.app
        task = app.tasks.get(self.task) if app is not None else None
        if task is None and app is not None and self.task in (MAP, STARMAP):
            from mesh.workflow.builtins import register_builtins
            register_builtins(app)      # as a node and eager mode do
            task = app.tasks.get(self.task)
        if task is None:
            raise ConfigError(f"{self.task} is not registered in this process: a signature "
                              "called directly runs the task here (use apply_async to send it)")
        s = self.clone(args, kwargs)
        return task(*s.args, **s.kwargs)

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        return self._shape({"task": self.task, "args": list(self.args), "kwargs": dict(self.kwargs),
                            "options": self._opts_dict(compact), "subtask_type": None,
                            "immutable": self.immutable}, compact)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"


def _tasks(tasks: tuple[Any, ...], what: str) -> tuple[Canvas, ...]:
    if len(tasks) == 1 and not isinstance(tasks[0], (Canvas, Mapping, str)) \
            and isinstance(tasks[0], Iterable):
        tasks = tuple(tasks[0])               # chain([a, b]), group(gen)
    return tuple(maybe_signature(t) for t in tasks)


@dataclass(frozen=True, eq=True, init=False)
class _Tasks(Canvas):
    """What a chain and a group share: their tasks, in order, and their options."""
    tasks: tuple[Canvas, ...]
    options: Mapping[str, Any]
    subtask_type = ""

    def __init__(self, *tasks: Any, **options: Any):
        object.__setattr__(self, "tasks", _tasks(tasks, self.subtask_type))
        object.__setattr__(self, "options", _options(options))

    def _find_app(self) -> "Mesh | None":
        return self.app or next((t._find_app() for t in self.tasks if t._find_app()), None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Send it (Celery's ``chain(...)(*args, **kwargs)``: arguments for its first
        task); runs here with ``task_always_eager``."""
        return self.apply_async(args, kwargs)

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        kind = self.subtask_type
        return self._shape({"task": f"mesh.{kind}", "args": [],
                            "kwargs": {"tasks": [t.to_dict(compact) for t in self.tasks]},
                            "options": self._opts_dict(compact), "subtask_type": kind,
                            "immutable": False}, compact)


@dataclass(frozen=True, eq=True, init=False)
class chain(_Tasks):  # noqa: N801 (Celery's name)
    """Tasks one after the other, each given the previous one's result first
    (unless immutable). ``chain(a, b, c)`` is ``a | b | c``."""
    subtask_type = "chain"

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"


@dataclass(frozen=True, eq=True, init=False)
class group(_Tasks):  # noqa: N801
    """Tasks run in parallel; the result is the list of their results, in order."""
    subtask_type = "group"

    def __len__(self) -> int:
        return len(self.tasks)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> Self:
        """Celery's: give the members countdowns ``start``, ``start + step``... (up to
        ``stop``, then ``stop`` again for the rest), in place; returns the group."""
        cur = float(start)
        last = cur
        for task in self.tasks:
            if not stop or cur <= stop:
                last, cur = cur, cur + step
            task.set(countdown=last)
        return self

    def __call__(self, *args: Any, **options: Any) -> Any:
        """Send it, as Celery's ``group(...)(*partial_args, **options)``: keywords are
        options (``countdown=``...), not task arguments; runs here with
        ``task_always_eager``."""
        return self.apply_async(args, **options)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


_group = group      # the class, where a method named group hides it


@dataclass(frozen=True, eq=True, init=False)
class _Chunks(group):
    """What ``chunks`` makes: a group of ``mesh.starmap`` tasks that also has Celery's
    ``chunks.group()``."""

    def group(self) -> _Tasks:
        """A plain group of copies of the parts (Celery's ``chunks.group()``), to change
        without changing this one: ``add.chunks(items, 10).group().skew(start=1)()``."""
        g = _group(*(t.clone() if isinstance(t, Signature) else t for t in self.tasks),
                   **self.options)
        out: _Tasks = g.bind(self.app) if self.app else g
        return out


@dataclass(frozen=True, eq=True, init=False)
class chord(Canvas):  # noqa: N801
    """A group (the header) and a body run with the list of the header's results once
    every header task succeeded. A failed header task fails the chord (ChordError);
    the body does not run. ``chord(header)(body)`` sends it."""
    header: group
    body: Canvas | None
    options: Mapping[str, Any]
    subtask_type = "chord"

    def __init__(self, header: Any, body: Any = None, **options: Any):
        h = header if isinstance(header, group) else group(header) if not isinstance(header, Mapping) \
            else maybe_signature(header)
        if not isinstance(h, group):
            raise ConfigError(f"a chord's header must be a group or a list of signatures, got {header!r}")
        object.__setattr__(self, "header", h)
        object.__setattr__(self, "body", maybe_signature(body) if body is not None else None)
        object.__setattr__(self, "options", _options(options))

    def __call__(self, body: Any = None, **options: Any) -> Any:
        if body is not None and not isinstance(body, (Canvas, Mapping, str)):
            raise ConfigError("chord(header)(body): the body must be a signature")
        c = chord(self.header, body, **self.options) if body is not None else self
        c = c.bind(self.app) if self.app else c
        return c.apply_async(**options)

    def _find_app(self) -> "Mesh | None":
        return self.app or self.header._find_app() or (self.body._find_app() if self.body else None)

    def to_dict(self, compact: bool = False) -> dict[str, Any]:
        return self._shape({"task": "mesh.chord", "args": [],
                            "kwargs": {"header": self.header.to_dict(compact),
                                       "body": self.body.to_dict(compact) if self.body is not None
                                       else None},
                            "options": self._opts_dict(compact), "subtask_type": "chord",
                            "immutable": False}, compact)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def chunks(task: Any, it: Iterable[Any], n: int) -> group:
    """``task`` over the argument tuples of ``it`` in parts of ``n``: a group of
    ``mesh.starmap`` tasks, one per part; its result is a list of lists. Its
    ``group()`` is a plain group of them (Celery's ``chunks.group()``, to ``skew``)."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"chunks: n must be a positive integer, got {n!r}")
    sig = maybe_signature(task)
    if not isinstance(sig, Signature):
        raise ConfigError("chunks needs a task or a signature of one task")
    items = iter(it)
    parts = []
    while True:
        part = list(itertools.islice(items, n))
        if not part:
            break
        parts.append(xstarmap(sig, part))
    g = _Chunks(*parts)
    return g.bind(sig.app) if sig.app else g


def xmap(task: Any, it: Iterable[Any]) -> Signature:
    """One task (``mesh.map``) that calls ``task`` on each item of ``it``, in a child."""
    return _builtin(MAP, task, it)


def xstarmap(task: Any, it: Iterable[Any]) -> Signature:
    """One task (``mesh.starmap``) that calls ``task(*item)`` for each item of ``it``."""
    return _builtin(STARMAP, task, it)


def _builtin(name: str, task: Any, it: Iterable[Any]) -> Signature:
    sig = maybe_signature(task)
    if not isinstance(sig, Signature):
        raise ConfigError(f"{name} needs a signature of one task, got {task!r}")
    s = Signature(name, (), {"task": sig.to_dict(), "it": [list(x) if isinstance(x, tuple) else x
                                                            for x in it]}, immutable=True)
    return s.bind(sig.app) if sig.app else s


def maybe_signature(d: Any) -> Canvas:
    """A Canvas from a Canvas, a task (``add``: no arguments), or a dict (to_dict)."""
    if isinstance(d, Canvas):
        return d
    if isinstance(d, Mapping):
        return from_dict(d)
    if hasattr(d, "s") and isinstance(getattr(d, "name", None), str):
        sig: Canvas = d.s()
        return sig
    raise ConfigError(f"expected a signature, got {d!r}")


def from_dict(d: Mapping[str, Any]) -> Canvas:
    """Rebuild what ``to_dict()`` made (no task code needed)."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"a signature dict must be a map, got {type(d).__name__}")
    kind = d.get("subtask_type")
    opts = dict(d.get("options") or {})
    kw = d.get("kwargs") or {}
    if kind is None:
        return Signature(d.get("task"), tuple(d.get("args") or ()), kw, opts,  # type: ignore[arg-type]
                         bool(d.get("immutable", False)))
    if kind == "chain":
        return chain(*kw.get("tasks", ()), **opts)
    if kind == "group":
        return group(*kw.get("tasks", ()), **opts)
    if kind == "chord":
        return chord(from_dict(kw["header"]), kw.get("body"), **opts)
    raise ConfigError(f"unknown signature kind {kind!r}")


def signature(task: Any, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              options: Mapping[str, Any] | None = None, immutable: bool = False,
              app: "Mesh | None" = None, **more_options: Any) -> Any:
    """A signature by task name (no import of the task's code needed), from a task,
    from a signature (a clone), or from a dict made by ``to_dict()``."""
    if isinstance(task, Canvas):
        if isinstance(task, Signature):
            s: Canvas = task.clone(args, kwargs, **{**(options or {}), **more_options})
        else:
            s = task._merged({**(options or {}), **more_options})
        return s.bind(app) if app else s
    if isinstance(task, Mapping):
        s = from_dict(task)
        return s.bind(app) if app else s
    name = task if isinstance(task, str) else getattr(task, "name", None)
    if not isinstance(name, str):
        raise ConfigError(f"signature() needs a task or a task name, got {task!r}")
    s = Signature(name, tuple(args or ()), kwargs or {}, {**(options or {}), **more_options},
                  immutable)
    app = app or getattr(task, "app", None)
    return s.bind(app) if app is not None else s


__all__ = ["Canvas", "Signature", "chain", "chord", "chunks", "from_dict", "group",
           "maybe_signature", "signature", "xmap", "xstarmap"]


def _current_app() -> "Mesh":
    """The app a signature with none of its own is sent through: the current one (the
    last ``Mesh`` made, as Celery's ``current_app``): ``signature("tasks.add").delay()``."""
    from mesh.shared import current_app
    return current_app()
