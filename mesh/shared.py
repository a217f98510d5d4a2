"""``shared_task`` and the current app, with Celery's semantics.

A reusable package (a Django app, a library) cannot import the project's ``Mesh``
app: it does not know it, and may be imported before it exists. ``@shared_task``
registers the function with every app, the ones that exist and the ones made
later, and returns a proxy that stands for the task of the *current* app::

    from mesh import shared_task

    @shared_task
    def add(x, y):
        return x + y

    add.delay(2, 3)        # sent through the current app (the last one made)

The current app is the last ``Mesh`` created (``Mesh(..., set_as_current=False)``
opts out; ``app.set_current()`` chooses one). With no app at all, a default one is
made on first use, configured from MESH_* variables, as Celery's default app.

This is process-wide state by nature (Celery keeps the same in ``celery._state``):
the registry of shared tasks must outlive any one app. It is all in this module.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.task import Task

_lock = threading.RLock()
_apps: "weakref.WeakSet[Mesh]" = weakref.WeakSet()
_current: "weakref.ref[Mesh] | None" = None
_default: "Mesh | None" = None
# (function, options) of every shared task, in the order they were declared
_shared: list[tuple[Callable[..., Any], dict[str, Any]]] = []


def _register_shared(app: "Mesh", fun: Callable[..., Any], options: dict[str, Any]) -> "Task":
    name = options.get("name") or f"{fun.__module__}.{fun.__qualname__}"
    old = app._tasks.get(name)
    if old is not None and _origin(old.fun) == _origin(fun):   # its module was imported
        del app._tasks[name]                                   # again (a reload): replace it
    task: Task = app.task(**dict(options))(fun)
    return task


def _origin(fun: Any) -> tuple[str, str]:
    return (getattr(fun, "__module__", ""), getattr(fun, "__qualname__", ""))


def app_created(app: "Mesh", set_as_current: bool) -> None:
    """Called by every new ``Mesh``: it gets every shared task declared so far."""
    with _lock:
        _apps.add(app)
        for fun, options in _shared:
            _register_shared(app, fun, options)
        if set_as_current:
            set_current(app)


def set_current(app: "Mesh") -> None:
    swap_current(app)


def swap_current(obj: Any) -> Any:
    """Make ``obj`` (an app, or mesh.testing.pytest's trap; None: no current app)
    current and return what was, to be put back the same way (the pytest plugin's
    fixtures)."""
    global _current
    with _lock:
        was = _current() if _current is not None else None
        _current = weakref.ref(obj) if obj is not None else None
        return was


def get_current_app() -> "Mesh":
    """The current app: the last one made or set current; a default one if none is alive."""
    global _default
    with _lock:
        app = _current() if _current is not None else None
        if app is not None:
            return app
        if _default is None:
            from mesh.app import Mesh
            _default = Mesh("default")     # becomes current as it is made
        return _default


def running_task() -> "Task | None":
    """The task this thread (or asyncio task) is running, None outside a task: what
    Celery's ``current_task`` stands for. Found by the running call's name in the
    current app, then in the other apps."""
    from mesh.task import _current_request
    req = _current_request.get()
    if req is None or not req.task:
        return None
    with _lock:
        apps = [get_current_app(), *_apps]
    for app in apps:
        task = app._tasks.get(req.task)
        if task is not None:
            return task
    return None


class CurrentApp:
    """Celery's ``current_app`` (``from mesh import current_app``): stands for the
    current app, so ``current_app.send_task(...)``, ``current_app.conf``,
    ``current_app.control`` and ``current_app.AsyncResult(id)`` are the current app's,
    as with Celery's proxy; ``current_app()`` returns the app itself."""

    def __call__(self) -> "Mesh":
        return get_current_app()

    def _get_current_object(self) -> "Mesh":
        return get_current_app()

    def __getattr__(self, attr: str) -> Any:
        return getattr(get_current_app(), attr)

    def __eq__(self, other: object) -> bool:
        return get_current_app() == other

    def __hash__(self) -> int:
        return hash(get_current_app())

    def __repr__(self) -> str:
        return f"<current_app {get_current_app()!r}>"


current_app = CurrentApp()


class CurrentTask:
    """Celery's ``current_task`` (``from mesh import current_task``): stands for the
    task running here. ``current_task.request.id``, ``current_task.name`` are the
    running task's; outside a task it is false (``if current_task:``) and its
    attributes raise AttributeError, as Celery's proxy of None does."""

    def _get_current_object(self) -> "Task | None":
        return running_task()

    def __bool__(self) -> bool:
        return running_task() is not None

    def __getattr__(self, attr: str) -> Any:
        task = running_task()
        if task is None:
            raise AttributeError(f"no task is running here: current_task.{attr} is only "
                                 "there inside a task")
        return getattr(task, attr)

    def __repr__(self) -> str:
        task = running_task()
        return f"<current_task {task.name if task is not None else None}>"


current_task = CurrentTask()


class SharedTask:
    """Stands for a shared task in the current app: attribute access, calls and
    ``delay``/``apply_async`` go to ``current_app().tasks[name]``, resolved anew on
    every use (so a test that makes its own app, eager or not, gets its own task)."""

    def __init__(self, name: str, fun: Callable[..., Any]):
        self.name = name
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__module__ = fun.__module__

    def _get_current_object(self) -> "Task":
        app = get_current_app()
        task = app._tasks.get(self.name)
        if task is None:   # only if registering it with this app failed, and said why
            from mesh.exceptions import NotRegistered
            raise NotRegistered(f"shared task {self.name!r} is not registered with {app!r}")
        return task

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._get_current_object(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get_current_object()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task {self.name}>"


@overload
def shared_task(fun: Callable[..., Any]) -> SharedTask: ...
@overload
def shared_task(fun: None = None, **options: Any) -> Callable[[Callable[..., Any]], SharedTask]: ...


def shared_task(fun: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Declare a task for every app (see the module docstring). Takes the options
    of ``@app.task``; bad options fail here, in the first app they reach."""
    def declare(f: Callable[..., Any]) -> SharedTask:
        with _lock:
            name = options.get("name") or f"{f.__module__}.{f.__qualname__}"
            if not any(g is f for g, _o in _shared):
                for app in list(_apps):
                    _register_shared(app, f, options)
                _shared.append((f, dict(options)))
            return SharedTask(name, f)
    if fun is not None:
        if options:
            from mesh.exceptions import ConfigError
            raise ConfigError("use @shared_task or @shared_task(option=...), not both")
        return declare(fun)
    return declare
