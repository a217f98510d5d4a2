"""Components: the node as an ordered list of small parts (Celery's bootsteps).

A component is a class with a ``name``, the names of the components it needs
(``requires``) and three hooks that do nothing by default::

    class Exporter(Component):
        requires = ("pool",)                 # names, or Component classes

        async def start(self, node): ...     # may await; must return promptly:
                                             # long-lived work goes in node.spawn(...)
        async def stop(self, node): ...      # the node still serves while this runs
        def close(self, node): ...           # after every loop ended: sockets, files

The node orders its components so that each starts after everything it requires
(otherwise in the order given: built-ins first, then the app's), starts them in that
order, and at shutdown calls ``stop`` in the reverse order, cancels every loop the
components spawned, then calls ``close`` in the reverse order. An unknown name in
``requires``, two components with one name, or components that require each other
are a :class:`ComponentError` when the node starts.

The node's own components receive the node itself; the app's components (added with
``app.components.add``) receive a :class:`mesh.node.view.NodeView`, a narrow and
documented view, and what they raise is logged, never fatal (docs/components.md).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from mesh.exceptions import ConfigError, MeshError


class NodeStartError(MeshError):
    """The node could not start (address in use, bad data dir, ...)."""


class ComponentError(ConfigError):
    """Components cannot be ordered: an unknown requirement, a duplicate name, a cycle."""


class Component:
    """A part of a node with a start and a stop. Subclass it and override what you need."""

    name: str = ""                                  # "" means the class's name
    requires: tuple[str | type[Component], ...] = ()

    async def start(self, node: Any) -> None:
        """The node is starting: set up, spawn loops with ``node.spawn``. Runs on the
        node's event loop, so it must not block (await, or use a thread)."""

    async def stop(self, node: Any) -> None:
        """The node is stopping (reverse start order); loops still run. Must not block."""

    def close(self, node: Any) -> None:
        """Every loop has ended: release sockets and files. Must not block for long."""

    def __repr__(self) -> str:
        return f"<component {component_name(self)}>"


def component_name(c: Component | type[Component]) -> str:
    cls = c if isinstance(c, type) else type(c)
    name = getattr(c, "name", "") or cls.__name__
    return str(name)


def _required_names(c: Component) -> list[str]:
    out = []
    for r in c.requires:
        if isinstance(r, str):
            out.append(r)
        elif isinstance(r, type) and issubclass(r, Component):
            out.append(component_name(r))
        else:
            raise ComponentError(f"component {component_name(c)}: requires must hold component "
                                 f"names or Component classes, got {r!r}")
    return out


def order(components: Sequence[Component]) -> list[Component]:
    """Each component after everything it requires; otherwise in the order given."""
    by_name: dict[str, Component] = {}
    for c in components:
        name = component_name(c)
        if name in by_name:
            raise ComponentError(f"two components are named {name!r} ({by_name[name]!r} and "
                                 f"{c!r}); give one of them another name")
        by_name[name] = c
    needs = {component_name(c): _required_names(c) for c in components}
    for name, reqs in needs.items():
        for r in reqs:
            if r not in by_name:
                raise ComponentError(f"component {name!r} requires {r!r}, which is not a "
                                     f"component of this node (known: {', '.join(by_name)})")
    done: list[Component] = []
    placed: set[str] = set()
    left = [component_name(c) for c in components]
    while left:
        for name in left:                 # the first one whose requirements are placed
            if all(r in placed for r in needs[name]):
                break
        else:
            raise ComponentError(f"components require each other: {_cycle(needs, left)}")
        left.remove(name)
        placed.add(name)
        done.append(by_name[name])
    return done


def _cycle(needs: dict[str, list[str]], left: list[str]) -> str:
    """A readable cycle among ``left``: a -> b -> a."""
    path = [left[0]]
    while True:
        nxt = next(r for r in needs[path[-1]] if r in left)
        if nxt in path:
            return " -> ".join(path[path.index(nxt):] + [nxt])
        path.append(nxt)


class Components:
    """``app.components``: the app's own components, added to every node it runs on.

    ``add`` takes a Component subclass (the node makes one instance of it) or an
    instance, and returns it, so it also works as a class decorator."""

    def __init__(self) -> None:
        self._items: list[type[Component] | Component] = []

    def add(self, component: Any) -> Any:
        ok = (isinstance(component, Component)
              or (isinstance(component, type) and issubclass(component, Component)))
        if not ok:
            raise ComponentError(f"app.components.add() takes a mesh.Component subclass or "
                                 f"instance, got {component!r}")
        if component not in self._items:
            self._items.append(component)
        return component

    def discard(self, component: type[Component] | Component) -> None:
        if component in self._items:
            self._items.remove(component)

    def instances(self) -> list[Component]:
        """A fresh instance of each class (instances are used as they are)."""
        return [c() if isinstance(c, type) else c for c in self._items]

    def __iter__(self) -> Iterator[type[Component] | Component]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, c: object) -> bool:
        return c in self._items


def names(components: Iterable[Component]) -> list[str]:
    return [component_name(c) for c in components]
