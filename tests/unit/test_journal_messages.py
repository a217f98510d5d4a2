"""What the journal says when sqlite fails: the operator reads these in the node's log
and the submitter in its MeshError, so each names the cause and the file."""
from __future__ import annotations

import sqlite3

import pytest

from mesh.node.sqlite_journal import _explain


@pytest.mark.parametrize("sqlite_text,fragment", [
    ("database or disk is full", "is full"),
    ("attempt to write a readonly database", "is read-only"),
    ("database is locked", "is locked by another process"),
    ("disk I/O error", "/data/journal.sqlite3: disk I/O error"),
])
def test_sqlite_errors_are_explained_with_the_path(sqlite_text: str, fragment: str) -> None:
    text = _explain(sqlite3.OperationalError(sqlite_text), "/data/journal.sqlite3")
    assert fragment in text and "/data/journal.sqlite3" in text and sqlite_text in text
