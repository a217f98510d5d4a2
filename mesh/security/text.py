"""Peer-supplied text made safe for logs: member ids, addresses, reasons, task and
queue names, error messages, control commands' arguments.

A node logs what peers tell it (a member's id, its address, a handoff's reason, the
message of an ERROR). Without escaping, a peer could end a log line and forge the next
one (``"x\\n[... ERROR ...] forged"``), or move a terminal's cursor with escape
sequences. Two tools:

* ``printable(value, limit)`` keeps printable characters, escapes the rest as ``repr``
  does, and bounds the length: for a field that is known to come from a peer;
* ``safe_logger(name)``: every logger of mesh is made with it (never
  ``logging.getLogger`` with a name of mesh; tests/unit/test_log_text.py checks the
  sources).
  Its filter (``OneLine``) escapes the control characters of each record's message
  once its arguments are in, so that no log line of mesh spans two lines or carries
  a terminal escape, whatever a peer sent and whichever call logs it. Tracebacks
  (``exc_info``) are left as they are; a record that means to span lines (a task's
  traceback in its failure line) says so with ``extra=MULTILINE``.

A task's exception text (its message, its traceback) is the task's, of any size: the
node logs it cut (``clipped``, ``clipped_lines``: ``LOG_KEPT`` characters of each line,
and how long it was), never a line of megabytes; the result keeps it whole.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

MAX = 120
MULTILINE = {"multiline": True}     # ``extra=`` of a record whose lines are meant
LOG_KEPT = 300          # characters of a task's exception text a log line keeps
LOG_TB_LINES = 100      # lines of a task's traceback logged at each end, at most


def printable(value: Any, limit: int = MAX) -> str:
    """``value`` as text fit for one log line: no control characters, at most ``limit``."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = repr(text)[1:-1]
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text


def clipped(text: str, limit: int = LOG_KEPT) -> str:
    """``text`` as it is, or its first ``limit`` characters and its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def clipped_lines(text: str, limit: int = LOG_KEPT, lines: int = LOG_TB_LINES) -> str:
    """``text`` (a traceback) with each line ``clipped``, and its first and last
    ``lines`` lines only, saying how many were left out between."""
    rows = text.split("\n")
    if len(rows) > 2 * lines:
        rows = [*rows[:lines], f"... ({len(rows) - 2 * lines:,} lines left out)",
                *rows[-lines:]]
    return "\n".join(clipped(row, limit) for row in rows)


class OneLine(logging.Filter):
    """Escapes the control characters (line feeds, carriage returns, ESC...) of a
    record's message, its arguments put in: one log line per record. Records that
    are printable already (nearly all) are left as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("multiline"):
            return True
        try:
            text = record.getMessage()
        except Exception:           # (a wrong format: logging reports it as it would)
            return True
        if not text.isprintable():
            record.msg, record.args = repr(text)[1:-1], None
        return True


ONE_LINE = OneLine()


def json_text(data: Any, **kwargs: Any) -> str:
    """``data`` as strict JSON (``json.dumps`` keywords in ``kwargs``), whatever peers
    put in it (a member's meta, their events, a status): inf and nan are not JSON
    (json.dumps wrote Infinity, which browsers' JSON.parse and jq refuse) and become
    null; a key that is not text (bytes) becomes its ``str``; other values their
    ``str``; what is nested deeper than JSON_DEPTH (msgpack decodes 1,024 levels, more
    than json.dumps can write) the text ``"..."``. The dashboard's API and ``meshctl
    --json`` write with it."""
    kwargs.setdefault("default", str)
    try:
        return json.dumps(data, allow_nan=False, **kwargs)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_plain(data, 0), allow_nan=False, **kwargs)


JSON_DEPTH = 100


def _plain(v: Any, depth: int) -> Any:
    """``v`` as JSON can say it: a float that is inf or nan as null, a key that is not
    a string as its ``str``, a list or map deeper than JSON_DEPTH as ``"..."``."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (dict, list, tuple)) and depth >= JSON_DEPTH:
        return "..."
    if isinstance(v, dict):
        return {k if isinstance(k, str) else str(k): _plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, depth + 1) for x in v]
    return v


def safe_logger(name: str) -> logging.Logger:
    """The logger ``name`` with the ``OneLine`` filter (added once)."""
    logger = logging.getLogger(name)
    if ONE_LINE not in logger.filters:
        logger.addFilter(ONE_LINE)
    return logger
