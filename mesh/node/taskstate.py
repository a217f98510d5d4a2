"""What a node tells about a task before and after it finishes, beyond its RESULT:
its reported state (STATE messages: ``track_started``, ``update_state``), the answer
to a ``result`` lookup (state, meta, and the Submit it was accepted with, for
``AsyncResult.name/args/kwargs`` in any process), and ``forget``.

Functions of the node, kept apart from it so that node.py only calls them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.node.journal import JournalError
from mesh.security.text import safe_logger
from mesh.wire.control import BadArgs
from mesh.wire.protocol import State, encode

if TYPE_CHECKING:
    from mesh.node.ledger import Entry
    from mesh.node.node import Node

log = safe_logger("mesh.node")
REPLY_HEADROOM = 4096        # bytes of a lookup's answer besides its frames (ids, names)


def progress(node: "Node", entry: "Entry", state: str, meta: bytes | None) -> None:
    """The running task reported ``state``: remember it for lookups (other processes
    ask), and tell its owner (a STATE message)."""
    entry.progress = (state, meta)
    node.front.reply(entry.client, encode(State(entry.task_id, state, meta, node.name)))


def _with_submit(node: "Node", out: dict[str, Any], frame: bytes | None, used: int) -> dict[str, Any]:
    """Add the Submit frame when the reply stays well under the message size limit."""
    if frame is not None and used + len(frame) < node.config.max_message_size - REPLY_HEADROOM:
        out["submit"] = frame
    return out


def held_state(node: "Node", entry: "Entry", state: str) -> dict[str, Any]:
    """A ``result`` lookup of a task this node holds: its latest reported state
    (a custom one such as PROGRESS, with its meta) while it runs."""
    out: dict[str, Any] = {"task_id": entry.task_id, "state": state}
    used = 0
    # a running task's own state; a retry's cause while it waits to run again
    if entry.progress is not None and (entry.progress[0] == states.RETRY) != bool(entry.started):
        out["state"], meta = entry.progress
        if meta is not None:
            out["meta"] = meta
            used = len(meta)
    return _with_submit(node, out, entry.frame, used)


def finished_state(node: "Node", task_id: str, state: str, result: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"task_id": task_id, "state": state, "result": result}
    frame = None
    try:
        frame = node.journal.frame(task_id)
    except JournalError as e:
        log.error("journal: cannot read task %s: %s", task_id, e)
    return _with_submit(node, out, frame, len(result))


def lookup(node: "Node", ident: bytes, task_id: str, watch: bool) -> dict[str, Any]:
    """The answer to a ``result`` lookup (the ``result`` control command): what the
    ledger knows (held, finished), else, when this node keeps the task's copy as its
    holder's backup, RECEIVED: the mesh has the task, and this node runs it if its
    holder dies. (An UNKNOWN here told a web app asking while the holder was being
    killed that the task did not exist, though it was about to run here.) With
    ``watch`` the asker is told the result if the task runs here (the ledger's wait
    for a task not here yet). Made to fit the max_message_size the asker said, if it
    said one below this node's (``fit``); an asker that said none (an older client)
    is answered as before, the stored result always in."""
    answer = node.ledger.task_state(ident, task_id, watch)
    said = node.front.said_limit(ident)
    if answer["state"] != states.UNKNOWN or "result" in answer:
        return fit(answer, said) if said else answer
    replicas = getattr(node, "replicas", None)
    if replicas is None or not replicas.copies.has(task_id):
        return answer
    copy = replicas.copies.frames.get(task_id)
    answer = _with_submit(node, {"task_id": task_id, "state": states.RECEIVED},
                          copy[0] if copy is not None else None, 0)
    return fit(answer, said) if said else answer


def fit(answer: dict[str, Any], limit: int) -> dict[str, Any]:
    """A lookup's answer for an asker that reads frames of ``limit`` bytes at most:
    without the SUBMIT frame, then without the stored result (``result_size`` says how
    big it is: the asker fails it, saying so; it stays stored here), then without the
    meta, until it fits."""
    room = limit - min(REPLY_HEADROOM, limit // 4)
    sizes = {k: len(v) for k in ("submit", "result", "meta") if type(v := answer.get(k)) is bytes}
    if sum(sizes.values()) <= room:
        return answer
    answer = dict(answer)
    for key, size in list(sizes.items()):       # (in that order)
        if sum(sizes.values()) <= room:
            break
        del answer[key], sizes[key]
        if key == "result":
            answer["result_size"] = size
    return answer


def forget(node: "Node", task_ids: list[str]) -> dict[str, list[str]]:
    """Drop finished tasks' results; tasks still held here are named under ``running``
    and keep theirs."""
    forgotten, running = [], []
    for tid in task_ids:
        if tid in node.ledger.held:
            running.append(tid)
            continue
        try:
            if node.journal.forget(tid):
                forgotten.append(tid)
        except JournalError as e:
            raise BadArgs(f"node {node.name} cannot write its journal: {e}") from e
    return {"forgotten": forgotten, "running": running}
