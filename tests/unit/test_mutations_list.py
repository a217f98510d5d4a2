"""The hand-written mutants (scripts/mutations.toml) still point at code that exists:
each ``find`` occurs exactly once in its file, and each test it names exists. A
refactor that moves a guarded line must move its mutant too (docs/testing.md)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = tomllib.loads((ROOT / "scripts" / "mutations.toml").read_text())["mutant"]


@pytest.mark.parametrize("m", MUTANTS, ids=[m["name"] for m in MUTANTS])
def test_each_mutant_finds_its_line_once_and_names_real_tests(m: dict[str, object]) -> None:
    source = (ROOT / str(m["file"])).read_text()
    assert source.count(str(m["find"])) == 1, f"{m['name']}: 'find' must occur once in {m['file']}"
    assert m["find"] != m["replace"]
    tests = m["tests"]
    assert isinstance(tests, list) and tests
    for t in tests:
        path, _, name = str(t).partition("::")
        text = (ROOT / path).read_text()
        func = name.split("[")[0].split("::")[-1]
        assert not func or f"def {func}(" in text, f"{m['name']}: no test {t}"
