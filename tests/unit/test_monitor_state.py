"""mesh.monitor without a network: State from synthetic events, the seq gap logic,
and the checks on event bodies from the wire."""
from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest

from mesh import states
from mesh.monitor.receiver import (
    EVENTS_LOST,
    REJECTED,
    EventReceiver,
    SeqTracker,
    State,
    parse_event,
    seq_gap,
)


class FakeNow:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def ev(type_: str, node: str = "a", clock: int = 1, ts: float = 100.0, seq: int = 1,
       **fields: Any) -> dict[str, Any]:
    return {"type": type_, "node": node, "clock": clock, "timestamp": ts, "seq": seq, **fields}


# ---- seq gaps -------------------------------------------------------------------------

@pytest.mark.parametrize("last, seq, missed", [
    (None, 1, 0), (None, 57, 0),       # the first one seen: a baseline, whatever its number
    (4, 5, 0), (4, 6, 1), (4, 104, 99),
    (4, 4, -1), (40, 1, -1), (40, 3, -1),   # did not move forward: a restart, not a gap
])
def test_seq_gap(last: int | None, seq: int, missed: int) -> None:
    assert seq_gap(last, seq) == missed


def test_seq_tracker_is_per_node_and_type_and_forgets_a_restarted_node() -> None:
    t = SeqTracker()
    assert t.check("a", "task-received", 1) == 0
    assert t.check("a", "task-started", 7) == 0          # another type: its own counter
    assert t.check("b", "task-received", 3) == 0          # another node too
    assert t.check("a", "task-received", 2) == 0
    assert t.check("a", "task-received", 5) == 2
    assert t.check("a", "task-received", 1) == 0          # restarted: counts from 1 again
    assert t.check("a", "task-received", 3) == 1
    t.forget("a")
    assert t.check("a", "task-received", 9) == 0          # a new baseline after forget
    assert t.check("b", "task-received", 5) == 1          # b untouched


class _FakeReceiver(EventReceiver):
    """The receiver's frame handling without sockets or discovery."""

    def __init__(self) -> None:        # deliberately skips the network setup
        import collections
        self.lost = self.malformed = self.received = 0
        self._pids = {}
        self._seq = SeqTracker()
        self._pending = collections.deque()

    def feed(self, topic: bytes, body: bytes | dict[str, Any]) -> list[dict[str, Any]]:
        raw = body if isinstance(body, bytes) else msgpack.packb(body, use_bin_type=True)
        self._take([topic, raw])
        out = list(self._pending)
        self._pending.clear()
        return out


def test_receiver_delivers_events_lost_before_the_event_after_a_gap() -> None:
    r = _FakeReceiver()
    assert [e["seq"] for e in r.feed(b"task-received", ev("task-received", seq=3, uuid="t"))] == [3]
    out = r.feed(b"task-received", ev("task-received", seq=7, uuid="u"))
    assert [e["type"] for e in out] == [EVENTS_LOST, "task-received"]
    assert out[0]["missed"] == 3 and out[0]["of_type"] == "task-received" and out[0]["node"] == "a"
    assert (out[0]["first_seq"], out[0]["last_seq"]) == (4, 6)
    assert r.lost == 3 and r.received == 2


def test_receiver_treats_a_new_node_pid_as_a_restart_not_a_gap() -> None:
    r = _FakeReceiver()
    r.feed(b"node-heartbeat", ev("node-heartbeat", seq=1, pid=100))
    r.feed(b"task-started", ev("task-started", seq=50, uuid="t"))
    # same name, new process; another subscriber kept it publishing, so its numbers
    # are already past ours: not a gap, because the pid changed
    r.feed(b"node-online", ev("node-online", seq=1, pid=200))
    out = r.feed(b"task-started", ev("task-started", seq=80, uuid="u"))
    assert [e["type"] for e in out] == ["task-started"] and r.lost == 0
    # a task-started's pid is a child's pid: it does not mean a restart
    r.feed(b"task-started", ev("task-started", seq=81, uuid="v", pid=4242))
    out = r.feed(b"task-started", ev("task-started", seq=83, uuid="w", pid=4243))
    assert out[0]["type"] == EVENTS_LOST and r.lost == 1


