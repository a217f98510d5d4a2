"""The holder's wait for copies: replies that wait for a backup's confirmation go
after COPY_TIMEOUT all the same (one copy for now), found without walking every
task in flight (mesh/node/replicas.py)."""
from __future__ import annotations

import functools

from mesh.node.replicas import COPY_TIMEOUT, Replicas


def test_only_waits_older_than_the_timeout_give_up_oldest_first() -> None:
    r = Replicas()
    opened: list[str] = []
    for tid, since in [("a", 0.0), ("b", 0.5), ("c", 4.0), ("d", 5.5)]:
        r.gates[tid] = functools.partial(opened.append, tid)
        r._gate_since[tid] = since
    r._give_up(5.0 + COPY_TIMEOUT / 2)
    assert opened == ["a", "b", "c"]
    assert r.single_copy == 3
    assert list(r.gates) == ["d"] and list(r._gate_since) == ["d"]
    r._give_up(5.5 + COPY_TIMEOUT)           # exactly the timeout: not yet
    assert opened == ["a", "b", "c"]
    r._give_up(5.6 + COPY_TIMEOUT)
    assert opened == ["a", "b", "c", "d"] and not r.gates


class _Intake:
    def __init__(self) -> None:
        self.acks: list[tuple[bytes, str]] = []

    def ack_later(self, ident: bytes, task_id: str) -> None:
        self.acks.append((ident, task_id))


class _Front:
    def __init__(self) -> None:
        self.replies: list[tuple[bytes, bytes]] = []

    def reply(self, ident: bytes, frame: bytes) -> None:
        self.replies.append((ident, frame))


class _Node:
    def __init__(self) -> None:
        self.intake = _Intake()
        self.front = _Front()


def test_what_waits_for_a_copy_runs_once_it_is_confirmed_in_order() -> None:
    """One ACK waiting is kept as the owner's routing id (no list, no closure per
    task); more waiters make a list; all run in order when the copy is confirmed;
    with no gate, at once."""
    r = Replicas()
    node = _Node()
    r.node = node  # type: ignore[assignment]
    ran: list[str] = []
    r._gate("t", 1.0)
    r._gate("u", 1.0)
    r.after_copy("t", b"owner")
    assert r.gates == {"t": b"owner", "u": None} and node.intake.acks == []
    r.after_copy("t", lambda: ran.append("result"))
    r.reply("t", b"watcher", b"RESULT")
    r.after_copy("t", b"other")
    r._open("t")
    assert node.intake.acks == [(b"owner", "t"), (b"other", "t")] and ran == ["result"]
    assert node.front.replies == [(b"watcher", b"RESULT")]
    r._open("u")                                # nothing waited
    assert not r.gates and not r._gate_since
    r.after_copy("v", b"owner")                 # no gate: at once
    r.after_copy("v", lambda: ran.append("now"))
    r.reply("v", b"watcher", b"R2")
    assert node.intake.acks[-1] == (b"owner", "v") and ran == ["result", "now"]
    assert node.front.replies[-1] == (b"watcher", b"R2")
