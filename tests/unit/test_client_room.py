"""The client's waiting room (mesh/client/room.py) with the client's own placement
(``Links._pick``) and sending bookkeeping, without sockets: which node a task goes to
when nodes are full, in which order waiting tasks go, and what a refusal, a result
and the once-a-second offer do. The same with real nodes: tests/integration/
test_e2e_room.py."""
from __future__ import annotations

import random
from typing import Any

from mesh.client.links import Links, NodeLink
from mesh.client.room import PROBE, WaitingRoom, hold, let_go, quota_of
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
        hold(slot, link)
        self.sent.append((slot.task_id, link.endpoint))

    def submit(self, tid: str, frame: bytes = b"frame") -> Slot:
        slot = Slot(tid, frame, name="t", queue="celery")
        self._slots[tid] = slot
        self._send(slot, self._pick(slot=slot))
        return slot

    def refuse(self, tid: str) -> None:
        slot = self._slots[tid]
        self._on_quota(slot, self.links[slot.node or ""], SAID)

    def finish(self, tid: str) -> None:
        slot = self._slots.pop(tid)
        let_go(slot)
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


def _said_quota(c: _Client, tasks: int, size: int = 1 << 20) -> None:
    """Every node's members entry said this quota (what Members._apply_members reads)."""
    for link in c.links.values():
        link.quota_tasks, link.quota_bytes = quota_of({"quota": [tasks, size]})


def _held(c: _Client) -> dict[str, int]:
    return {ep: n.held for ep, n in c.links.items()}


def test_a_node_that_said_its_quota_is_sent_no_more_than_it_allows() -> None:
    c = _Client(["a", "b"])
    _said_quota(c, 3)
    for i in range(10):
        c.submit(f"t{i}")
    assert _held(c) == {"a": 3, "b": 3}           # each node up to its quota, no further
    assert c.waiting_for_room == 4 and c.waited == 4 and c.quota_refusals == 0
    assert [s.task_id for s in c._room] == ["t6", "t7", "t8", "t9"]
    first_at_a = next(t for t, ep in c.sent if ep == "a")
    c.finish(first_at_a)                          # room for one at a, by our count
    assert c.sent[-1] == ("t6", "a") and c.waiting_for_room == 3
    assert _held(c) == {"a": 3, "b": 3} and c.links["a"].credit == 0
    for t in [t for t, _ in c.sent if t not in ("t7", "t8", "t9")]:
        if t in c._slots and c._slots[t].node is not None:
            c.finish(t)
    assert c.waiting_for_room == 0 and sorted(t for t, _ in c.sent[-3:]) == ["t7", "t8", "t9"]
    assert not c._full and c.quota_refusals == 0


def test_bytes_count_too_and_a_node_holding_nothing_of_ours_takes_any_task() -> None:
    c = _Client(["a"])
    _said_quota(c, 100, size=1024)
    c.submit("big", b"x" * 2000)                  # larger than the quota: a holds nothing
    assert c.sent == [("big", "a")] and c.links["a"].held_bytes == 2000
    c.submit("small", b"x" * 10)                  # nothing more while it holds 2000 bytes
    assert c.waiting_for_room == 1
    c.finish("big")
    assert c.sent[-1] == ("small", "a") and c.links["a"].held_bytes == 10
    c.submit("fits", b"x" * 1000)                 # 10 + 1000 <= 1024
    c.submit("too-much", b"x" * 20)               # 1030 > 1024
    assert c.sent[-1] == ("fits", "a") and [s.task_id for s in c._room] == ["too-much"]


def test_a_refusal_is_handled_as_today_whatever_our_count_says() -> None:
    """Counts may disagree (tasks handed to the node, a node restarted): the node's
    refusal wins, and room comes back one result at a time, as for an older node."""
    c = _Client(["a"])
    _said_quota(c, 5)
    for i in range(3):
        c.submit(f"t{i}")
    c.refuse("t2")                                # a holds more than we know of
    assert c.waiting_for_room == 1 and c.quota_refusals == 1 and _held(c) == {"a": 2}
    c.submit("t3")                                # by our count a has room; not after that
    assert c.waiting_for_room == 2 and c.sent[-1] == ("t2", "a")
    c.finish("t0")                                # one result, one task: the first waiting
    assert c.sent[-1] == ("t2", "a") and c.waiting_for_room == 1
    assert [s.task_id for s in c._room] == ["t3"]


def test_the_count_follows_a_task_that_moves_and_ends_with_it() -> None:
    c = _Client(["a", "b"])
    slot = c.submit("t")
    was = c.links[slot.node or ""]
    other = c.links["b" if was.endpoint == "a" else "a"]
    hold(slot, other)                             # MOVED: another node holds it now
    assert (was.held, was.held_bytes, other.held, other.held_bytes) == (0, 0, 1, 5)
    hold(slot, other)                             # sent again there (a reconnect): once
    assert other.held == 1
    let_go(slot)
    let_go(slot)                                  # (twice is harmless)
    assert (other.held, other.held_bytes) == (0, 0)


def test_a_quota_said_badly_is_no_quota() -> None:
    assert quota_of({"quota": [1000, 2048]}) == (1000, 2048)
    for bad in ({}, {"quota": None}, {"quota": [1000]}, {"quota": [True, 5]},
                {"quota": [0, 5]}, {"quota": "1000"}, None, [1, 2]):
        assert quota_of(bad) == (0, 0), bad


def test_a_node_full_by_our_count_is_offered_one_anyway_only_once_nothing_finishes_there() -> None:
    """While results come from it, our count says when it has room (no offer past it,
    which it would refuse); a second without one, and it gets one anyway (the counts
    may disagree: every wait ends)."""
    c = _Client(["a"])
    _said_quota(c, 2)
    for i in range(5):
        c.submit(f"t{i}")
    assert c.waiting_for_room == 3
    c.finish("t0")                                # t2 goes: room by our count
    assert c.sent[-1] == ("t2", "a") and c.waiting_for_room == 2
    sent = len(c.sent)
    c._probe(c._probe_at)                         # a result came within the second: no offer
    assert len(c.sent) == sent and c.links["a"].held == 2
    c._probe(c._probe_at)                         # a second later, none since: one anyway
    assert c.sent[sent:] == [("t3", "a")] and c.links["a"].held == 3
    assert c.quota_refusals == 0


def test_the_last_waiting_task_offered_and_refused_again_says_nothing_new(caplog: Any) -> None:
    # found in review: a node at its quota running long tasks was offered the one task
    # left every second; the room emptied (INFO "every task ... has gone"), the node
    # refused it (a new spell: WARNING): two lines a second for as long as it lasted.
    # The spell ends (its INFO) only at the next second, if nothing waits then.
    caplog.set_level("INFO", logger="mesh.client")
    c = _Client(["a"])
    c.submit("held")
    c.submit("w0")
    c.refuse("w0")
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    for _ in range(3):                    # offered, refused again, each second
        c._probe(c._probe_at)
        assert c.waiting_for_room == 0 and c.sent[-1] == ("w0", "a")
        c.refuse("w0")
        assert c.waiting_for_room == 1
    assert [r.levelname for r in caplog.records] == ["WARNING"], caplog.text
    c._probe(c._probe_at)                 # taken at last (no refusal this time)
    assert c.waiting_for_room == 0
    c._probe(c._probe_at)                 # still nothing waits a second later: over
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"], caplog.text
    c.submit("n1")                        # a is open again: no wait
    assert c.sent[-1] == ("n1", "a") and c.waiting_for_room == 0
