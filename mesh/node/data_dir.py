"""Which data dir a node uses, and whose journal is in it.

A journal belongs to one mesh (its tasks are that mesh's tasks: a node of another app
would find their names unregistered and fail them). The journal records the mesh of
the first node that opens it (meta ``mesh``), and a node of another mesh refuses to
start on it with the reason (``Storage``, mesh/node/executor.py).

The default data dir, when neither ``--data-dir`` nor ``--name`` is given, is named
by host, mesh and port (``HOST-MESH-portPORT``), so a tutorial served on port 7700
and then one's own app on the same port each keep their own. Before it was named by
host and port only (``HOST-portPORT``): a journal there of this mesh, or of no
recorded mesh (written before journals recorded it), is still used, so an upgrade
never leaves unfinished tasks behind in a dir nobody opens.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
from typing import TYPE_CHECKING

from mesh.node.sqlite_journal import FILENAME
from mesh.security.text import safe_logger

if TYPE_CHECKING:
    from mesh.config import Config

log = safe_logger("mesh.node")

MESH_KEY = "mesh"       # the journal's meta key naming its mesh


def journal_mesh(directory: str) -> str | None:
    """The mesh the journal in ``directory`` records, None when it records none (or
    cannot be read: the node opening it says why)."""
    try:
        db = sqlite3.connect(f"file:{os.path.join(directory, FILENAME)}?mode=ro", uri=True,
                             timeout=2.0)
        try:
            row = db.execute("SELECT value FROM meta WHERE key=?", (MESH_KEY,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        log.debug("journal: cannot read the mesh of the journal in %s: %s", directory, e)
        return None
    return None if row is None else str(row[0])


def settle(config: "Config", mesh: str) -> "Config":
    """``config`` with the data dir a node of ``mesh`` uses (the module's docstring)."""
    if config.data_dir or config.name or not config.journal:
        return config
    path, legacy = config.mesh_data_path(mesh), config.data_path
    if (not os.path.exists(path) and os.path.exists(os.path.join(legacy, FILENAME))
            and journal_mesh(legacy) in (None, mesh)):
        log.info("journal: using %s, the data dir of this port before data dirs were "
                 "named by mesh too", legacy)
        path = legacy
    return dataclasses.replace(config, data_dir=path)
