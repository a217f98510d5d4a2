"""The client's waiting room (mesh/client/room.py) with the client's own placement
(``Links._pick``) and sending bookkeeping, without sockets: which node a task goes to
when nodes are full, in which order waiting tasks go, and what a refusal, a result
and the once-a-second offer do. The same with real nodes: tests/integration/
test_e2e_room.py."""
from __future__ import annotations

import random
from typing import Any

from mesh.client.links import Links, NodeLink
from mesh.client.room import PROBE, WaitingRoom
from mesh.client.routes import Routing
from mesh.result import Slot

SAID = "node n holds 10 tasks from this sender already, its limit (quota_tasks, --quota-tasks)"


class _Client(Links, Routing, WaitingRoom):
    """The client's routing mixins over links without sockets: ``sent`` records what
    the I/O thread would send, with the bookkeeping of ``Client._send``."""

    def __init__(self, endpoints: list[str]) -> None:
        self._init_room()
        self.mesh = None
        self._slots: dict[str, Slot] = {}
        self._rng = random.Random(7)
        self._fits: dict[tuple[str, str], list[NodeLink]] = {}
        self.seeds = list(endpoints)
        self.links = {ep: NodeLink(ep, None, None, ep.encode()) for ep in endpoints}  # type: ignore[arg-type]
        self._placeable = list(self.links.values())
        self.sent: list[tuple[str, str]] = []

    def _send(self, slot: Slot, link: Any) -> None:
        if link is None:
            return
        link.inflight += 1
        if link.credit:
            link.credit -= 1
        slot.node = link.endpoint
        self.sent.append((slot.task_id, link.endpoint))

    def submit(self, tid: str) -> Slot:
        slot = Slot(tid, b"frame", name="t", queue="celery")
        self._slots[tid] = slot
        self._send(slot, self._pick(slot=slot))
        return slot

    def refuse(self, tid: str) -> None:
        slot = self._slots[tid]
        self._on_quota(slot, self.links[slot.node or ""], SAID)

    def finish(self, tid: str) -> None:
        slot = self._slots.pop(tid)
        link = self.links[slot.node or ""]
        self._forget_one(link, True)
        if self._full:
            self._room_freed(link)


def test_a_full_node_gets_nothing_and_what_it_refused_goes_to_a_node_with_room() -> None:
    c = _Client(["a", "b"])
    c.links["b"].busy = 5                 # a looks emptier: the first task goes there
    c.submit("t1")
    assert c.sent == [("t1", "a")]
    c.refuse("t1")                        # a is full: t1 goes to b at once
    assert c.sent[-1] == ("t1", "b") and c.waiting_for_room == 0
    for i in range(5):                    # while a is full, b gets everything
        c.submit(f"n{i}")
    assert {ep for _, ep in c.sent[2:]} == {"b"}


def test_tasks_wait_in_order_and_each_result_lets_the_longest_waiting_go() -> None:
    c = _Client(["a"])
    c.submit("held")
    for i in range(3):
        c.submit(f"w{i}")
    for i in range(3):                    # a refuses them: full
        c.refuse(f"w{i}")
    assert c.waiting_for_room == 3 and c.waited == 3 and c.quota_refusals == 3
    c.submit("late")                      # joins the end of the room; a is not asked
    assert c.waiting_for_room == 4 and c.sent[-1] == ("w2", "a")
    c.finish("held")                      # room for one: the first that waited
    assert c.sent[-1] == ("w0", "a") and c.waiting_for_room == 3
    c.finish("w0")
    assert c.sent[-1] == ("w1", "a")
    c.finish("w1")
    c.finish("w2")
    assert [t for t, _ in c.sent[-2:]] == ["w2", "late"] and c.waiting_for_room == 0
    assert not c._full                    # the room is empty: nobody is full any more
    c.submit("free")
    assert c.sent[-1] == ("free", "a")


def test_the_offer_once_a_second_sends_one_to_each_full_node_and_all_to_one_with_room() -> None:
    c = _Client(["a"])
    c.submit("held")
    for i in range(4):
        c.submit(f"w{i}")
    for i in range(4):
        c.refuse(f"w{i}")
    sent = len(c.sent)
    c._probe(c._probe_at - 0.001)         # not yet
    assert len(c.sent) == sent
    c._probe(c._probe_at)                 # one to the full node, the first waiting
    assert c.sent[sent:] == [("w0", "a")] and c.waiting_for_room == 3
    c.refuse("w0")                        # still full: it waits again (at the end)
    assert c.waiting_for_room == 4
    c.links["b"] = NodeLink("b", None, None, b"b")  # type: ignore[arg-type]
    c._update_placeable()                 # a node joined
    sent = len(c.sent)
    c._probe(c._probe_at + PROBE)         # b has room: everything waiting goes (a: one)
    assert c.waiting_for_room == 0
    assert sorted(t for t, _ in c.sent[sent:]) == ["w0", "w1", "w2", "w3"]


def test_a_task_that_finds_no_room_when_let_go_stays_first() -> None:
    c = _Client(["a"])
    c.submit("held")
    for i in range(2):
        c.submit(f"w{i}")
    for i in range(2):
        c.refuse(f"w{i}")
    c.links["a"].credit = 0
    c._release(1)                         # no node has room: w0 stays first, not last
    assert list(s.task_id for s in c._room) == ["w0", "w1"] and c.waited == 2
