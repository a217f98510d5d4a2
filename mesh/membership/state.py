"""The SWIM rules: what an update does to this node's view (memberlist's state.go).

Internal to mesh.membership. Precedence, for another member:

* alive(inc) replaces anything with a lower incarnation (a suspect refuted, a dead
  or left member back); at the same incarnation it only carries newer meta.
* suspect(inc) turns an alive member at an incarnation <= inc suspect and starts its
  timer; for a member already suspect it counts as a confirmation if it comes from
  a new origin. It never touches a dead or left member.
* dead(inc) / left(inc) end a member at an incarnation <= inc; left is final (a left
  member is never suspected or declared dead), dead may still become left.

About this node itself, suspect or dead at its incarnation or higher, and alive from
an earlier life of its id, are refuted: the incarnation goes above the accused one
and an alive update is queued.

An incarnation may not leap: an update about a known member (or this node) whose
incarnation is more than ``MAX_INCARNATION_STEP`` above the one known is ignored.
A member raises its own number by one per refutation, so honest updates step by one;
a forged "dead at 2^63-1" would otherwise be final, since nobody can refute it.
"""
from __future__ import annotations

from collections.abc import Callable

from mesh.membership import timing
from mesh.membership.broadcast import META, BroadcastQueue, Update
from mesh.membership.member import WIRE_STATE, MemberState
from mesh.membership.probe import Awareness
from mesh.membership.profiles import MembershipConfig
from mesh.membership.table import (
    ALIVE,
    DEAD,
    LEFT,
    LIVE,
    SUSPECT,
    MemberTable,
    Node,
    Suspicion,
)
from mesh.security.text import printable, safe_logger
from mesh.wire.protocol import (
    MAX_INCARNATION,
    UPDATE_ALIVE,
    UPDATE_DEAD,
    UPDATE_LEFT,
    UPDATE_SUSPECT,
)

log = safe_logger("mesh.membership")

Notify = Callable[[Node, "MemberState | None"], None]

MAX_INCARNATION_STEP = 1024   # how far above the known incarnation an update may be


def alive_update(n: Node) -> Update:
    return [UPDATE_ALIVE, n.id, n.incarnation, n.address, "", n.meta_version, n.meta]


def suspect_update(n: Node, origin: str) -> Update:
    return [UPDATE_SUSPECT, n.id, n.incarnation, "", origin]