@pytest.mark.parametrize("topic, body", [
    pytest.param(b"task-received", b"\xc1not msgpack", id="not msgpack"),
    pytest.param(b"task-received", msgpack.packb([1, 2, 3]), id="not a map"),
    pytest.param(b"task-received", msgpack.packb({1: "x", "type": "task-received"}), id="int key"),
    pytest.param(b"task-received", {"node": "a", "clock": 1, "timestamp": 1.0, "seq": 1, "uuid": "t"},
                 id="no type"),
    pytest.param(b"task-received", ev("task-received", node="", uuid="t"), id="empty node"),
    pytest.param(b"task-received", ev("task-received", node=None, uuid="t"), id="node not str"),
    pytest.param(b"task-started", ev("task-received", uuid="t"), id="type is not its topic"),
    pytest.param(b"task-received", ev("task-received", ts="yesterday", uuid="t"), id="timestamp text"),
    pytest.param(b"task-received", ev("task-received", ts=math.nan, uuid="t"), id="timestamp nan"),
    pytest.param(b"task-received", ev("task-received", clock=-1, uuid="t"), id="clock negative"),
    pytest.param(b"task-received", ev("task-received", clock=True, uuid="t"), id="clock bool"),
    pytest.param(b"task-received", ev("task-received", seq=0, uuid="t"), id="seq 0"),
    pytest.param(b"task-received", ev("task-received", seq=1.5, uuid="t"), id="seq float"),
    pytest.param(b"task-received", ev("task-received"), id="task event without uuid"),
    pytest.param(b"task-received", ev("task-received", uuid=7), id="uuid not str"),
    pytest.param(b"task-received", ev("task-received", uuid="x" * 201), id="uuid too long"),
    pytest.param(b"task-received", msgpack.packb(msgpack.ExtType(5, b"xx")), id="ext type"),
    pytest.param(b"result.t", b"\x93\x01\x03\xa1t", id="result not a Result"),
    pytest.param(b"result.t", b"garbage", id="result garbage"),
])
def test_receiver_skips_and_counts_malformed_bodies(topic: bytes, body: bytes | dict[str, Any]) -> None:
    r = _FakeReceiver()
    assert r.feed(topic, body) == []
    assert r.malformed == 1 and r.received == 0
    assert r.feed(b"node-heartbeat", ev("node-heartbeat")) != []     # and it goes on


def test_receiver_counts_messages_with_the_wrong_number_of_frames() -> None:
    r = _FakeReceiver()
    r._take([b"task-received"])
    r._take([b"a", b"b", b"c"])
    assert r.malformed == 2 and not r._pending


def test_parse_event_accepts_a_node_event_and_keeps_its_fields() -> None:
    body = msgpack.packb(ev("node-heartbeat", active=1, loadavg=[0.5, 0.1, 0.0]), use_bin_type=True)
    got = parse_event(b"node-heartbeat", body)
    assert got is not None and got["active"] == 1 and got["loadavg"] == [0.5, 0.1, 0.0]


# ---- State: tasks ---------------------------------------------------------------------

def test_a_task_in_order() -> None:
    s = State()
    s.event(ev("task-received", clock=1, ts=10.0, uuid="t", name="tasks.add", args="(2, 3)",
               kwargs="{}", retries=0))
    assert s.tasks["t"].state == states.RECEIVED
    s.event(ev("task-started", clock=2, ts=10.5, uuid="t", name="tasks.add", pid=42))
    assert [t.uuid for t in s.running()] == ["t"]
    s.event(ev("task-succeeded", clock=3, ts=11.0, uuid="t", runtime=0.5, result="5"))
    t = s.tasks["t"]
    assert (t.state, t.name, t.node, t.args, t.kwargs, t.pid) == (
        states.SUCCESS, "tasks.add", "a", "(2, 3)", "{}", 42)
    assert (t.received, t.started, t.succeeded, t.runtime, t.result) == (10.0, 10.5, 11.0, 0.5, "5")
    assert t.ready and s.running() == []
    assert s.tasks_by_state() == {states.SUCCESS: [t]}


def test_a_late_task_started_does_not_undo_success_but_fills_its_fields() -> None:
    s = State()
    s.event(ev("task-succeeded", clock=3, ts=11.0, uuid="t", runtime=0.5, result="5"))
    s.event(ev("task-received", clock=1, ts=10.0, uuid="t", name="tasks.add", args="()"))
    s.event(ev("task-started", clock=2, ts=10.5, uuid="t", pid=42))
    t = s.tasks["t"]
    assert t.state == states.SUCCESS
    assert (t.name, t.received, t.started, t.pid) == ("tasks.add", 10.0, 10.5, 42)
    assert s.running() == []


