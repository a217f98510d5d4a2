"""Peer-supplied text made safe for logs: member ids, addresses, reasons.

A node logs what peers tell it (a member's id, its address). Without escaping, a
peer could end a log line and forge the next one (``"x\\n[... ERROR ...] forged"``),
or move a terminal's cursor with escape sequences. ``printable`` keeps printable
characters, escapes the rest as ``repr`` does, and bounds the length.
"""
from __future__ import annotations

from typing import Any

MAX = 120


def printable(value: Any, limit: int = MAX) -> str:
    """``value`` as text fit for one log line: no control characters, at most ``limit``."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = repr(text)[1:-1]
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text
