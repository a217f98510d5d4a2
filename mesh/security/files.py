"""A node's files are its own: the data dir 0700, the files in it 0600.

The journal holds every task's arguments and result and the clients' routing ids (a
routing id is what a node answers to); nobody else on the machine should read them.
sqlite makes its -wal and -shm files with the mode of the database file, so the
database is created 0600 before sqlite opens it; files from older versions are
made private when a node opens them.
"""
from __future__ import annotations

import os

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str) -> None:
    """Create ``path`` (and parents) if needed, and make it 0700."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    if os.stat(path).st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)


def private_file(path: str) -> None:
    """Create ``path`` empty if it does not exist, 0600; make an existing one (and the
    sqlite -wal and -shm files next to it) 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.close(fd)
    for p in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(p).st_mode & 0o777 != FILE_MODE:
                os.chmod(p, FILE_MODE)
        except FileNotFoundError:
            pass
