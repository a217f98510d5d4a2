"""Peer-supplied text in mesh's logs stays on one line (mesh/security/text.py): the
``OneLine`` filter on every logger of mesh, and the check that every module makes its
logger with ``safe_logger`` (a new module with ``logging.getLogger("mesh...")`` would
log peer text raw: tests/integration/test_e2e_log_text.py shows what that allows)."""
from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.security.text import (
    LOG_KEPT,
    LOG_TB_LINES,
    MULTILINE,
    clipped,
    clipped_lines,
    safe_logger,
)

MESH = Path(__file__).resolve().parents[2] / "mesh"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logger = safe_logger("mesh.test-log-text")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.DEBUG
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def test_every_logger_of_mesh_is_made_with_safe_logger() -> None:
    raw = [f"{p.relative_to(MESH.parent)}:{i}" for p in MESH.rglob("*.py")
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r'getLogger\("mesh[.a-z_]+"\)', line)]
    assert not raw, f"use mesh.security.text.safe_logger: {raw}"


@pytest.mark.parametrize("args, line", [
    (("node\n[ERROR] forged",), "[INFO] from node\\n[ERROR] forged: x"),
    (("\x1b[2Jclear",), "[INFO] from \\x1b[2Jclear: x"),
    (("a\rb\u2028c",), "[INFO] from a\\rb\\u2028c: x"),
    (("plain",), "[INFO] from plain: x"),
    ((ValueError("bad\nline"),), "[INFO] from bad\\nline: x"),
])
def test_a_record_with_control_characters_is_one_line(
        captured: tuple[logging.Logger, io.StringIO], args: tuple[object, ...], line: str) -> None:
    logger, out = captured
    logger.info("from %s: x", *args)
    assert out.getvalue() == line + "\n"


def test_a_printable_record_keeps_its_arguments_and_a_multiline_one_its_lines(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)
    keep = Keep()
    logger.addHandler(keep)
    try:
        logger.info("took %d task(s) from %s", 3, "b")
        logger.error("Task %s raised%s", "t", "\nTraceback (most recent call last):",
                     extra=MULTILINE)
    finally:
        logger.removeHandler(keep)
    assert seen[0].args == (3, "b") and seen[0].msg == "took %d task(s) from %s"
    assert out.getvalue().splitlines() == ["[INFO] took 3 task(s) from b", "[ERROR] Task t raised",
                                           "Traceback (most recent call last):"]


def test_a_tasks_exception_text_is_clipped_for_the_log() -> None:
    """A message of megabytes, and a traceback of a million lines (a message of line
    feeds), come to the log as their start and length, their first and last lines."""
    assert clipped("short") == "short"
    assert clipped("x" * 2_000_000) == "x" * LOG_KEPT + "... (2,000,000 characters)"
    tb = "Traceback (most recent call last):\n" + "line\n" * 1_000_000 + "E: " + "y" * 5000
    rows = clipped_lines(tb).split("\n")
    assert len(rows) == 2 * LOG_TB_LINES + 1 and max(map(len, rows)) < 2 * LOG_KEPT
    assert rows[0] == "Traceback (most recent call last):"
    assert rows[LOG_TB_LINES] == f"... ({1_000_002 - 2 * LOG_TB_LINES:,} lines left out)"
    assert rows[-1] == "E: " + "y" * (LOG_KEPT - 3) + "... (5,003 characters)"
    assert clipped_lines("a\nb") == "a\nb"