def test_a_late_task_started_from_another_node_does_not_undo_failure() -> None:
    s = State()
    s.event(ev("task-failed", node="b", clock=9, ts=20.0, uuid="t", exception="E('x')",
               traceback="Traceback ..."))
    s.event(ev("task-started", node="a", clock=50, ts=30.0, uuid="t"))   # even a later clock
    t = s.tasks["t"]
    assert (t.state, t.node, t.exception, t.traceback) == (states.FAILURE, "b", "E('x')", "Traceback ...")


def test_one_nodes_events_are_ordered_by_its_clock() -> None:
    s = State()
    s.event(ev("task-started", clock=11, ts=5.0, uuid="t"))        # the run after the retry
    s.event(ev("task-retried", clock=10, ts=6.0, uuid="t", exception="OSError()"))  # late
    t = s.tasks["t"]
    assert t.state == states.STARTED and t.retries == 1 and t.exception == "OSError()"


def test_across_nodes_wall_time_orders_a_task_handed_over() -> None:
    s = State()
    # node b received the task after node a handed it over; a's event arrives late
    s.event(ev("task-received", node="b", clock=3, ts=20.0, uuid="t", name="tasks.x"))
    s.event(ev("task-rejected", node="a", clock=70, ts=19.0, uuid="t", requeue=True,
               target="tcp://b", reason="shed"))
    t = s.tasks["t"]
    assert (t.state, t.node, t.reason, t.rejected) == (states.RECEIVED, "b", "shed", 19.0)
    # in the other order, the newer event wins as well
    s2 = State()
    s2.event(ev("task-rejected", node="a", clock=70, ts=19.0, uuid="t", requeue=True))
    s2.event(ev("task-received", node="b", clock=3, ts=20.0, uuid="t"))
    assert (s2.tasks["t"].state, s2.tasks["t"].node) == (states.RECEIVED, "b")
    s3 = State()
    s3.event(ev("task-rejected", node="a", clock=1, ts=21.0, uuid="t", requeue=False))
    assert s3.tasks["t"].state == REJECTED


@pytest.mark.parametrize("order", ["receiver first", "rejection first"])
def test_a_task_handed_on_stays_with_the_receiver_whatever_the_order(order: str) -> None:
    """(A user trial, three nodes and a dashboard) a node publishes the requeue
    rejection of a task it hands on once the receiver has acknowledged it: after the
    receiver's task-received and often its task-started (times from the trial). The
    rejection took the task back, which showed as REJECTED on the node that no longer
    had it for as long as it ran (30 s there)."""
    receiver = [ev("task-received", node="d1", clock=5, ts=54.8444, uuid="t", name="slow"),
                ev("task-started", node="d1", clock=6, ts=54.8467, uuid="t", pid=12718)]
    rejected = [ev("task-rejected", node="d2", clock=9, ts=54.854, uuid="t", requeue=True,
                   target="tcp://d1", reason="shed to a node with room")]
    s = State()
    for e in (receiver + rejected if order == "receiver first" else rejected + receiver):
        s.event(e)
    t = s.tasks["t"]
    assert (t.state, t.node, t.pid, t.reason) == (states.STARTED, "d1", 12718,
                                                  "shed to a node with room")
    # handed back and forth (two nodes each seeing the other with room): the last holder
    s.event(ev("task-rejected", node="d1", clock=7, ts=55.9, uuid="t", requeue=True))
    s.event(ev("task-received", node="d2", clock=10, ts=55.8, uuid="t"))
    assert (t.state, t.node) == (states.RECEIVED, "d2")
    s.event(ev("task-received", node="d1", clock=8, ts=55.7, uuid="t"))   # an old one, late
    assert (t.state, t.node) == (states.RECEIVED, "d2")


def test_the_first_final_state_stands_over_a_duplicate_run() -> None:
    s = State()
    s.event(ev("task-succeeded", node="a", clock=5, ts=10.0, uuid="t", result="1", runtime=0.1))
    s.event(ev("task-failed", node="b", clock=6, ts=11.0, uuid="t", exception="E()", runtime=9.0))
    s.event(ev("task-duplicate", node="b", clock=7, ts=11.0, uuid="t", first_node="a"))
    t = s.tasks["t"]
    assert (t.state, t.node, t.result, t.runtime, t.exception) == (states.SUCCESS, "a", "1", 0.1, None)
    assert (t.duplicates, t.first_node) == (1, "a")


def test_retries_count_from_task_received_and_task_retried() -> None:
    s = State()
    s.event(ev("task-received", clock=1, uuid="t", retries=2))
    s.event(ev("task-retried", clock=2, uuid="t"))
    assert s.tasks["t"].retries == 3 and s.tasks["t"].state == states.RETRY


