"""Two nodes that settle at the same moment (started together) must not both fire
the first run: each saw the other unsettled, so each was the only firer in its own
view, and both sent the run and logged "fired" (it ran once: one id). A node that
has just settled holds the runs it would fire for HOLD_PROBES probe intervals, as
the views converge; then the one firer fires what it held (a new user's report,
session 16). In-process: two Beat components with a fake membership view each and a
FakeClock; the real nodes' beat is in tests/integration/test_e2e_beat.py."""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from mesh import Mesh
from mesh.clock import FakeClock
from mesh.membership import MemberState
from mesh.membership.member import Member
from mesh.node.beat import HOLD_MAX_PROBES, HOLD_PROBES, SETTLE_PROBES, Beat
from mesh.node.beat_peers import AHEAD_MAX
from mesh.node.beat_state import LastFirings, entry_key, hrw
from mesh.wire.protocol import decode

PROBE = 0.2                       # the test profile's probe interval
START = 1_000_000.0


class _Outbox:
    def __init__(self) -> None:
        self.runs: dict[str, Any] = {}
        self.sent: list[Any] = []
        self.resent = 0

    def send(self, run: Any, now: float) -> bool:
        self.sent.append(run)
        return True

    def check(self, *args: Any) -> None: ...

    def sweep(self, keep: set[str]) -> None: ...

    def shift(self, by: float) -> None:
        self.shifted = by


class _View:
    """One node's membership view: itself, then the peer with the meta it knows."""

    def __init__(self, me: str, peer: str) -> None:
        self.me, self.peer, self.peer_meta = me, peer, {"beat": "", "boot": f"boot-{peer}"}

    def members(self) -> list[Member]:
        return [_member(self.me, {}), _member(self.peer, self.peer_meta)]

    def update_local_meta(self) -> bool:
        return True


class _Transport:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, address: str, frame: bytes) -> None:
        self.frames.append(frame)


def _member(name: str, meta: dict[str, Any]) -> Member:
    return Member(name, f"tcp://{name}", 1, MemberState.ALIVE, meta, 1, 0.0)


def _beat(name: str, peer: str, clock: FakeClock, every: float = 1.0) -> Beat:
    app = Mesh("beat-settle", mdns=False)

    @app.task(name="tick")
    def tick() -> None: ...

    app.add_periodic_task(every, tick.s(), name="tick")
    b = Beat(clock)
    b.schedule = app.periodic_schedule()
    b.digest = b.schedule.digest
    b.keys = {n: entry_key(e.key()) for n, e in b.schedule.entries.items()}
    b.settle, b.hold, b.hold_max = SETTLE_PROBES * PROBE, HOLD_PROBES * PROBE, HOLD_MAX_PROBES * PROBE
    b.probe = PROBE
    b.started = b.settle_from = clock.time()
    b.store, b.outbox = LastFirings(None), _Outbox()  # type: ignore[assignment]
    b.node = SimpleNamespace(name=name, address=f"tcp://{name}", membership=_View(name, peer),
                             boot=f"boot-{name}",
                             config=SimpleNamespace(shutdown_timeout=1.0), stopping=False,
                             transport=_Transport(), routing=None)
    return b


def _deliver(src: Beat, dst: Beat | None, older: bool = False) -> None:
    """What ``src`` told its peers (beat-fired, beat-sync), received by ``dst`` (None:
    lost on the way). ``older``: ``src`` is of a version that does not say which
    entries it hands over (no ``handed``)."""
    for frame in src.node.transport.frames:
        msg = decode(frame)
        if dst is not None and msg.command == "beat-fired":      # type: ignore[union-attr]
            dst.on_fired(msg.args)                                # type: ignore[union-attr]
        elif dst is not None and msg.command == "beat-sync":      # type: ignore[union-attr]
            args = dict(msg.args)                                 # type: ignore[union-attr]
            if older:
                args.pop("handed", None)
            dst.on_sync(args)
    src.node.transport.frames.clear()


