"""The beat: periodic tasks fired by the nodes themselves, with no beat process.

Every node carries the app's schedule (mesh/periodic.py). For each entry, the node that
fires it is ``hrw(entry name, alive members carrying the same schedule)``: every node
computes the same choice from its membership view, the choice changes only when members
come or go, and when the firing node dies the next one in the entry's ranking fires as
soon as membership declares it dead (docs/periodic.md gives the measured figures).

A run's task id is ``uuid5(entry name, due time)``; runs are sent to the node that id
picks (mesh/node/beat_send.py), so a run fired twice executes once. The firing node tells
every alive peer the last firing of each entry (``beat-fired``), tells a member that
appears everything it knows (``beat-sync``), and keeps it in ``beat.sqlite3`` in its
data dir: a node that takes an entry over neither fires a run again nor skips one.

A starting node fires nothing until it has settled (learnt the mesh); then it tells its
peers itself (a ``beat-sync`` with ``settled``) and holds the runs it would fire until they
have confirmed that they count it as a firer, so a node joining a mesh and the node that
fired its entries until then never fire the same run; the confirmation names the entries
the peer fired until then, and the joiner fires each of their runs due since the peer's
last, so none is lost either (docs/periodic.md, Settling). What a node tells its peers
and hears from them is in mesh/node/beat_peers.py.

No backlog: when a node takes over, or the mesh starts after being down, only the latest
due run is fired (and only within the entry's ``catch_up`` window, if it has one). The
task sees the due time in ``self.request.headers["periodic_due"]`` (unix time) and the
entry's name in ``headers["periodic_entry"]``.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from mesh.clock import Clock
from mesh.exceptions import MeshError
from mesh.membership import MemberState, profile
from mesh.node.beat_peers import PeerTalk
from mesh.node.beat_send import Outbox, Run
from mesh.node.beat_state import (
    AHEAD_MAX,
    Fired,
    LastFirings,
    due_to_fire,
    entry_key,
    handed_runs,
    hrw,
)
from mesh.node.commands import Command
from mesh.node.component import Component, NodeStartError
from mesh.node.gossip import shutdown_timeout_of
from mesh.node.naps import IDLE_CAP, aligned
from mesh.node.peers import request_id
from mesh.node.takeover import LEFT_GRACE
from mesh.periodic import Entry, Schedule
from mesh.security.text import safe_logger
from mesh.wire.protocol import Control, encode

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.beat")

TICK = 0.1             # s between looks at the schedule and membership, at most
SETTLE_PROBES = 10     # a starting node fires nothing for this many probe intervals
HOLD_PROBES = 2        # then holds the runs it would fire for this many, as peers learn it settled,
HOLD_MAX_PROBES = 10   # and, at most this many, until every alive peer confirmed that it counts it
HELD_MAX = 3           # runs of one entry held at most (the newest)
HANDED_MAX = 50        # runs of one entry handed over by a peer fired at most (the newest)
SWEEP_INTERVAL = 30.0  # s between closing the outbox's sockets to departed nodes
CLOCK_BACK = AHEAD_MAX # s: the wall clock going back further than this against time.monotonic
                       # between two looks is a clock set back (_clock_check)


class Beat(PeerTalk, Component):
    """The beat component of one node: ``start`` reads the app's schedule, registers the
    beat commands and spawns ``run`` (the loop) in the node's TaskGroup."""

    name = "beat"
    requires = ("membership", "journal", "control")

    def __init__(self, clock: Clock | None = None):
        self.clock = clock or Clock()
        self.node: Any = None
        self.schedule: Schedule | None = None
        self.digest = ""
        self.keys: dict[str, str] = {}
        self.settle = 0.0
        self.started = self.clock.time()
        self.settle_from = self.started
        self._saw_ready = False
        self.store: LastFirings | None = None
        self.outbox: Outbox | None = None
        self.next_look: dict[str, float] = {}      # entry -> no run is due before this
        self.results: dict[str, tuple[str, str, float]] = {}   # entry -> (state, node, due)
        self.counts: collections.Counter[str] = collections.Counter()
        self._peers: set[str] = set()
        self.settled = False
        self.settled_at = -math.inf
        self.hold = 0.0
        self.hold_max = 0.0
        self.probe = 0.0
        self._unconfirmed: set[str] = set()   # peers yet to confirm they count us as a firer
        self._told_settled = -math.inf        # when we last told them we settled
        self._counted: dict[str, str] = {}    # peer -> boot: said it settled, before its meta did
        self._held: dict[str, list[float]] = {}   # entry -> dues held since settling
        self._handed: dict[str, str] = {}     # entry -> the peer that fired it until it counted us
        self._swept = self.clock.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stuck: set[str] = set()     # entries whose runs no node takes (warned once)
        self._ahead: set[str] = set()     # nodes whose firings were due far ahead (warned once)
        self._skew: float | None = None   # wall - monotonic clock at the last look

    # -- component interface ------------------------------------------------------------
    async def start(self, node: "Node") -> None:
        self.node = node
        node.beat = self
        try:
            self.schedule = node.app.periodic_schedule()
        except MeshError as e:
            raise NodeStartError(f"the app's periodic tasks: {e}") from e
        self.digest = self.schedule.digest
        self.keys = {name: entry_key(e.key()) for name, e in self.schedule.entries.items()}
        self.settle = SETTLE_PROBES * profile(node.config.profile).probe_interval
        self.probe = profile(node.config.profile).probe_interval
        self.hold = HOLD_PROBES * self.probe
        self.hold_max = HOLD_MAX_PROBES * self.probe
        self.started = self.settle_from = self.clock.time()
        cfg = node.config
        self.store = LastFirings(cfg.data_path if cfg.journal else None, self.clock.time())
        for name, kind, fn in (("beat", "inspect", lambda state, args: self.describe()),
                               ("beat-fired", "control", lambda state, args: self.on_fired(args)),
                               ("beat-sync", "control", lambda state, args: self.on_sync(args))):
            node.control.commands.add(Command(name, kind, fn, dict, builtin=True,
                                              help="periodic tasks (docs/periodic.md)"))
        if self.schedule.entries:
            log.info("beat: %d periodic entr%s (schedule %s, zone %s): %s",
                     len(self.schedule.entries), "y" if len(self.schedule.entries) == 1 else "ies",
                     self.digest, self.schedule.timezone, ", ".join(sorted(self.schedule.entries)))
        self.outbox = Outbox(node.ctx, node.name, self._pick_target, self._done, self._spawn,
                             node.security)
        node.spawn(self.run(), name="beat")

    def reset_sockets(self) -> None:
        """New keys: the outbox's sockets are made again, and its runs sent again."""
        if self.outbox is not None:
            self.outbox.reset(self.clock.time())

    async def stop(self, node: "Node") -> None:
        if self.outbox is not None:
            self.outbox.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def close(self, node: "Node") -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    async def run(self) -> None:
        """Until cancelled: fire what is due here, resend what is unanswered."""
        while True:
            try:
                now = self.clock.time()
                self.clock_check(now, self.clock.monotonic())
                wait = self.tick(now)
            except Exception:
                log.exception("beat: tick failed")
                wait = 1.0
            if wait >= IDLE_CAP:
                await aligned(IDLE_CAP)          # (with the node's other 1 s looks)
            else:
                await asyncio.sleep(wait)

    def _spawn(self, coro: Any) -> "asyncio.Task[None]":
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name="beat-socket")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- membership views ---------------------------------------------------------------
    def _alive(self) -> list[Any]:
        """The other members not known to be gone: alive or suspect. A suspect keeps
        its entries until it is declared dead, so a node only slow to answer (a busy
        one) is not fired for by another at the same time."""
        ms = self.node.membership
        if ms is None:
            return []
        return [m for m in ms.members()[1:] if m.state in (MemberState.ALIVE, MemberState.SUSPECT)]

    def advertised(self) -> str:
        """What this node gossips in its member meta: its schedule's digest once it has
        settled (a node still learning the mesh is not counted as a firer by others)."""
        return self.digest if self.settled else ""

    def firers(self) -> list[str]:
        """The nodes that may fire our entries: settled, alive, carrying the same schedule
        (their meta says so, or they told us so themselves: ``on_sync``)."""
        me = [self.node.name] if self.settled else []
        counted = self._counted
        return me + [m.id for m in self._alive() if m.meta.get("beat") == self.digest
                     or (m.id in counted and counted[m.id] == m.meta.get("boot"))]

    def _targets(self, task: str | None = None, queue: str | None = None) -> dict[str, str]:
        """Node id -> address of the nodes a run may go to: alive, with our tasks, and
        for a run of ``task``, serving ``queue`` (the entry's), else the queue the task
        is routed to (docs/routing.md)."""
        routing = self.node.routing
        if queue is None and task:
            queue = routing.queue_for(task)
        out = {}
        if queue is None or routing.serves_queue(queue):
            out[self.node.name] = self.node.address
        for m in self._alive():
            if m.meta.get("tasks") == self.node.tasks_digest and (
                    queue is None or task is None or routing.peer_accepts(m.meta, queue, task)):
                out[m.id] = m.address
        return out

    def _pick_target(self, task_id: str, avoid: set[str]) -> tuple[str, str] | None:
        run = self.outbox.runs.get(task_id) if self.outbox is not None else None
        entry = self.schedule.entries.get(run.entry) if run and self.schedule else None
        targets = {k: v for k, v in self._targets(entry.task if entry else None,
                                                  entry.queue if entry else None).items()
                   if k not in avoid}
        chosen = hrw(task_id, targets)
        return None if chosen is None else (chosen, targets[chosen])

    # -- the loop -----------------------------------------------------------------------
    def tick(self, now: float) -> float:
        """One look: share with new members, fire due runs, resend. Returns how long
        to sleep (until the next run due here, TICK at most)."""
        assert self.outbox is not None
        alive = {m.id: m.address for m in self._alive()}
        new = set(alive) - self._peers
        for gone in self._peers - set(alive):
            self._counted.pop(gone, None)
        self._peers = set(alive)
        for peer in new:
            self._sync_to(alive[peer])
        ms = self.node.membership
        own = self.node.config.shutdown_timeout
        left = [m for m in ms.members()[1:] if m.state == MemberState.LEFT] if ms else []
        self.outbox.check(now, {**alive, self.node.name: self.node.address},
                          {m.id: LEFT_GRACE + shutdown_timeout_of(m.meta, own, m.id)
                           for m in left})
        for name in [n for n in self._stuck if not self.waiting(n)]:
            self._stuck.discard(name)
            log.info("beat: runs of %s are taken by a node again", name)
        if now - self._swept > SWEEP_INTERVAL:
            self._swept = now
            self.outbox.sweep(set(self._targets().values()))
        assert self.schedule is not None
        if not self.schedule.entries and not self.outbox.runs:
            return IDLE_CAP     # nothing to fire here: new peers are told within a second
        if not self.schedule.entries or self.node.stopping:
            return TICK
        if not self.settled:
            ready = getattr(self.node, "ready", None)
            if ready is not None and not self._saw_ready:
                # the settle time counts from the first look at a ready node: its other
                # parts (discovery among them) start first, and a start that blocked the
                # event loop (heavy imports) taught it nothing about the mesh
                if not ready.is_set():
                    return TICK
                self._saw_ready, self.settle_from = True, now
            if now - self.settle_from < self.settle:   # learn the mesh before firing anything
                return TICK
            self.settled, self.settled_at = True, now   # from now on peers count us as a firer
            if self.node.membership is not None:
                self.node.membership.update_local_meta()
            self._unconfirmed = set(alive)
        awaiting = self._awaiting(now, alive)      # (tells the peers at once when settling)
        holding = awaiting or now - self.settled_at < self.hold
        firers = self.firers()
        wait = TICK
        for name, entry in self.schedule.entries.items():
            mine = hrw(name, firers) == self.node.name
            if name in self._held and not holding:
                self._fire_held(entry, mine, firers, now)
            look = self.next_look.get(name)
            if look is not None and now < look:
                wait = min(wait, look - now)
                continue
            if not mine:
                continue            # not ours: look again next tick (membership may change)
            if holding:
                self._hold(entry, now)
            else:
                self._consider(entry, now)
        if not holding:
            self._handed.clear()
        if now - self.settled_at < self.hold:
            wait = min(wait, self.settled_at + self.hold - now)
        return max(wait, 0.001)

    def clock_check(self, now: float, monotonic: float) -> None:
        """Notice this machine's clock set back while the node runs, and reschedule from
        the current clock. Its last firings were then due ahead of the clock, and no run
        was due after them until the clock got back there (an hour back: an hour without
        a run of any entry; a restart was the cure), and the times it keeps (settling,
        holding, runs in flight) were ahead too.

        A step back of more than CLOCK_BACK against time.monotonic (which NTP or an
        operator does not move) is said in one WARNING; the times kept move back with
        the clock, the last firing of each entry due more than AHEAD_MAX ahead of the
        clock is forgotten (as a restarted node leaves it out of beat.sqlite3), and
        each entry fires its runs due from now on: not the runs missed, nor those
        between its last firing and now again (one run per due time, as for the
        repeated hour when a zone's clocks go back: a run due at a time the entry
        fired before has that run's id, and its target answers it without running it
        again). Smaller steps are not said: the entry waits for the clock at most
        AHEAD_MAX (the tolerance for a peer's firings)."""
        skew, last = now - monotonic, self._skew
        self._skew = skew
        if last is None or last - skew <= CLOCK_BACK:
            return
        back = last - skew
        assert self.store is not None
        ahead = {name: f.due for name in self.keys
                 if (f := self.store.get(name)) is not None and f.due > now + AHEAD_MAX}
        which = "periodic entries are"
        if ahead:
            which = (f"entr{'y' if len(ahead) == 1 else 'ies'} {', '.join(sorted(ahead))}, "
                     f"fired until {_iso(max(ahead.values()), self._tz())}, "
                     f"{'is' if len(ahead) == 1 else 'are'}")
        log.warning("beat: this machine's clock went back %.0f s while the node ran: %s "
                    "rescheduled from the current clock: each fires its runs due from now on "
                    "(keep the clocks synchronised: NTP)", back, which)
        for name in ahead:
            self.store.forget(name)
        self.started = now          # (an entry with no last firing fires runs due from now)
        self.settle_from -= back
        self.settled_at -= back
        self._told_settled -= back
        self._swept -= back
        self.next_look.clear()
        if self.outbox is not None:
            self.outbox.shift(-back)

    def _tz(self) -> dt.tzinfo:
        assert self.schedule is not None
        return self.schedule.timezone

    def _awaiting(self, now: float, alive: dict[str, str]) -> bool:
        """Whether this node, settled, still waits for alive peers to confirm that they
        count it as a firer; tells them again (every probe interval) that it settled.

        Its meta says so too, but by gossip: a peer that fired an entry this node takes
        over fired on until the gossip reached it, and when that took longer than the
        hold both fired (and logged) a run. A peer that confirmed stopped firing the
        entries this node takes, and told us everything it fired before (``on_sync``),
        so after the confirmations exactly one node fires each run. A peer that does not
        confirm within HOLD_MAX_PROBES (an older mesh version, or one cut off) is said
        at INFO, and the node fires anyway."""
        self._unconfirmed &= set(alive)          # a peer gone need not confirm
        if not self._unconfirmed:
            return False
        if now - self.settled_at >= self.hold_max:
            log.info("beat: %s did not confirm within %g s that %s counted this node as a "
                     "firer: firing anyway (a run may be fired by both, once; it runs once)",
                     ", ".join(sorted(self._unconfirmed)),
                     self.hold_max, "it" if len(self._unconfirmed) == 1 else "they")
            self._unconfirmed.clear()
            return False
        if now - self._told_settled >= self.probe:
            self._told_settled = now
            for peer in sorted(self._unconfirmed):
                self._tell(self._sync_message([], settled={
                    "node": self.node.name, "digest": self.digest, "boot": self.node.boot}),
                    [alive[peer]])
        return True

    def _hold(self, entry: Entry, now: float) -> None:
        """Just settled: note the run this node would fire, and fire nothing yet. Its
        peers learn that it settled (its meta, gossiped) and it learns theirs, within a
        few gossip rounds; nodes started together settle together, each seeing the
        other unsettled, and both fired the first run (it ran once: same id), both
        logging "fired" (a new user's report, session 16). After the hold the views
        agree on one firer, which fires the latest run due (``_fire_held``)."""
        assert self.store is not None and self.schedule is not None
        due, _skipped = due_to_fire(entry.schedule, self.schedule.timezone, now,
                                    self._last_due(entry.name), self.started, entry.catch_up)
        held = self._held.setdefault(entry.name, [])
        if due is not None and due not in held:
            held[:] = sorted([*held, due])[-HELD_MAX:]

    def _fire_held(self, entry: Entry, mine: bool, firers: list[str], now: float) -> None:
        """The hold is over. An entry a peer handed over (it fired the entry until it
        counted this node, ``_handing``) gets each run due since that no node fired
        (``_fire_handed``). Otherwise no backlog here either (a node alone, nodes
        started together, a peer that did not confirm): if the entry is still ours, only
        the latest run due now that no node fired is fired (``_consider``: the newest
        held, or one due since), never each run held (a short-period entry fired up
        to HELD_MAX runs at once, a session-18 finding). What is not fired here is
        said: held runs left for the latest at INFO, runs another node fired or fires
        at DEBUG."""
        assert self.store is not None and self.schedule is not None
        tz = self.schedule.timezone
        held = self._held.pop(entry.name)
        handed_by = self._handed.pop(entry.name, None)
        last_due = self._last_due(entry.name)
        fired = [d for d in held if last_due is not None and d <= last_due]
        left = [d for d in held if d not in fired]
        last = self.store.get(entry.name)
        if fired and last is not None:
            log.debug("beat: %s fired %s (due %s): not fired here", last.node, entry.name,
                      _iso(max(fired), tz))
        if not mine:
            if left:
                log.debug("beat: %s fires %s now: its run%s due %s, held while this node "
                          "settled, %s not fired here", hrw(entry.name, firers), entry.name,
                          "s" if len(left) > 1 else "", _dues(left, tz),
                          "are" if len(left) > 1 else "is")
            return
        if handed_by is not None:
            self._fire_handed(entry, handed_by, now)
            return
        fire, late = due_to_fire(entry.schedule, tz, now, last_due, self.started, entry.catch_up)
        older = [d for d in left if d not in (fire, late)]
        if older:
            log.info("beat: %s: run%s due %s, held while this node settled, %s not fired: "
                     "only the latest due run is (no backlog)", entry.name,
                     "s" if len(older) > 1 else "", _dues(older, tz),
                     "are" if len(older) > 1 else "is")
        self._consider(entry, now)

    def _fire_handed(self, entry: Entry, peer: str, now: float) -> None:
        """Fire, in order, each run of ``entry`` due since ``peer`` last fired it: the
        peer stopped firing it when it counted this node, and this node held its runs
        until the peer confirmed; coalesced into the latest one, the runs between
        were lost (2 or 3 of an entry every 0.2 s on lan; CONTRACT: exactly one fires each
        due run).
        Bounded: the hold lasts HOLD_MAX_PROBES at most, a run due more than that
        before this node settled was not handed over, and HANDED_MAX runs are fired at
        most (the newest), the others said in a WARNING."""
        assert self.schedule is not None
        tz = self.schedule.timezone
        fire, over, late = handed_runs(entry.schedule, tz, now, self._last_due(entry.name),
                                       self.settled_at - self.hold_max, entry.catch_up,
                                       HANDED_MAX)
        if over:
            log.warning("beat: %s: %d run%s due %s .. %s, handed over by %s as this node "
                        "settled, %s not fired: only the newest %d are", entry.name, len(over),
                        "s" if len(over) > 1 else "", _iso(over[0], tz), _iso(over[-1], tz),
                        peer, "are" if len(over) > 1 else "is", HANDED_MAX)
        if late:
            self.counts["skipped"] += len(late)
            log.warning("beat: %s: run%s due %s, handed over by %s as this node settled, "
                        "%s later than its catch_up of %g s: skipped", entry.name,
                        "s" if len(late) > 1 else "", _dues(late, tz), peer,
                        "are" if len(late) > 1 else "is", entry.catch_up)
            self._learn(Fired(entry.name, late[-1], "", self.node.name, now, self.keys[entry.name]))
        if fire:
            log.debug("beat: %s fired %s until it counted this node: runs due since, %s, "
                      "are fired here", peer, entry.name, _dues(fire, tz))
        for due in fire:
            self.fire(entry, due, now)
        self._consider(entry, now)       # (fires nothing more: looks for the next run)

    def _last_due(self, name: str) -> float | None:
        """The due time of the last known firing of entry ``name``, if it was of the
        entry as defined here."""
        assert self.store is not None
        last = self.store.get(name)
        return last.due if last is not None and last.key == self.keys[name] else None

    def _consider(self, entry: Entry, now: float) -> None:
        assert self.store is not None and self.schedule is not None
        tz = self.schedule.timezone
        fire, skipped = due_to_fire(entry.schedule, tz, now, self._last_due(entry.name),
                                    self.started, entry.catch_up)
        if fire is not None:
            self.fire(entry, fire, now)
        elif skipped is not None:      # remembered below, so said once per run
            self.counts["skipped"] += 1
            log.warning("beat: run of %s due %s is %.0f s late, beyond its catch_up of %g s: "
                        "skipped", entry.name, _iso(skipped, tz), now - skipped, entry.catch_up)
            self._learn(Fired(entry.name, skipped, "", self.node.name, now, self.keys[entry.name]))
        self.next_look[entry.name] = entry.schedule.next_after(now, tz)

    def fire(self, entry: Entry, due: float, now: float) -> None:
        """Send the run of ``entry`` due at ``due``, and tell the mesh."""
        assert self.outbox is not None and self.schedule is not None
        msg = entry.submit(due)
        run = Run(msg.task_id, entry.name, due, encode(msg))
        self.outbox.send(run, now)
        self.counts["fired"] += 1
        log.info("beat: fired %s (due %s) as %s on %s", entry.name,
                 _iso(due, self.schedule.timezone), msg.task_id, run.target or "(no node yet)")
        self._say_waiting(entry)
        f = Fired(entry.name, due, msg.task_id, self.node.name, now, self.keys[entry.name])
        self._learn(f)
        self._tell(Control(request_id("beat", self.node.name), "beat-fired",
                           {**f.to_wire(), "noreply": True}), self._alive_addresses())

    def waiting(self, entry: str) -> int:
        """Runs of ``entry`` this node fired that no node has taken yet (none alive
        serves the queue its task goes to, or has its task)."""
        return sum(1 for r in self.outbox.runs.values()
                   if r.entry == entry and not r.target) if self.outbox is not None else 0

    def _say_waiting(self, entry: Entry) -> None:
        """Never silent: an entry whose runs no node takes is a WARNING (once, until a
        node takes one again), not an INFO line per run (a user trial: a beat entry whose
        task went to a queue no node served fired "on (no node yet)" for ever)."""
        n = self.waiting(entry.name)
        if not n or entry.name in self._stuck:
            return      # (tick says when they are taken again)
        self._stuck.add(entry.name)
        routing = self.node.routing
        queue = entry.queue or routing.queue_for(entry.task)
        log.warning("beat: no alive node takes the runs of %s: none serving queue %r has task "
                    "%r (this node serves %s). %d run(s) wait here and are sent when such a "
                    "node is alive (meshnode --queues, or the entry's options={'queue': ...})",
                    entry.name, queue, entry.task,
                    routing.describe(), n)

    def _done(self, run: Run, state: str, node: str) -> None:
        self.results[run.entry] = (state, node, run.due)

    # -- what meshctl beat shows --------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """This node's view of every entry: schedule, next and last run, who fires it."""
        now = self.clock.time()
        if self.schedule is None:
            return {"node": self.node.name, "schedule": "", "entries": []}
        tz = self.schedule.timezone
        firers = self.firers()
        rows = []
        for name, entry in sorted(self.schedule.entries.items()):
            last = self.store.get(name) if self.store is not None else None
            result = self.results.get(name)
            nxt: float | None = entry.schedule.next_after(now, tz)
            if nxt is not None and not math.isfinite(nxt):
                nxt = None         # no run ahead (a solar event that never happens there)
            rows.append({
                **entry.describe(), "next_run": nxt,
                "next_run_local": "never" if nxt is None else _iso(nxt, tz),
                "fires_on": hrw(name, firers),
                "last_run": None if last is None or last.key != self.keys[name] else {
                    "due": last.due, "due_local": _iso(last.due, tz), "task_id": last.task_id or None,
                    "fired_by": last.node, "fired_at": last.at, "skipped": not last.task_id},
                "last_result": None if result is None else {
                    "state": result[0], "node": result[1], "due": result[2]},
                "waiting": self.waiting(name),
            })
        return {"node": self.node.name, "schedule": self.digest, "timezone": str(tz),
                "settled": self.settled, "firers": sorted(firers),
                "fired": self.counts["fired"], "skipped": self.counts["skipped"],
                "resent": self.outbox.resent if self.outbox else 0,
                "in_flight": len(self.outbox.runs) if self.outbox else 0, "entries": rows}


def _iso(t: float, tz: dt.tzinfo) -> str:
    """``t`` in ``tz``, to the second, or to the millisecond when it is not a whole
    second (runs of an entry every 0.5 s are told apart in the log)."""
    return dt.datetime.fromtimestamp(t, tz).isoformat(
        timespec="seconds" if t == math.floor(t) else "milliseconds")


def _dues(dues: list[float], tz: dt.tzinfo) -> str:
    return ", ".join(_iso(d, tz) for d in sorted(dues))
