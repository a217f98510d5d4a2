"""The node's journal: one interface, two implementations.

What a node accepted, the state of each task and the final results, kept so that a
node answers a resend with what it already knows and (with sqlite) runs again after a
restart what it had accepted and not finished.

* :class:`mesh.node.sqlite_journal.SqliteJournal`: a sqlite file in the data dir;
  survives the node process dying (the default).
* :class:`mesh.node.memory_journal.MemoryJournal`: dictionaries in the node's memory
  (``--no-journal``): faster, bounded (see that module), gone when the node stops.

Writes are batched: the node writes what one pass of its event loop produced, and
calls :meth:`Journal.commit` before any ACK of that pass leaves (``Ledger.flush``).
Every method may raise :class:`JournalError`; the node refuses the tasks of a batch
it could not commit and logs the rest, it never stops on a journal error.
"""
from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from mesh.exceptions import MeshError

if TYPE_CHECKING:
    from mesh.config import Config


class JournalError(MeshError):
    """The journal cannot be read or written (disk full, read-only, corrupt, locked)."""


class DataDirInUse(JournalError):
    """Another node holds the data dir's lock."""


class Row(NamedTuple):
    """An accepted, unfinished task (restart recovery)."""
    task_id: str
    client: bytes
    frame: bytes
    state: str
    received: float


class DiskRow(NamedTuple):
    """A task read back from disk (mesh/node/spill.py)."""
    task_id: str
    client: bytes
    frame: bytes
    received: float
    done: bool          # it has a result already (nothing to run)
    revoked: bool       # its id was revoked
    backup: str = ""    # the node that kept its copy when it went to disk


class Stored(NamedTuple):
    state: str
    result: bytes | None     # the encoded Result when final