def _join(every: float, cut: bool = False, older: bool = False) -> tuple[Beat, Beat]:
    """"new" joins a mesh where "old" has fired tick (every ``every`` s) for long, and
    wins tick once it settles; the clock runs until new's hold is long over."""
    clock = FakeClock(START + 0.05)
    old, new = _beat("old", "new", clock, every), _beat("new", "old", clock, every)
    assert hrw("tick", ["old", "new"]) == "new"
    old.started = old.settle_from = old.settled_at = START - 100.0
    old.settled = old._saw_ready = True
    new.node.membership.peer_meta = {"beat": old.digest, "boot": "boot-old"}   # old settled
    told = False
    for _ in range(int((new.settle + new.hold_max) / 0.1) + 20):
        for n in (old, new):
            n.tick(clock.time())
        if new.settled and not told:      # it tells its peer in the tick it settles
            told = any(m.command == "beat-sync" and "settled" in m.args      # type: ignore[union-attr]
                       for m in map(decode, new.node.transport.frames))
            assert told, "settled, and its peer not told"
        _deliver(old, new, older)
        _deliver(new, old if not cut else None)
        clock.advance(0.1)
    return old, new


@pytest.mark.parametrize("hold", [True, False])
def test_two_nodes_that_settle_together_fire_the_first_run_once(
        hold: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "mesh.beat")
    clock = FakeClock(START)
    a, b = _beat("a", "b", clock), _beat("b", "a", clock)
    if not hold:
        a.hold = b.hold = a.hold_max = b.hold_max = 0.0   # the rules off: what happened before
    clock.advance(a.settle + 0.05)       # both settle now, each seeing the other unsettled
    for n in (a, b):
        n.tick(clock.time())
    _deliver(a, b)
    _deliver(b, a)
    for n, peer in ((a, b), (b, a)):     # then each learns that the other settled
        n.node.membership.peer_meta = {"beat": peer.digest, "boot": peer.node.boot}
    for _ in range(int(a.hold / 0.1) + 2):        # the ticks of the hold, and after it
        clock.advance(0.1)
        for n in (a, b):
            n.tick(clock.time())
        _deliver(a, b)
        _deliver(b, a)
    first = START + a.settle           # the run due as they settled (a whole second)
    sent = {n.node.name: [r.due for r in n.outbox.sent] for n in (a, b)}
    firing = [msg for msg in caplog.messages if msg.startswith("beat: fired tick")]
    if not hold:
        assert sent == {"a": [first], "b": [first]}, sent       # both sent it
        assert len(firing) == 2
        return
    winner = hrw("tick", ["a", "b"])
    assert sent == {"a": [first] if winner == "a" else [],
                    "b": [first] if winner == "b" else []}, sent
    assert len(firing) == 1, caplog.messages                 # "fired" on one node only
    assert f"beat: {winner} settled: it fires its entries from now on" \
           in caplog.messages                               # the other says why, at debug


@pytest.mark.parametrize("every", [0.1, 0.25, 0.5])
def test_after_the_hold_only_the_latest_due_run_is_fired(
        every: float, caplog: pytest.LogCaptureFixture) -> None:
    """No backlog after the hold either: a node alone, whose entry fell due several
    times while it held, fires only the latest run due when the hold ends (it fired
    every run held, up to HELD_MAX, at once), and says at INFO which it did not."""
    caplog.set_level(logging.DEBUG, "mesh.beat")
    clock = FakeClock(START + 0.05)
    a = _beat("a", "b", clock, every)          # b: a member not settled, so a fires alone
    clock.advance(a.settle + 0.01)
    ticks = []
    while not a.outbox.sent:
        a.tick(clock.time())
        ticks.append(clock.time())
        clock.advance(0.1)
        assert len(ticks) < 100, "nothing fired"
    fired_at = ticks[-1]
    assert fired_at >= a.settled_at + a.hold                       # not during the hold
    due = [r.due for r in a.outbox.sent]
    latest = a.schedule.entries["tick"].schedule.last_at_or_before(fired_at)
    assert due == [latest], (due, fired_at)                        # one run: the latest
    assert [m for m in caplog.messages if m.startswith("beat: fired")] == \
        [m for m in caplog.messages if m.startswith("beat: fired tick")][:1]
    held = [r for r in caplog.records if "held while this node settled" in r.getMessage()]
    assert len(held) == 1 and held[0].levelno == logging.INFO, caplog.messages
    assert "not fired: only the latest due run is (no backlog)" in held[0].getMessage()


