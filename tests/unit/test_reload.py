"""Loading an app's new code in this process (mesh/node/reload.py): which modules are the
app's, a fresh import, and new code that does not load leaving the old in place with
an error that names the file and line. The node does this in
tests/integration/test_e2e_autoreload.py."""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import Mesh
from mesh.node.reload import ReloadError, app_modules, app_roots, import_fresh, watch_dirs

APP = '''
from mesh import Mesh
from {pkg} import helper

app = Mesh("reload-unit", mdns=False)


@app.task(name="ru.version")
def version():
    return helper.VERSION
'''


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A package ``rlpkg_<n>`` with tasks.py and helper.py, importable from tmp_path."""
    pkg = tmp_path / f"rlpkg_{abs(hash(tmp_path)) % 10**8}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("VERSION = 1\n")
    (pkg / "tasks.py").write_text(APP.format(pkg=pkg.name))
    sys.path.insert(0, str(tmp_path))
    try:
        yield pkg
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith(pkg.name)]:
            del sys.modules[name]


def _version(app: Mesh) -> int:
    return int(app.tasks["ru.version"]())


def test_a_fresh_import_runs_the_new_code_of_every_app_module(project: Path) -> None:
    spec = f"{project.name}.tasks:app"
    first = import_fresh(spec, app_roots(spec))
    roots = app_roots(spec)
    assert roots == [str(project.parent)]
    mods = app_modules(roots)
    assert {f"{project.name}", f"{project.name}.tasks", f"{project.name}.helper"} <= set(mods)
    assert not any(name.startswith("mesh") for name in mods)       # installed code is not the app's
    assert watch_dirs(mods.values()) == [str(project)]
    assert _version(first) == 1
    (project / "helper.py").write_text("VERSION = 2\n")            # a module the app imports
    second = import_fresh(spec, roots)
    assert second is not first and _version(second) == 2


@pytest.mark.parametrize(("source", "found"), [
    ("VERSION = (2\n", "helper.py line 1: SyntaxError"),
    ("import no_such_module_anywhere\n", "helper.py line 1: ModuleNotFoundError"),
    ("VERSION = 1\nraise RuntimeError('at import')\n", "helper.py line 2: RuntimeError: at import"),
])
def test_new_code_that_does_not_load_leaves_the_old_modules_in_place(
        project: Path, source: str, found: str) -> None:
    spec = f"{project.name}.tasks:app"
    roots = app_roots(spec)
    app = import_fresh(spec, roots)
    before = dict(app_modules(roots))
    (project / "helper.py").write_text(source)
    with pytest.raises(ReloadError, match=found.replace("(", r"\(")) as info:
        import_fresh(spec, roots)
    assert str(project / "helper.py") in str(info.value)
    assert app_modules(roots) == before                            # the very same module objects
    assert _version(app) == 1
    (project / "helper.py").write_text("VERSION = 3\n")            # fixed: it loads
    assert _version(import_fresh(spec, roots)) == 3


def test_an_app_that_is_gone_is_an_error(project: Path) -> None:
    spec = f"{project.name}.tasks:app"
    roots = app_roots(spec)
    import_fresh(spec, roots)
    (project / "tasks.py").write_text("x = 1\n")
    with pytest.raises(ReloadError, match="has no attribute 'app'"):
        import_fresh(spec, roots)
