"""Helpers of the workflows component (mesh/node/workflows.py): what an errback is told
of the task that failed, exceptions decided by the node, and the ``wf.states`` and
``wf.progress`` control commands (docs/protocol.md, 5.6 and 5.7)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh import states
from mesh.exceptions import DecodeError
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, decode

if TYPE_CHECKING:
    from mesh.node.node import Node


def frame_task_id(frame: bytes) -> str | None:
    try:
        res = decode(frame)
    except DecodeError:
        return None
    return res.task_id if isinstance(res, Result) else None


def mesh_exc(name: str, message: str) -> dict[str, Any]:
    return {"type": name, "module": "mesh.exceptions", "message": message,
            "args": codec.dumps([message])}


def exc_repr(exc: dict[str, Any] | None) -> str:
    exc = exc or {}
    return f"{exc.get('type', 'Exception')}({str(exc.get('message', ''))!r})"


def request_of(tid: str, name: str, sub_frame: bytes | None, headers: dict[str, Any],
             hostname: str) -> dict[str, Any]:
    """What an errback's ``request`` says of the task that failed (plain data)."""
    args: Any = None
    kwargs: Any = None
    retries = 0
    if sub_frame:
        try:
            sub = decode(sub_frame)
            if isinstance(sub, Submit):
                args, kwargs = codec.load_call(sub.payload)
                retries = sub.retries
        except Exception:
            pass
    wf = headers.get("wf") if isinstance(headers.get("wf"), dict) else {}
    rep = wf.get("report") if isinstance(wf, dict) else None
    return {"id": tid, "task": name, "args": args, "kwargs": kwargs, "retries": retries,
            "root_id": headers.get("root_id"), "parent_id": headers.get("parent_id"),
            "group": rep[0] if isinstance(rep, list) and rep else None, "hostname": hostname}


def register(node: "Node", name: str) -> None:
    from mesh.node.commands import Command
    handler = {"wf.states": _states, "wf.progress": _progress}[name]
    node.control.commands.add(Command(name, "inspect", handler, dict, handler.__doc__ or "",
                                      builtin=True))


def _states(state: Any, req: dict[str, Any]) -> dict[str, Any]:
    """The state of each of ``ids`` this node knows: held (RECEIVED, STARTED, RETRY)
    or finished (from the journal). Unknown ids are left out."""
    ids = req.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 100_000:
        raise ValueError("wf.states: 'ids' must be a list of at most 100,000 task ids")
    node = state.node
    out: dict[str, str] = {}
    for tid in ids:
        st = node.ledger.task_state(b"", tid, False)["state"]
        if st != states.UNKNOWN:
            out[tid] = st
    return {"states": out}


def _progress(state: Any, req: dict[str, Any]) -> dict[str, Any]:
    """A group coordinated here: how many members ended, succeeded, and its size."""
    gid = req.get("id")
    if not isinstance(gid, str):
        raise ValueError("wf.progress: 'id' must be a group id")
    out: dict[str, Any] = state.node.workflows.groups.progress(gid)
    return out