@pytest.mark.parametrize("cut", [False, True])
def test_a_node_joining_a_settled_mesh_fires_no_run_its_peer_fires(
        cut: bool, caplog: pytest.LogCaptureFixture) -> None:
    """"new" joins a mesh where "old" has fired tick (every 0.5 s) for long; "new"
    wins tick once it settles. Its meta says it settled, but by gossip: while that
    had not reached "old" when the hold ended (a large mesh, several rounds; a lost
    message), both fired the same runs, each logging "fired". Here the gossip never
    comes in time: "new" tells "old" directly that it settled, and fires only once
    "old" confirmed that it counts it (and sent what it fired). ``cut``: "old" hears
    nothing from "new" (cut off, or an older version that does not answer): "new"
    fires after HOLD_MAX_PROBES, and says why at INFO."""
    caplog.set_level(logging.DEBUG, "mesh.beat")
    old, new = _join(0.5, cut)
    sent = {n.node.name: [r.due for r in n.outbox.sent] for n in (old, new)}
    assert new.settled and sent["new"], sent
    both = sorted(set(sent["old"]) & set(sent["new"]))
    if cut:
        assert both, sent                            # fired by both: "old" never knew
        assert any(m.startswith("beat: old did not confirm within 2 s that it counted this "
                                "node as a firer: firing anyway") for m in caplog.messages)
        return
    assert not both, f"runs fired by both nodes: {both}"
    assert max(sent["old"]) < min(sent["new"])       # a handover: old until new took it
    assert all(b - a == 0.5 for a, b in zip(sent["new"], sent["new"][1:])), sent["new"]


@pytest.mark.parametrize("every", [0.1, 0.2, 0.3])
def test_every_run_due_across_a_handover_is_fired_once(
        every: float, caplog: pytest.LogCaptureFixture) -> None:
    """"old" stops firing tick when it counts "new" (told that it settled); "new" holds
    its runs until "old" confirmed and 2 probe intervals at least. It fired only the
    latest run due then: the runs due between were fired by no node (CONTRACT: exactly
    one fires each due run). "old" says, with its confirmation, that it fired tick
    until then: "new" fires each run due since its last, in order, at once."""
    caplog.set_level(logging.DEBUG, "mesh.beat")
    old, new = _join(every)
    sent = sorted(r.due for n in (old, new) for r in n.outbox.sent)
    sched = old.schedule.entries["tick"].schedule
    assert sent == [sent[0], *sched.due_between(sent[0], sent[-1])], \
        (sorted(r.due for r in old.outbox.sent), sorted(r.due for r in new.outbox.sent))
    assert max(r.due for r in old.outbox.sent) < min(r.due for r in new.outbox.sent)
    assert "beat: old counts this node as a firer, and fired until then 1 entry it takes" \
           in caplog.messages
    assert not [m for m in caplog.messages if "held while this node settled" in m]


def test_runs_handed_over_beyond_the_cap_are_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Bounded: at most HANDED_MAX runs of an entry are fired after the hold (the
    newest); the older ones are one WARNING line, never silent."""
    monkeypatch.setattr("mesh.node.beat.HANDED_MAX", 2)
    old, new = _join(0.1)
    sent = sorted(r.due for n in (old, new) for r in n.outbox.sent)
    sched = old.schedule.entries["tick"].schedule
    missed = [d for d in sched.due_between(sent[0], sent[-1]) if d not in sent]
    (over,) = [r for r in caplog.records if "handed over by old" in r.getMessage()]
    assert over.levelno == logging.WARNING and missed, (missed, caplog.messages)
    assert over.getMessage().startswith(f"beat: tick: {len(missed)} runs due ")
    assert "are not fired: only the newest 2 are" in over.getMessage()


def test_a_peer_that_does_not_say_what_it_hands_over_leaves_no_backlog(
        caplog: pytest.LogCaptureFixture) -> None:
    """An older "old" confirms without ``handed``: "new" cannot tell a peer that fired
    tick until it counted "new" from nodes started together, and fires only the latest
    run due after its hold, as before (the others said at INFO)."""
    caplog.set_level(logging.DEBUG, "mesh.beat")
    old, new = _join(0.1, older=True)
    sent = sorted(r.due for n in (old, new) for r in n.outbox.sent)
    sched = old.schedule.entries["tick"].schedule
    assert len(sent) < len(sched.due_between(sent[0], sent[-1])) + 1
    assert not set(r.due for r in old.outbox.sent) & set(r.due for r in new.outbox.sent)
    (held,) = [r for r in caplog.records if "held while this node settled" in r.getMessage()]
    assert held.levelno == logging.INFO


@pytest.mark.parametrize("args", [
    {"fired": [], "counted": "boot-new", "node": "old", "handed": "tick"},
    {"fired": [], "counted": "boot-new", "node": "old", "handed": ["tick", 7]},
    {"fired": [], "counted": "boot-new", "node": "old", "handed": ["x" * 201]},
    {"fired": [], "settled": "yes"},
    {"fired": [], "settled": {"node": "old", "digest": 7, "boot": "boot-old"}},
    {"fired": [], "settled": {"node": "x" * 300, "digest": "d", "boot": "b"}},
    {"fired": [], "counted": "boot-new"},                   # no node
    {"fired": [], "counted": ["boot-new"], "node": "old"},
])
def test_a_bad_settled_or_counted_is_a_warning(args: dict[str, Any],
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Never silent, never fatal: what a peer sends that is not a notice or an answer
    is one WARNING line, and changes nothing."""
    clock = FakeClock(START)
    new = _beat("new", "old", clock)
    new._unconfirmed = {"old"}
    assert new.on_sync(args) == {"learnt": 0}
    assert new._unconfirmed == {"old"} and not new._counted
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith("beat: a peer sent a bad beat-sync: ")


