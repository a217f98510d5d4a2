"""Celery's pytest plugin (``celery.contrib.pytest``) for mesh: the same fixtures by
the same names, so a Celery test suite that uses them moves over by changing the
plugin's name::

    # conftest.py
    pytest_plugins = ("mesh.testing.pytest",)     # was: ("celery.contrib.pytest",)

    @pytest.fixture(scope="session")
    def celery_config():
        return {"task_default_queue": "tests"}

    def test_mul(celery_app, celery_worker):
        @celery_app.task
        def mul(x, y):
            return x * y
        celery_worker.reload()              # serve the task the test just defined
        assert mul.delay(4, 4).get(timeout=10) == 16

``celery_app`` is a new app for each test (``celery_session_app`` one for the session),
configured by ``celery_config`` and the test's ``@pytest.mark.celery(**settings)``,
made with ``celery_parameters`` as ``Mesh(...)`` keywords; ``celery_worker``
(``celery_session_worker``) runs mesh's real node for it in a thread of the test's
process (``mesh.testing.start_worker``: the solo pool, its journal in memory, loopback),
with ``celery_worker_parameters`` (``queues``, ``concurrency``, ``include``...). The app sends only
to that worker: it does not look for nodes by mDNS nor take ``MESH_PEERS`` (the
developer's own mesh is never sent a test's tasks) unless ``celery_config`` or
``celery_parameters`` give ``peers``. ``celery_includes`` are imported and
``celery_class_tasks`` registered before the worker starts. ``use_celery_app_trap``
(True) makes any use of the current app outside ``depends_on_current_app`` raise.
``celery_enable_logging`` is taken: mesh logs through ``logging`` as always. As with
Celery 5 the plugin is not loaded on its own: name it in ``pytest_plugins`` or pass
``-p mesh.testing.pytest``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from mesh import shared
from mesh.app import Mesh
from mesh.testing.worker import TestWorker, import_modules, start_worker

# Celery's switch: with NO_WORKER set in the environment, the worker fixtures start
# nothing (and give None), for a suite run against a mesh started apart
NO_WORKER = os.environ.get("NO_WORKER")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "celery(**overrides): override the test app's settings "
                                       "for a test (mesh.testing.pytest)")


class _Trap:
    """The current app while ``use_celery_app_trap`` is on: any use of it raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("Test depends on current_app (use the depends_on_current_app fixture)")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Test depends on current_app (use the depends_on_current_app fixture)")


def _settings(request: pytest.FixtureRequest, config: Mapping[str, Any]) -> dict[str, Any]:
    mark = request.node.get_closest_marker("celery")
    return {**config, **(mark.kwargs if mark else {})}


@contextlib.contextmanager
def _create_app(request: pytest.FixtureRequest, settings: Mapping[str, Any],
                parameters: Mapping[str, Any], use_trap: bool) -> Iterator[Mesh]:
    """A test app (Celery's TestApp): not current, reaching no node but the test
    worker's unless ``peers`` are given."""
    params = {"set_as_current": False, **parameters}
    if "peers" not in params and "peers" not in settings:
        params["peers"] = ()                  # not MESH_PEERS: the developer's mesh
        params.setdefault("mdns", False)
    app = Mesh(params.pop("main", "celery.tests"), **params)
    app.conf.update(settings)
    trap = _Trap() if use_trap else None
    was = shared.swap_current(trap) if use_trap else None
    try:
        # Celery's app_contained = False (on the module, class or test): the app is current
        if any(getattr(getattr(request, scope, None), "app_contained", True) is False
               for scope in ("module", "cls", "function")):
            shared.swap_current(app)
        yield app
    finally:
        app.close(patient=False)
        if use_trap:
            shared.swap_current(was)


def _worker(app: Mesh, includes: Sequence[str], class_tasks: Sequence[Any], pool: Any,
            parameters: Mapping[str, Any]) -> contextlib.AbstractContextManager[TestWorker | None]:
    if NO_WORKER:
        return contextlib.nullcontext()
    import_modules(includes, "celery_includes")
    for task in class_tasks:
        app.register_task(task)
    return start_worker(app, pool=pool, **parameters)


@pytest.fixture(scope="session")
def use_celery_app_trap() -> bool:
    """Override to return True: any use of the current app raises in a test that does
    not ask for ``depends_on_current_app``."""
    return False


@pytest.fixture(scope="session")
def celery_enable_logging() -> bool:
    """Taken for Celery's suites; mesh logs through ``logging`` either way."""
    return False


@pytest.fixture(scope="session")
def celery_includes() -> Sequence[str]:
    """Override: modules to import before the worker starts (tasks, signals)."""
    return ()


@pytest.fixture(scope="session")
def celery_class_tasks() -> Sequence[Any]:
    """Override: Task classes to register with the test app before the worker starts."""
    return ()


@pytest.fixture(scope="session")
def celery_worker_pool() -> str:
    """The test worker's pool: always solo (tasks run in the test's process)."""
    return "solo"


@pytest.fixture(scope="session")
def celery_config() -> Mapping[str, Any]:
    """Override: the test app's settings (``app.conf``)."""
    return {}


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    """Override: keywords for ``Mesh(...)`` when the test app is made (``main``: its name)."""
    return {}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    """Override: keywords for the test worker (``mesh.testing.start_worker``: ``queues``,
    ``exclude_queues``, ``concurrency``, ``hostname``, and Celery's that it takes)."""
    return {}


@pytest.fixture(scope="session")
def celery_session_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
                       celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
                       use_celery_app_trap: bool) -> Iterator[Mesh]:
    """One test app for the whole session, current (unless the trap is on)."""
    with _create_app(request, _settings(request, celery_config), celery_parameters,
                     use_celery_app_trap) as app:
        was = None if use_celery_app_trap else shared.swap_current(app)
        try:
            yield app
        finally:
            if not use_celery_app_trap:
                shared.swap_current(was)


@pytest.fixture(scope="session")
def celery_session_worker(celery_session_app: Mesh, celery_includes: Sequence[str],
                          celery_class_tasks: Sequence[Any], celery_worker_pool: Any,
                          celery_worker_parameters: Mapping[str, Any]) -> Iterator[TestWorker | None]:
    """A test worker for ``celery_session_app`` for the whole session."""
    with _worker(celery_session_app, celery_includes, celery_class_tasks, celery_worker_pool,
                 celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def celery_app(request: pytest.FixtureRequest, celery_config: Mapping[str, Any],
               celery_parameters: Mapping[str, Any], celery_enable_logging: bool,
               use_celery_app_trap: bool) -> Iterator[Mesh]:
    """A new test app for this test."""
    with _create_app(request, _settings(request, celery_config), celery_parameters,
                     use_celery_app_trap) as app:
        yield app


@pytest.fixture()
def celery_worker(celery_app: Mesh, celery_includes: Sequence[str],
                  celery_class_tasks: Sequence[Any], celery_worker_pool: Any,
                  celery_worker_parameters: Mapping[str, Any]) -> Iterator[TestWorker | None]:
    """A test worker for ``celery_app``, stopped when the test ends."""
    with _worker(celery_app, celery_includes, celery_class_tasks, celery_worker_pool,
                 celery_worker_parameters) as worker:
        yield worker


@pytest.fixture()
def depends_on_current_app(celery_app: Mesh) -> Iterator[None]:
    """The test app is the current app for this test (``current_app``, ``@shared_task``)."""
    was = shared.swap_current(celery_app)
    try:
        yield
    finally:
        shared.swap_current(was)