def test_eviction_takes_the_oldest_finished_tasks_first() -> None:
    s = State(max_tasks=3)
    s.event(ev("task-started", clock=1, uuid="running-1"))
    s.event(ev("task-succeeded", clock=2, uuid="done-1"))
    s.event(ev("task-succeeded", clock=3, uuid="done-2"))
    s.event(ev("task-started", clock=4, uuid="running-2"))      # 4 > 3: evict done-1
    assert set(s.tasks) == {"running-1", "done-2", "running-2"}
    s.event(ev("task-started", clock=5, uuid="running-3"))      # then done-2
    assert set(s.tasks) == {"running-1", "running-2", "running-3"}
    s.event(ev("task-started", clock=6, uuid="running-4"))      # no finished one left: the oldest
    assert set(s.tasks) == {"running-2", "running-3", "running-4"}
    assert s.evicted == 3 and s.task_count == 6


def test_eviction_keeps_memory_bounded_over_many_tasks() -> None:
    s = State(max_tasks=100)
    for i in range(5_000):
        s.event(ev("task-received", clock=3 * i + 1, uuid=f"t{i}"))
        if i % 10:                                              # one in ten never finishes
            s.event(ev("task-succeeded", clock=3 * i + 2, uuid=f"t{i}"))
    assert len(s.tasks) == 100 and len(s._finished) <= 100
    # finished tasks went first: what is left is the newest unfinished ones (and the
    # task just finished, which has not been evicted yet)
    unfinished = {t.uuid for t in s.tasks.values() if t.state == states.RECEIVED}
    assert unfinished == {f"t{i}" for i in range(4010, 5000, 10)}


def test_state_ignores_events_it_cannot_use() -> None:
    s = State()
    s.event({"type": "task-started"})                          # no node
    s.event({"type": 3, "node": "a"})
    s.event(ev("task-started", uuid=None))
    s.event(ev("task-started", uuid="t", clock="late", ts="then", pid="x", runtime=[1]))
    s.event(ev("node-heartbeat", active="many", freq=-1, loadavg=["x"]))
    s.event(ev("something-else"))
    assert list(s.tasks) == ["t"] and s.tasks["t"].pid is None
    assert s.nodes["a"].active == 0 and s.nodes["a"].freq == 2.0


# ---- State: nodes ---------------------------------------------------------------------

def test_node_alive_from_heartbeats_within_2_5_intervals() -> None:
    now = FakeNow()
    s = State(now=now)
    s.event(ev("node-online", clock=1, ts=999.0, freq=2.0, address="tcp://x:1", active=1, total=4,
               queued=2, processed=10, tasks_per_s=3.5, cpu_percent=12.0, rss_bytes=123,
               pid=77, version="0.1.0"))
    n = s.nodes["a"]
    assert n.alive and (n.address, n.active, n.total, n.queued, n.processed, n.tasks_per_s,
                        n.cpu_percent, n.rss_bytes, n.pid, n.heartbeat) == (
        "tcp://x:1", 1, 4, 2, 10, 3.5, 12.0, 123, 77, 999.0)
    assert s.alive_nodes() == [n]
    now.t += 4.9
    assert n.alive
    now.t += 0.2                                               # 5.1 s > 2.5 x 2 s
    assert not n.alive and s.alive_nodes() == []
    s.event(ev("node-heartbeat", clock=2, ts=1005.0, freq=2.0))
    assert n.alive
    s.event(ev("node-offline", clock=3, ts=1006.0))
    assert not n.alive and n.offline


def test_running_leaves_out_tasks_of_a_node_gone_silent() -> None:
    now = FakeNow()
    s = State(now=now)
    s.event(ev("node-heartbeat", node="a", clock=1, freq=2.0))
    s.event(ev("task-started", node="a", clock=2, ts=5.0, uuid="on-a"))
    s.event(ev("task-started", node="b", clock=1, ts=4.0, uuid="on-b"))   # b: no heartbeat seen
    assert [t.uuid for t in s.running()] == ["on-b", "on-a"]             # oldest first
    now.t += 10
    assert [t.uuid for t in s.running()] == ["on-b"]


def test_events_lost_are_counted_per_node() -> None:
    s = State()
    s.event({"type": EVENTS_LOST, "node": "a", "of_type": "task-started", "missed": 5,
             "timestamp": 1.0})
    s.event({"type": EVENTS_LOST, "node": "a", "of_type": "task-received", "missed": 2,
             "timestamp": 1.0})
    assert s.lost == 7 and s.nodes["a"].lost == 7
