"""What mesh imports is what it declares: every third-party module imported anywhere
in mesh/ (at the top of a module or inside a function, as the node imports psutil only
off Linux) belongs to a distribution in setup.cfg's install_requires, and each one
declared there is imported somewhere. A plain ``pip install .`` installs exactly the
declared ones (tests/integration/test_packaging.py runs that install), so a dependency
missing from setup.cfg fails only where its import runs, which that test may not reach.
"""
from __future__ import annotations

import ast
import configparser
import functools
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# imported by mesh but not a runtime dependency, and why
OPTIONAL = {
    "django": "mesh/django is the Django integration: only a Django project imports it",
    "django_tasks": "mesh/django/tasks_api.py: Django's task API backport, for Django < 6",
    "pytest": "mesh/testing/pytest.py is Celery's pytest plugin for mesh: only a test suite "
              "that names it (pytest_plugins) imports it, under pytest",
    "_sha2": "CPython's own module (3.12+; _sha256 on 3.11, hashlib after that)",
    "_sha256": "CPython's own module on 3.11",
}


@functools.cache
def _imports() -> dict[str, set[str]]:
    """Top-level names of the modules mesh/ imports (absolute imports only), each
    with the files that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "mesh").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "mesh" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _declared() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].strip().splitlines()
    return {_canonical(re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0])
            for line in lines if line.strip()}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency() -> None:
    by_module = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module, files in _imports().items():
        if module in OPTIONAL:
            continue
        dists = {_canonical(d) for d in by_module.get(module, [])}
        if not dists & declared:
            missing[module] = sorted(files)
    assert not missing, ("imported by mesh but not in setup.cfg's install_requires (or "
                         f"OPTIONAL here, with the reason): {missing}")


def test_every_declared_dependency_is_imported() -> None:
    by_module = importlib.metadata.packages_distributions()
    imported = {_canonical(d) for module in _imports() for d in by_module.get(module, [])}
    unused = _declared() - imported
    assert not unused, f"in setup.cfg's install_requires but never imported by mesh: {unused}"


def test_the_scan_sees_imports_inside_functions() -> None:
    # psutil is imported only inside functions (mesh/node/procstat.py, mesh/config.py)
    assert "psutil" in _imports()
    assert "mesh/node/procstat.py" in _imports()["psutil"]
