"""What a node's beat tells its peers and hears from them (docs/periodic.md): its
firings (``beat-fired``, and all it knows in a ``beat-sync`` to a member that appears),
and, as a node settles, that it has (``settled``) and the peers' confirmations that
they count it as a firer (``counted``, with the entries they fired until then and it
takes: ``handed``). ``PeerTalk`` is a part of mesh.node.beat.Beat, kept here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mesh.clock import Clock
from mesh.node.beat_state import AHEAD_MAX, Fired, LastFirings, hrw
from mesh.node.peers import request_id
from mesh.periodic import Schedule
from mesh.security.text import safe_logger
from mesh.wire.protocol import Control, encode

log = safe_logger("mesh.beat")

MAX_SYNC = 500         # firings per beat-sync message
MAX_HANDED = 100_000   # entry names in a beat-sync's handed


class PeerTalk:
    """The beat's messages to and from peers; Beat (mesh/node/beat.py) has the state."""

    clock: Clock
    node: Any
    schedule: Schedule | None
    digest: str
    keys: dict[str, str]
    store: LastFirings | None
    next_look: dict[str, float]
    settled: bool
    settled_at: float
    hold: float
    _unconfirmed: set[str]
    _counted: dict[str, str]
    _handed: dict[str, str]
    _ahead: set[str]

    if TYPE_CHECKING:                   # (Beat's)
        def _alive(self) -> list[Any]: ...
        def firers(self) -> list[str]: ...

    def _learn(self, f: Fired) -> bool:
        assert self.store is not None
        if self.keys.get(f.entry) != f.key:
            return False               # not our entry, or defined differently here
        if self.store.learn(f):
            self.next_look.pop(f.entry, None)
            return True
        return False

    def on_fired(self, args: dict[str, Any]) -> None:
        try:
            f = Fired.from_wire(args)
        except ValueError as e:        # (one line, as in a beat-sync: not a traceback)
            log.warning("beat: a peer sent a bad firing: %s", e)
            return
        ours = self.store.get(f.entry) if self.store is not None else None
        if ours is not None and ours.due == f.due and ours.node == self.node.name != f.node:
            log.debug("beat: %s fired %s (due %s) too, as this node did: it runs once (one id)",
                      f.node, f.entry, f.due)
        self._learn_told(f)

    def _learn_told(self, f: Fired) -> bool:
        """``_learn`` a firing a peer told of, unless it is due more than AHEAD_MAX ahead
        of this node's clock: the firing node's clock is ahead (or this one's behind),
        and learnt, it stopped the entry here (no run is due after it) until this clock
        reached it, also after a takeover, and was told on to every node. Said in one
        WARNING per firing node, then at DEBUG."""
        ahead = f.due - self.clock.time()
        if ahead <= AHEAD_MAX:
            return self._learn(f)
        say = log.debug if f.node in self._ahead else log.warning
        if len(self._ahead) < MAX_SYNC:      # (names a peer sends: a bounded set)
            self._ahead.add(f.node)
        say("beat: a firing of %s by %s is due %.0f s ahead of this node's clock: not learnt "
            "(firings due over %g s ahead are refused: is %s's clock, or this node's, wrong?)",
            f.entry, f.node, ahead, AHEAD_MAX, f.node)
        return False

    def on_sync(self, args: dict[str, Any]) -> dict[str, int]:
        """A peer's firings; with ``settled`` (node, digest, boot), the peer says it has
        settled and fires from now on; with ``counted`` (a boot) and ``node``, a peer
        confirms that it counts this node (that boot of it) as a firer."""
        fired = args.get("fired")
        if not isinstance(fired, list):
            raise ValueError("beat-sync needs 'fired': a list of firings")
        learnt = 0
        for item in fired[:MAX_SYNC]:
            try:
                learnt += self._learn_told(Fired.from_wire(item))
            except ValueError as e:
                log.warning("beat: a peer sent a bad firing: %s", e)
        try:
            if "settled" in args:
                self._on_settled(args["settled"])
            if "counted" in args:
                peer = _text(args, "node")
                handed = _names(args, "handed")
                if _text(args, "counted") == self.node.boot and peer in self._unconfirmed:
                    self._unconfirmed.discard(peer)
                    self._handed.update((name, peer) for name in handed if name in self.keys)
                    log.debug("beat: %s counts this node as a firer%s", peer,
                              f", and fired until then {len(handed)} entr"
                              f"{'y' if len(handed) == 1 else 'ies'} it takes" if handed else "")
        except ValueError as e:
            log.warning("beat: a peer sent a bad beat-sync: %s", e)
        return {"learnt": learnt}

    def _on_settled(self, said: Any) -> None:
        """A peer says it settled: count it as a firer at once (its meta says so only
        when gossip brings it), and confirm, with everything this node fired before.
        Only a member alive here, that boot of it: it asks again until then."""
        if not isinstance(said, dict):
            raise ValueError("beat-sync 'settled' must be a map (node, digest, boot)")
        peer, digest, boot = _text(said, "node"), _text(said, "digest"), _text(said, "boot")
        member = next((m for m in self._alive() if m.id == peer), None)
        if member is None or member.meta.get("boot") != boot:
            log.debug("beat: %s says it settled, but that process is not an alive member "
                      "here yet: not counted (it says so again)", peer)
            return
        if digest == self.digest and self._counted.get(peer) != boot:
            self._counted[peer] = boot
            log.debug("beat: %s settled: it fires its entries from now on", peer)
        self._sync_to(member.address, counted=boot, handed=self._handing(peer))

    def _handing(self, peer: str) -> list[str]:
        """The entries this node fired until it counted ``peer`` as a firer, which
        ``peer`` fires from now on: told with the confirmation, so that ``peer`` fires
        each run due since this node's last (``_fire_handed``). Only when this node was
        firing: settled, its own hold over (nodes started together fired nothing)."""
        if self.schedule is None or not self.settled or self._unconfirmed \
                or self.clock.time() - self.settled_at < self.hold:
            return []
        firers = self.firers()
        if peer not in firers:
            return []
        without = [f for f in firers if f != peer]
        return [name for name in self.schedule.entries
                if hrw(name, firers) == peer and hrw(name, without) == self.node.name]

    def _sync_message(self, fired: list[dict[str, Any]], **extra: Any) -> Control:
        return Control(request_id("beat-sync", self.node.name), "beat-sync",
                       {"fired": fired, "noreply": True, **extra})

    def _sync_to(self, address: str, counted: str | None = None,
                 handed: list[str] | None = None) -> None:
        """Every firing known here, to ``address``; with ``counted``, in its last
        message, the confirmation that it counts that boot of the peer as a firer, and
        the entries this node fired until then that the peer takes (``handed``)."""
        items = [f.to_wire() for f in self.store.last.values()] if self.store is not None else []
        if not items and counted is None:
            return
        chunks = [items[i:i + MAX_SYNC] for i in range(0, len(items), MAX_SYNC)] or [[]]
        for n, chunk in enumerate(chunks, 1):
            extra = {"counted": counted, "node": self.node.name, "handed": handed or []} \
                if counted is not None and n == len(chunks) else {}
            self._tell(self._sync_message(chunk, **extra), [address])

    def _alive_addresses(self) -> list[str]:
        return [m.address for m in self._alive()]

    def _tell(self, msg: Control, addresses: list[str]) -> None:
        transport = self.node.transport
        if transport is None:
            return
        frame = encode(msg)
        for address in addresses:
            transport.send(address, frame)


def _text(args: dict[str, Any], name: str) -> str:
    v = args.get(name)
    if not isinstance(v, str) or not v or len(v) > 200:
        raise ValueError(f"beat-sync field {name!r} is missing or bad: {v!r}"[:200])
    return v


def _names(args: dict[str, Any], name: str) -> list[str]:
    """An optional list of entry names (absent: none; an older node sends none)."""
    v = args.get(name, [])
    if not isinstance(v, list) or len(v) > MAX_HANDED \
            or not all(isinstance(x, str) and 0 < len(x) <= 200 for x in v):
        raise ValueError(f"beat-sync field {name!r} is bad: {v!r}"[:200])
    return v
