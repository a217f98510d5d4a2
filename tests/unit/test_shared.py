"""shared_task, the current app, and app.autodiscover_tasks (in-process)."""
from __future__ import annotations

import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import Mesh, current_app, shared, shared_task
from mesh.exceptions import ConfigError, NotRegistered


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees no shared task and no current app of the others."""
    monkeypatch.setattr(shared, "_shared", [])
    monkeypatch.setattr(shared, "_apps", weakref.WeakSet())
    monkeypatch.setattr(shared, "_current", None)
    monkeypatch.setattr(shared, "_default", None)
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)


def make(name: str, **kw: object) -> Mesh:
    return Mesh(name, peers=["tcp://127.0.0.1:9"], mdns=False, **kw)  # type: ignore[arg-type]


def test_a_shared_task_reaches_apps_made_before_and_after_it() -> None:
    before = make("before")

    @shared_task
    def add(x: int, y: int) -> int:
        return x + y

    after = make("after")
    name = f"{__name__}.test_a_shared_task_reaches_apps_made_before_and_after_it.<locals>.add"
    assert add.name == name
    assert before.tasks[name].fun is after.tasks[name].fun
    assert before.tasks[name].app is before and after.tasks[name].app is after


def test_the_proxy_follows_the_current_app() -> None:
    @shared_task(name="shared.mul", max_retries=7)
    def mul(x: int, y: int) -> int:
        return x * y

    a = make("a")
    assert mul.app is a and mul.options.max_retries == 7
    b = make("b")
    assert mul.app is b and current_app() is b
    a.set_current()
    assert mul.app is a
    make("c", set_as_current=False)
    assert mul.app is a
    assert mul(6, 7) == 42               # a plain call, as with any task
    assert repr(mul) == "<@shared_task shared.mul>"


def test_set_default_and_current_task_as_celery_has_them() -> None:
    # Flask's Celery guide calls celery_app.set_default() (AttributeError), and
    # `from celery import current_task` (current_task.request.id in a helper or a log
    # filter) had no mesh name
    from mesh import current_task

    a, b = make("a"), make("b")
    a.set_default()
    assert current_app() is a

    def helper() -> tuple[str | None, str]:
        return current_task.request.id, current_task.name

    @shared_task(name="shared.who")
    def who() -> tuple[str | None, str, bool]:
        tid, name = helper()
        return tid, name, a.current_task is a.tasks["shared.who"]

    assert not current_task and a.current_task is None
    with pytest.raises(AttributeError, match="no task is running here"):
        current_task.request  # noqa: B018
    r = who.apply(task_id="t-7")
    assert r.get() == ["t-7", "shared.who", True]
    assert b.tasks["shared.who"] is not None


def test_with_no_app_a_default_one_is_made() -> None:
    @shared_task
    def one() -> int:
        return 1

    assert one() == 1
    assert current_app().main == "default"


def test_bad_options_fail_where_the_task_is_declared() -> None:
    app = make("x")  # noqa: F841  (alive: the options are checked by the apps they reach)
    with pytest.raises(ConfigError, match="max_retriez"):
        @shared_task(max_retriez=3)
        def f() -> None: ...
    with pytest.raises(ConfigError, match="not both"):
        shared_task(lambda: None, name="x")


def test_declaring_the_same_function_twice_registers_it_once() -> None:
    app = make("x")

    def f() -> None: ...
    shared_task(f)
    shared_task(f)
    assert len(shared._shared) == 1 and len(app.tasks) == 1


def test_a_module_imported_again_replaces_its_shared_tasks(packages: Path) -> None:
    app = make("x")
    app.autodiscover_tasks(["alpha"], force=True)
    first = app.tasks["alpha.ping"]
    del sys.modules["alpha.tasks"]
    import alpha.tasks  # noqa: F401
    assert app.tasks["alpha.ping"] is not first


def test_a_proxy_whose_task_could_not_register_says_so() -> None:
    @shared_task(name="shared.gone")
    def gone() -> None: ...
    app = make("x")
    del app._tasks["shared.gone"]
    with pytest.raises(NotRegistered, match="shared.gone"):
        gone.delay()


# -- autodiscover_tasks ---------------------------------------------------------------

@pytest.fixture
def packages(tmp_path: Path) -> Iterator[Path]:
    """Packages on sys.path: alpha (a tasks module), beta (none), gamma (a tasks module
    whose own import fails)."""
    def write(path: str, text: str) -> None:
        p = tmp_path / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    write("alpha/__init__.py", "")
    write("alpha/tasks.py", """
        from mesh import shared_task
        @shared_task(name="alpha.ping")
        def ping():
            return "pong"
    """)
    write("beta/__init__.py", "")
    write("gamma/__init__.py", "")
    write("gamma/tasks.py", "import gamma_missing_dependency\n")
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] in ("alpha", "beta", "gamma")]:
        del sys.modules[name]


def test_discovery_waits_until_the_tasks_are_read(packages: Path) -> None:
    app = make("x")
    app.autodiscover_tasks(["alpha", "beta"])
    assert "alpha.tasks" not in sys.modules          # lazily: nothing imported yet
    assert "alpha.ping" in app.tasks                 # the first read imports
    assert "alpha.tasks" in sys.modules and "beta.tasks" not in sys.modules
    assert app._discovery.imported == ["alpha.tasks"]


def test_force_discovers_at_once(packages: Path) -> None:
    app = make("x")
    app.autodiscover_tasks(lambda: ["alpha"], force=True)
    assert "alpha.tasks" in sys.modules and "alpha.ping" in app._tasks


def test_a_broken_tasks_module_is_raised_every_time_not_skipped(packages: Path) -> None:
    app = make("x")
    app.autodiscover_tasks(["alpha", "gamma"])
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError, match="gamma_missing_dependency"):
            app.tasks  # noqa: B018


def test_a_package_that_does_not_exist_is_an_error(packages: Path) -> None:
    app = make("x")
    app.autodiscover_tasks(["no_such_package_here"])
    with pytest.raises(ModuleNotFoundError):
        app.tasks  # noqa: B018


def test_without_django_the_packages_must_be_named() -> None:
    with pytest.raises(ConfigError, match="needs Django"):
        make("x").autodiscover_tasks()


def test_mesh_itself_never_imports_django() -> None:
    import subprocess
    code = "import mesh, sys; mesh.Mesh('x', mdns=False); print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_current_app_is_a_proxy_as_celerys_is() -> None:
    """Celery code says `from celery import current_app; current_app.send_task(...)`,
    `current_app.conf.x`, `current_app.control.inspect()`: the import line changes, the
    rest must not ('function' object has no attribute 'control', as the Django example
    found)."""
    a = make("a")
    assert current_app.main == "a" and current_app.conf is a.conf
    assert current_app.tasks == a.tasks and type(current_app.control).__name__ == "Controller"
    assert current_app() is a and current_app._get_current_object() is a
    assert current_app == a and hash(current_app) == hash(a)
    b = make("b")
    assert current_app.main == "b" and current_app != a
    current_app.conf.task_always_eager = True            # reaches the app itself
    assert b.conf.task_always_eager is True
    assert "b" in repr(current_app)