class StateMachine:
    """Applies updates to the table, queues what is news for gossip, and notifies."""

    def __init__(self, config: MembershipConfig, table: MemberTable, queue: BroadcastQueue,
                 awareness: Awareness, notify: Notify) -> None:
        self.config = config
        self.table = table
        self.me = table.me
        self.queue = queue
        self.awareness = awareness
        self.notify = notify
        self.left = False
        self.suspicions = self.refutations = 0
        self.told_dead = 0      # dead updates about this node refuted (it was declared dead)
        self.members_refused = 0        # new members ignored: the table was full (max_members)
        self.leaps_refused = 0          # updates ignored: their incarnation leapt (MAX_INCARNATION_STEP)
        self.twins: dict[str, int] = {}     # another address of this id: refuted at incarnation

    def apply(self, updates: list[Update], now: float) -> None:
        """Updates piggybacked on a message."""
        for u in updates:
            state, origin = u[0], (u[4] if len(u) > 4 else "")
            if state == UPDATE_ALIVE:
                self.alive(u, now, True)
            elif state == UPDATE_SUSPECT:
                self.suspect(u[1], u[2], origin, now)
            else:
                self.dead(u[1], u[2], origin, now, left=state == UPDATE_LEFT)

    def merge(self, entries: list[Update], source: str, now: float, quiet: bool) -> None:
        """A push-pull's whole member list from ``source``.

        ``quiet``: this node knew no live member when it joined, so what it learns is
        news to it alone and it does not gossip the new members on (memberlist does,
        which at 1,000 nodes fills a joiner's queue with 1,000 updates that everyone
        has). Changes to members it knew are gossiped as usual."""
        for u in entries:
            state = u[0]
            if state == UPDATE_ALIVE:
                self.alive(u, now, not quiet)
            elif state == UPDATE_LEFT:
                self.dead(u[1], u[2], source, now, left=True)
            elif state == UPDATE_SUSPECT and u[3] == self.me.address and u[1] != self.me.id \
                    and not self.left and self.table.get(u[1]) is None:
                # suspected at this node's address: the earlier process here, which the
                # others began to suspect before this one joined (a CI run: b2 never
                # heard of b alive, and b waited out its suspicion). Declared dead now.
                self.alive([UPDATE_ALIVE, u[1], u[2], u[3], "", 0, {}], now, False)
            elif state == UPDATE_DEAD and u[1] == self.me.id:
                self.dead(u[1], u[2], source, now, left=False)   # (refuted, and counted)
            else:      # suspect or dead: suspect it ourselves rather than trust it (memberlist)
                self.suspect(u[1], u[2], source, now)

    def _leap(self, member_id: str, inc: int, known: int) -> bool:
        """Whether ``inc`` is too far above ``known`` to be believed (then it is ignored)."""
        if inc - known <= MAX_INCARNATION_STEP:
            return False
        self.leaps_refused += 1
        if self.leaps_refused <= 10 or self.leaps_refused % 1000 == 0:
            log.warning("membership: ignored an update about %s at incarnation %d, known at %d "
                        "(a leap of more than %d; %d ignored so far)", printable(member_id, 64),
                        inc, known, MAX_INCARNATION_STEP, self.leaps_refused)
        return True

    def alive(self, u: Update, now: float, gossip_new: bool) -> None:
        member_id, inc, address = u[1], u[2], u[3]
        version = u[5] if len(u) > 5 else 0
        me = self.me
        if member_id == me.id:
            if self._leap(member_id, inc, me.incarnation):
                return
            if not self.left and (inc > me.incarnation or (inc == me.incarnation and (
                    address != me.address or version > me.meta_version))):
                other = bool(address) and address != me.address
                if other:
                    self._twin(address, inc)
                self.refute(inc)        # news about an earlier life of this id
                if other and self.twins.get(address) != -1 and len(self.twins) < 100:
                    self.twins[address] = me.incarnation
            return
        meta = u[6] if len(u) > 6 else {}
        node = self.table.get(member_id)
        if node is None:
            if len(self.table) >= self.config.max_members:
                self.members_refused += 1
                if self.members_refused % 10_000 == 1:     # the first, then now and then
                    log.warning("membership: %s knows %d members, the limit (max_members): ignoring "
                                "new ones such as %r (%d ignored so far)", me.id, len(self.table),
                                printable(member_id, 64), self.members_refused)
                return
            node = self.table.add(member_id, address, inc, meta, version, now)
            if gossip_new:
                self.queue.put(member_id, alive_update(node))
            self.notify(node, None)
            if address == me.address and not self.left:
                self._displaced(node, now)
        elif self._leap(member_id, inc, node.incarnation):
            return
        elif inc > node.incarnation:
            node.incarnation, node.address, node.meta, node.meta_version = inc, address, meta, version
            old = self.table.set_state(node, ALIVE, now)
            self.queue.put(member_id, alive_update(node))
            self.notify(node, old)
        elif inc == node.incarnation and version > node.meta_version and node.state in LIVE:
            node.meta, node.meta_version = meta, version
            self.queue.put(member_id, alive_update(node), META)
            self.notify(node, node.state)

    def _displaced(self, node: Node, now: float) -> None:
        """A member new to this node, alive at this node's own address: an earlier process
        there (killed, and restarted under a new name), since one process holds an address.
        Declared dead at once, by the one node that knows it: its peers would otherwise
        suspect it for a suspicion timeout while their probes reach this node, which
        ignores them as meant for another id, and keep sending it work meanwhile. Only
        once, when it is new here: should it be alive after all (two nodes given one
        address), it refutes and stays alive."""
        log.info("membership: %s declares %s dead: this node holds its address %s now",
                 self.me.id, printable(node.id, 64), printable(node.address, 100))
        self.dead(node.id, node.incarnation, self.me.id, now, left=False)

    def _twin(self, address: str, inc: int) -> None:
        """News of this node's id alive at another address. The first is an earlier
        life of the id (a restart on another port), refuted; news from there above the
        incarnation it was refuted with means a process there answers back: two nodes
        run with one id (the same --name twice), and displace each other in every
        member list. Said once per address at ERROR, for the user to act on."""
        seen = self.twins.get(address)
        if seen is None or inc <= seen or seen < 0:
            return
        self.twins[address] = -1          # (said: not again)
        log.error("membership: another node runs with this node's id %r, at %s: node ids must "
                  "be unique in a mesh (two nodes with one id take each other's place in the "
                  "members' lists); stop one, or start it with another --name",
                  printable(self.me.id, 64), printable(address, 100))

    def suspect(self, member_id: str, inc: int, origin: str, now: float) -> None:
        if member_id == self.me.id:
            if not self.left and inc >= self.me.incarnation and \
                    not self._leap(member_id, inc, self.me.incarnation):
                self.refute(inc)
            return
        node = self.table.get(member_id)
        if node is None or inc < node.incarnation or self._leap(member_id, inc, node.incarnation):
            return
        if node.state is SUSPECT:
            node.incarnation = inc
            if node.suspicion is not None and node.suspicion.confirm(origin):
                self.queue.put(member_id, suspect_update(node, origin))
            return
        if node.state is not ALIVE:
            return
        node.incarnation = inc
        old = self.table.set_state(node, SUSPECT, now)
        cfg, n = self.config, self.table.n()
        lo, hi = timing.suspicion_bounds(cfg.suspicion_mult, cfg.suspicion_max_timeout_mult, n,
                                         cfg.probe_interval)
        # Unlike memberlist, an unhealthy node also waits longer before declaring death.
        lo, hi = self.awareness.scale(lo), self.awareness.scale(hi)
        k = timing.expected_confirmations(cfg.suspicion_confirmations, n)
        self.table.suspect(node, Suspicion(origin, now, k, lo, hi))
        if origin == self.me.id:
            self.suspicions += 1
        else:
            # Check it ourselves next: if it is dead, our failed probe is the
            # independent confirmation that brings every suspicion timer down to its
            # minimum. Left to the round robin, we would probe it once per n rounds.
            self.table.probe_first = member_id
        self.queue.put(member_id, suspect_update(node, origin))
        self.notify(node, old)

    def dead(self, member_id: str, inc: int, origin: str, now: float, left: bool) -> None:
        if member_id == self.me.id:
            if not self.left and inc >= self.me.incarnation and \
                    not self._leap(member_id, inc, self.me.incarnation):
                if not left:
                    self.told_dead += 1     # (the node's fence asks what was taken over)
                self.refute(inc)
            return
        node = self.table.get(member_id)
        if node is None or inc < node.incarnation or node.state is LEFT or \
                self._leap(member_id, inc, node.incarnation):
            return
        if node.state is DEAD and not left:
            return
        node.incarnation = inc
        new = LEFT if left else DEAD
        old = self.table.set_state(node, new, now)
        self.queue.put(member_id, [WIRE_STATE[new], member_id, inc, "", origin])
        self.notify(node, old)

    def refute(self, accused: int) -> None:
        me = self.me
        # Never above what the wire carries: peers refuse an update with a higher
        # incarnation, and with it every message that holds our alive update. (Only
        # a peer that lies gets us there; at the top we cannot out-bid an accusation.)
        me.incarnation = min(max(me.incarnation, accused) + 1, MAX_INCARNATION)
        self.refutations += 1
        self.awareness.apply(1)         # Lifeguard: being suspected hints we are slow
        log.debug("membership: %s refutes, incarnation %d", me.id, me.incarnation)
        self.queue.put(me.id, alive_update(me))