def test_a_peer_that_did_not_say_it_settled_is_no_firer() -> None:
    """A peer is counted as a firer when its meta carries our schedule's digest, or when
    it said it settled (that boot of it): not because a meta without a boot text (nil
    there: another implementation, a hostile peer) equals "nothing said"."""
    clock = FakeClock(START)
    a = _beat("a", "b", clock)
    a.settled = True
    a.node.membership.peer_meta = {"beat": "", "boot": None}
    assert a.firers() == ["a"]
    a._counted["b"] = "boot-b"              # it said it settled, that boot of it
    a.node.membership.peer_meta = {"beat": "", "boot": "boot-b"}
    assert a.firers() == ["a", "b"]


@pytest.mark.parametrize("args", [
    {"entry": "tick", "due": float("inf"), "task_id": "x", "node": "old", "at": 1.0, "key": "k"},
    {"entry": "tick", "due": "soon", "task_id": "x", "node": "old", "at": 1.0, "key": "k"},
    {"noreply": True},
])
def test_a_bad_beat_fired_is_a_warning(args: dict[str, Any],
                                       caplog: pytest.LogCaptureFixture) -> None:
    """A peer's beat-fired that is not a firing is one WARNING line and changes nothing,
    as a bad firing in a beat-sync is: not a ValueError out of the handler (the node
    logged a traceback for each such message)."""
    clock = FakeClock(START)
    b = _beat("new", "old", clock)
    b.on_fired(args)
    assert b.store is not None and b.store.get("tick") is None
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith("beat: a peer sent a bad firing: ")


def test_a_firing_due_far_ahead_of_the_clock_is_not_learnt(
        caplog: pytest.LogCaptureFixture) -> None:
    """A peer whose clock is ahead tells of firings due in its future, in beat-fired
    or in a beat-sync: learnt, one stopped the entry here until this clock reached it.
    Refused beyond AHEAD_MAX, with one WARNING per firing node; a firing within it (a
    clock a little ahead) is learnt."""
    caplog.set_level(logging.DEBUG, "mesh.beat")
    clock = FakeClock(START)
    b = _beat("new", "old", clock)
    key = b.keys["tick"]

    def firing(due: float, node: str = "old") -> dict[str, Any]:
        return {"entry": "tick", "due": due, "task_id": "t", "node": node, "at": due, "key": key}
    b.on_fired(firing(START + 3600))
    assert b.on_sync({"fired": [firing(START + 3601)]}) == {"learnt": 0}
    assert b.store is not None and b.store.get("tick") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["beat: a firing of tick by old is due 3600 s ahead of this node's "
                        "clock: not learnt (firings due over 10 s ahead are refused: is old's "
                        "clock, or this node's, wrong?)"]
    assert b.on_sync({"fired": [firing(START + AHEAD_MAX)]}) == {"learnt": 1}
    b.on_fired(firing(START + 7200, "other"))
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert b.store.get("tick").due == START + AHEAD_MAX      # type: ignore[union-attr]