class Journal(abc.ABC):
    """The contract both journals keep (tests/unit/test_journal.py runs one suite
    over both). Not thread-safe: the node's event loop is its only user."""

    path: str | None = None    # the file, for status; None when nothing is on disk
    errors = 0                 # failed reads and writes since start (status)
    last_error: str | None = None     # the latest, in a user's words, and when (time.time())
    last_error_at = 0.0

    def note_error(self, text: str) -> None:
        """A read or write failed (a full or read-only disk): status says so."""
        self.errors += 1
        self.last_error, self.last_error_at = text, time.time()

    # -- writes (batched: commit() before telling anyone) -----------------------------
    @abc.abstractmethod
    def add(self, task_id: str, client: bytes, frame: bytes, received: float) -> bool:
        """Record an accepted task; False if the id is already known (held or finished)."""

    @abc.abstractmethod
    def replace(self, task_id: str, client: bytes, frame: bytes, received: float) -> None:
        """Record an accepted task over whatever an older record of that id said."""

    @abc.abstractmethod
    def started(self, task_id: str) -> None:
        """An ``acks_late=False`` task is about to start: a restart must not run it."""

    @abc.abstractmethod
    def update_frame(self, task_id: str, frame: bytes) -> None:
        """A retry: the task runs again with this Submit (retries + 1, a new eta)."""

    @abc.abstractmethod
    def finish(self, task_id: str, state: str, result: bytes, finished: float,
               peer: str = "") -> None:
        """The final result (kept until it expires; a resend of the id gets it)."""

    @abc.abstractmethod
    def remove(self, task_ids: Iterable[str]) -> None:
        """Forget unfinished tasks given back to their owners (they run elsewhere)."""

    @abc.abstractmethod
    def revoke(self, task_ids: Iterable[str], at: float) -> None:
        """Remember revoked ids."""

    @abc.abstractmethod
    def copy_result(self, task_id: str, state: str, result: bytes, finished: float,
                    peer: str) -> None:
        """The result of a task another node ran (this node is its backup:
        mesh/node/replicas.py): kept like our own results (a resend of the id and
        ``result`` lookups get it; it expires like ours), unless we have one already.
        ``peer`` is the node that has the other copy (the holder)."""

    def copy_results(self, rows: Sequence[tuple[str, str, bytes, float, str]]) -> None:
        """``copy_result`` for each ``(task_id, state, result, finished, peer)``: the
        results of one REPLICATE, in one call (one statement run for all of them)."""
        for row in rows:
            self.copy_result(*row)

    @abc.abstractmethod
    def results_of_peer(self, peer: str, after: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        """Results whose other copy is on ``peer``, past position ``after``, in order:
        ``(position, task_id, state, result)``. When ``peer`` is gone for good, they
        are copied to another node (``set_peer``)."""

    @abc.abstractmethod
    def set_peer(self, task_ids: Iterable[str], peer: str) -> None:
        """These results' other copy is on ``peer`` now."""

    @abc.abstractmethod
    def forget(self, task_id: str) -> bool:
        """Drop a finished task's result and record (AsyncResult.forget); False if
        there was no result."""

    @property
    @abc.abstractmethod
    def in_tx(self) -> bool:
        """Writes are waiting for commit()."""

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...

    @abc.abstractmethod
    def expire(self, before: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` results finished before ``before`` (and revokes
        older than it); how many results went. Commits."""

    # -- reads ------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, task_id: str) -> Stored | None: ...

    @abc.abstractmethod
    def frame(self, task_id: str) -> bytes | None:
        """The Submit a task was accepted with (its name and arguments), if kept."""

    @abc.abstractmethod
    def unfinished(self) -> list[Row]:
        """Accepted and not finished, oldest first (restart recovery)."""

    @abc.abstractmethod
    def revoked_since(self, since: float, limit: int = 100_000) -> list[tuple[str, float]]:
        """Revoked ids at or after ``since``, oldest first, the newest ``limit``."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """``{"open": unfinished tasks, "results": stored results}``."""

    def release_memory(self) -> bool:
        """Give back what the journal keeps in memory only to be faster (the node
        calls it when it has been idle for a while); False if it could not now (try
        again later). Nothing to give back by default."""
        return True

    @abc.abstractmethod
    def close(self) -> None: ...

    def claim(self, mesh: str) -> str | None:
        """Record that this journal belongs to ``mesh`` (mesh/node/data_dir.py); the
        other mesh it belongs to already, if so (nothing recorded then)."""
        return None

    # -- tasks waiting on disk only (mesh/node/spill.py): sqlite only ------------------
    spills = False     # this journal can keep queued tasks out of the node's memory

    def add_spilled(self, task_id: str, client: bytes, frame: bytes, received: float) -> bool:
        """``add``, for a task that waits on disk only (read back with ``spilled``)."""
        raise JournalError("this journal keeps no tasks on disk")

    def spilled(self, limit: int) -> list[DiskRow]:
        """The oldest ``limit`` tasks waiting on disk only, in arrival order, each in
        memory from then on."""
        return []

    def on_disk(self, task_id: str) -> bytes | None:
        """The owner's routing id of a task waiting on disk only, or None."""
        return None

    def take_from_disk(self, task_id: str) -> DiskRow | None:
        """One task waiting on disk only, in memory from then on."""
        return None

    def set_client(self, task_id: str, client: bytes) -> None:
        """A task waiting on disk only is resent through another link."""

    def set_backups(self, rows: Sequence[tuple[str, str]]) -> None:
        """``(backup, task_id)``: the node that kept each copy when it went to disk."""

    def disk_senders(self) -> list[tuple[bytes, int, int]]:
        """``(owner, tasks, bytes)`` of the tasks waiting on disk only."""
        return []

    def backup_boots(self) -> dict[str, str]:
        """``backup -> boot id`` its copies of the tasks on disk were made to."""
        return {}

    def set_backup_boot(self, backup: str, boot: str) -> None:
        """Record ``backup_boots``."""

    def disk_walk(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """``(position, task_id, backup)`` of the next ``limit`` tasks waiting on disk
        only after position ``after``, in arrival order."""
        return []

    def disk_frames(self, positions: Sequence[int], revoked: bool = True
                    ) -> list[tuple[str, bytes]]:
        """``(task_id, frame)`` of those rows still waiting on disk, unfinished (and
        not revoked, with ``revoked`` False)."""
        return []

    def disk_last(self) -> int:
        """The position of the newest task waiting on disk only (0: none)."""
        return 0

    def disk_tasks(self) -> list[tuple[str, bytes, int]]:
        """``(task id, owner, bytes)`` of the tasks waiting on disk only, unfinished."""
        return []

    # -- copies of other nodes' tasks kept on disk (mesh/node/copy_journal.py) ---------
    def copy_holders(self, task_ids: Sequence[str]) -> list[tuple[str, str]]:
        """``(task id, holder)`` of the copies of ``task_ids`` on disk here."""
        return []

    def keep_copies(self, rows: Sequence[tuple[str, str, bytes, float]]) -> None:
        """``(task_id, holder, frame, received)``: copies kept on disk."""
        raise JournalError("this journal keeps no copies on disk")

    def drop_copies(self, task_ids: Iterable[str]) -> list[tuple[str, str]]:
        """Forget these ids' copies on disk (every holder's); ``(task_id, holder)`` of
        those there were."""
        return []

    def drop_copy_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """Forget these ``(task_id, holder)`` copies on disk; those there were."""
        return []

    def copies_by_holder(self, holder: str, limit: int) -> list[tuple[str, bytes, float]]:
        """The oldest ``limit`` copies of ``holder``'s tasks on disk."""
        return []

    def copy_counts(self) -> dict[str, int]:
        """``holder -> copies on disk``."""
        return {}

    def clear_copies(self) -> int:
        """Forget every copy on disk; how many there were. Commits."""
        return 0


def open_journal(config: "Config") -> Journal:
    """The journal ``config`` asks for: sqlite in the data dir, or in memory."""
    if config.journal:
        from mesh.node.sqlite_journal import SqliteJournal
        return SqliteJournal(config.data_path, durable=config.journal_fsync)
    from mesh.node.memory_journal import MemoryJournal
    return MemoryJournal()
