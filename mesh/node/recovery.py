"""Recovery: after a restart, run again what the journal holds unfinished.

A task the journal shows as accepted and not finished is held again and handed to
the pool, unless another node took it over while this node was down (the mesh is
asked first, a few seconds at most: mesh/node/reclaim.py); one that had started with ``acks_late=False`` fails with WorkerLostError
instead (it may have run: never twice); one whose task is no longer registered fails
with NotRegistered. Replies go to the owners' routing ids, which clients keep.

``meshnode --purge`` (Celery's: the queued messages are deleted as the worker starts)
finishes ``REVOKED``, instead of running them, the recovered tasks the mesh's answer
leaves to this node (its owner's wait ends in TaskRevokedError, its backup drops its
copy), those waiting on disk too (revoked in the journal: they finish REVOKED when
read back), and logs how many (``purge_recovered``). Not purged: what another node
took over while this one was down (it is that node's now), a group or chord
coordinated here (its members are tasks of their own), a task that had started with
``acks_late=False`` (it fails as above), and copies this node keeps for other nodes
(their tasks, not its queue).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mesh import states
from mesh.exceptions import DecodeError
from mesh.node.component import Component, NodeStartError
from mesh.node.journal import JournalError
from mesh.node.ledger import Entry
from mesh.security.text import safe_logger
from mesh.wire.protocol import Submit, decode
from mesh.workflow.ids import GROUP, REPLACED_BY

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.node")


class Recovery(Component):
    name = "recovery"
    requires = ("journal", "front", "pool")

    async def start(self, node: "Node") -> None:
        recover(node)


def recover(node: "Node") -> int:
    """Hold again what the journal has unfinished; how many tasks it had."""
    journal, ledger = node.journal, node.ledger
    try:
        rows = journal.unfinished()
    except JournalError as e:
        raise NodeStartError(f"cannot read the journal: {e}") from e
    lost = unregistered = groups = dropped = 0
    node.reclaim.purge = node.config.purge     # (decided once the mesh answered)
    for row in rows:
        try:
            msg = decode(row.frame)
        except DecodeError as e:
            log.error("journal: task %s cannot be read back (%s): dropped", row.task_id, e)
            journal.remove([row.task_id])
            dropped += 1
            continue
        assert isinstance(msg, Submit)
        task = node.app.tasks.get(msg.name)
        limit = msg.time_limit or (task.options.time_limit if task else None) or node.config.time_limit
        entry = Entry(row.task_id, msg.name, row.client, row.frame, msg.priority, msg.eta,
                      msg.expires, limit, task.options.acks_late if task else True)
        entry.received = row.received
        if msg.name == GROUP or REPLACED_BY in msg.headers:
            # a group's coordinator, a replaced task: coordinated here again
            groups += 1
            ledger.accept(entry)
        elif task is None:
            unregistered += 1
            ledger.task_failed(entry, "NotRegistered", f"task {msg.name!r} is no longer "
                               f"registered on node {node.name}")
        elif row.state == states.STARTED:    # acks_late=False: it may have run; never twice
            lost += 1
            ledger.task_failed(entry, "WorkerLostError", f"node {node.name} stopped while task "
                               f"{row.task_id} ran; it has acks_late=False, so it is not run again")
        else:
            node.reclaim.hold(entry)      # run unless another node took it over meanwhile
    node.reclaim.start()                  # (mesh/node/reclaim.py)
    if rows:
        # the reclaim's own line ("of N recovered task(s) ...") counts those held here
        log.info("journal: recovered %d unfinished task(s): %d held until the mesh says "
                 "which run here, %d group(s) coordinated here again, %d failed (%d started "
                 "with acks_late=False, %d no longer registered), %d unreadable",
                 len(rows), len(rows) - groups - lost - unregistered - dropped, groups,
                 lost + unregistered, lost, unregistered, dropped)
    node.front.schedule_flush()   # the ledger hands them to the pool once the loop runs
    return len(rows)


def purge_recovered(node: "Node", entries: list[Entry], on_disk: list[str],
                    elsewhere: int) -> int:
    """--purge, once the mesh said which recovered tasks run here: finish those REVOKED
    (``entries`` in memory; ``on_disk``: revoked in the journal, they finish REVOKED as
    they are read back: mesh/node/spill.py), and say how many. How many of those on
    disk were revoked (none if the journal failed: they run)."""
    for entry in entries:
        node.ledger.task_failed(entry, "TaskRevokedError",
                                f"task {entry.task_id} was purged (meshnode --purge)",
                                states.REVOKED, logged=False)
    if on_disk:
        try:
            node.journal.revoke(on_disk, time.time())
        except JournalError as e:
            log.error("--purge: the %d task(s) waiting on disk could not be revoked, they "
                      "will run: %s", len(on_disk), e)
            on_disk = []
    log.warning("--purge: %d task(s) this node held unfinished were purged (%d waiting on "
                "disk): they finish REVOKED and do not run%s", len(entries) + len(on_disk),
                len(on_disk), f"; {elsewhere} finished or taken over on other nodes while "
                "this one was down were left to them" if elsewhere else "")
    return len(on_disk)
