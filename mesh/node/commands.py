"""The control command registry: every command a node answers is a registered function.

The node's own commands are registered in mesh/node/remote.py; an app registers its
own the way Celery's ``@control_command`` / ``@inspect_command`` do, in the module
``meshnode --app`` imports::

    from mesh import control_command, inspect_command

    @inspect_command()
    def queue_depth(state):                      # state.node: a NodeView
        return {"queued": state.node.stats()["queued"]}

    @control_command(args=[("n", int)])          # or from the annotations: (state, n: int = 1)
    def bump(state, n=1):
        ...
        return {"ok": f"bumped by {n}"}

and calls them with ``app.control.broadcast("bump", arguments={"n": 2}, reply=True)``
or ``meshctl control bump --args '{"n": 2}'``. Arguments are checked against their
types before the function runs (a bad one is an error reply naming it); the reply is
anything msgpack can carry (dataclasses become maps). A command that raises is an
error reply, never a problem for the node. A command runs on the node's event loop:
it must return promptly.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mesh.exceptions import ConfigError
from mesh.wire.control import NoArgs

Handler = Callable[["ControlState", Any], Any]
KINDS = ("control", "inspect")


@dataclass
class ControlState:
    """What a command function gets first (Celery calls it ``state``)."""
    node: Any          # the Node for the node's own commands; a NodeView for the app's
    sender: bytes      # the requester's routing id (replies and watchers go there)

    @property
    def hostname(self) -> str:
        return str(self.node.name)


@dataclass(frozen=True)
class Command:
    name: str
    kind: str                      # "control" (changes something) or "inspect" (reads)
    handler: Handler               # handler(state, request)
    request: type[Any]             # the arguments' dataclass (mesh/wire/control.py)
    help: str = ""
    builtin: bool = False


class Registry:
    """Command name -> Command."""

    def __init__(self, commands: Iterable[Command] = ()) -> None:
        self._commands: dict[str, Command] = {c.name: c for c in commands}

    def add(self, command: Command) -> Command:
        old = self._commands.get(command.name)
        if old is not None and old.builtin and not command.builtin:
            raise ConfigError(f"control command {command.name!r} is one of mesh's own; "
                              "give yours another name")
        self._commands[command.name] = command
        return command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def __iter__(self) -> typing.Iterator[Command]:
        return iter(list(self._commands.values()))

    def copy(self) -> "Registry":
        return Registry(self._commands.values())


# Definitions, like Celery's Panel.data: the node's own (remote.py) and the app's.
# A node copies this when it starts; nothing here is per-node state.
registry = Registry()


def register(name: str, kind: str, request: type[Any] = NoArgs, help: str = "",
             builtin: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler(state, request)`` (the node's own commands use this)."""
    def deco(fn: Handler) -> Handler:
        registry.add(Command(name, kind, fn, request, help or (fn.__doc__ or "").strip(), builtin))
        return fn
    return deco


def _request_for(fn: Callable[..., Any], name: str,
                 args: Iterable[tuple[str, Any]] | None) -> type[Any]:
    """A dataclass of the arguments: from ``args`` (Celery's ``[("n", int)]``) or from
    the function's annotations; defaults from its signature."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[1:]          # after ``state``
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        raise ConfigError(f"control command {name}: *args cannot be sent over the wire")
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    if args is None:
        try:
            hints = typing.get_type_hints(fn)
        except Exception:
            hints = {}
        pairs = [(p.name, hints.get(p.name, Any)) for p in params
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    else:
        pairs = list(args)
    fields: list[Any] = []
    for arg, tp in pairs:
        if arg in defaults:
            fields.append((arg, tp, dataclasses.field(default=defaults[arg])))
        elif args is not None:                # Celery's style: every listed arg is optional
            fields.append((arg, tp | None, dataclasses.field(default=None)))
        else:
            fields.append((arg, tp))
    fields.sort(key=lambda f: len(f) == 3)    # required ones first, as dataclasses want
    cls = dataclasses.make_dataclass(f"{name}_args", fields, frozen=True)
    cls.__module__ = getattr(fn, "__module__", __name__)
    return cls


def _user_command(kind: str, fn: Callable[..., Any] | None, name: str | None,
                  args: Iterable[tuple[str, Any]] | None, help: str | None) -> Any:
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        cname = name or f.__name__
        if not 0 < len(cname) <= 64:
            raise ConfigError(f"a control command's name is 1 to 64 characters, got {cname!r}")
        request = _request_for(f, cname, args)
        names = [fl.name for fl in dataclasses.fields(request)]

        def handler(state: ControlState, req: Any) -> Any:
            return f(state, **{n: getattr(req, n) for n in names})

        registry.add(Command(cname, kind, handler, request,
                             help if help is not None else (f.__doc__ or "").strip()))
        return f
    if fn is not None:
        return deco(fn)
    return deco


def control_command(fn: Callable[..., Any] | None = None, *, name: str | None = None,
                    args: Iterable[tuple[str, Any]] | None = None,
                    help: str | None = None, **_celery: Any) -> Any:
    """Register a command that changes something on every node (Celery's name).
    ``fn(state, **arguments)``; ``state.node`` is the node's NodeView. Celery's
    ``signature=`` and other display options are accepted and ignored."""
    return _user_command("control", fn, name, args, help)


def inspect_command(fn: Callable[..., Any] | None = None, *, name: str | None = None,
                    args: Iterable[tuple[str, Any]] | None = None,
                    help: str | None = None, **_celery: Any) -> Any:
    """Register a command that reads something from every node (Celery's name)."""
    return _user_command("inspect", fn, name, args, help)
