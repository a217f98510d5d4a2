"""A Membership fed nonsense by a peer: messages that decode (mesh.protocol checks
their shape) but say absurd things.

A node hands every membership message that decodes to its Membership
(node._on_message -> transport.deliver -> Membership.handle), so the shape checks
at the decoder are all that stands between a stranger and the SWIM state machine.
Here a real Membership (n0, the victim) meshed with two honest ones (n1, n2) on
the in-memory network with a fake clock is handed hypothesis-made PING, PING_REQ,
PING_ACK, PING_NACK, GOSSIP, PUSH_PULL and PUSH_PULL_REPLY messages: updates about
itself, about its peers and about members that do not exist, at incarnations up
to the wire's limit, in every state, with addresses that lead nowhere, meta of any
shape, sequence numbers that match or not, its own id and address as the sender,
interleaved with time passing so its timers act on what it was told. Frames that
fail to decode go to handle() as bytes (it must count and drop them).

After each run: nothing raised; the victim still knows itself as alive and has not
left; its member table is consistent; and nothing it sent was refused by the
honest peers (what it says on the wire stays within what the wire allows).
"""
from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.exceptions import DecodeError, EncodeError
from mesh.membership import TEST, Membership, MemberState
from mesh.membership.sim import SimCluster
from mesh.membership.table import LIVE
from mesh.wire.protocol import (
    MAX_ID_LEN,
    Ack,
    Control,
    Gossip,
    Message,
    Ping,
    PingAck,
    PingNack,
    PingReq,
    PushPull,
    PushPullReply,
    Submit,
    decode,
    encode,
)

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
MAX_U63 = 2**63 - 1
VICTIM = "n0"
# TEST, with the dead forgotten and push-pulls made sooner, so that a short run
# takes what the victim was told through every timer it has
CONFIG = dataclasses.replace(TEST, dead_node_reclaim=3.0, push_pull_interval=1.0)
SETTLE = 8.0       # simulated s: past the longest suspicion (~2.4 s) and the reclaim

# ---- what a hostile peer says -------------------------------------------------------------

ids = (st.sampled_from([VICTIM, VICTIM, "n1", "n2", "ghost", "x" * MAX_ID_LEN, "é", " ", "\x00", "n0 "])
       | st.text(min_size=1, max_size=6))
addresses = (st.sampled_from(["mem://n0", "mem://n1", "mem://n2", "mem://nowhere", "x", "tcp://",
                              "tcp://127.0.0.1:1", "tcp://[::1", "not an address", " " * 500, "\x00"])
             | st.text(min_size=1, max_size=10))
incarnations = st.sampled_from([0, 0, 1, 2, 3, 2**31, 2**62, MAX_U63 - 1, MAX_U63, MAX_U63]) | st.integers(0, MAX_U63)
seqs = st.integers(0, 40) | st.sampled_from([MAX_U63])
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=5)
# the keys the node reads from a peer's meta (its load, placement and shedding) and others
metas = (st.dictionaries(st.sampled_from(["busy", "total", "queued", "rate", "cpu", "rss", "tasks", "took"])
                         | st.text(max_size=5), values, max_size=6)
         | st.just({f"k{i}": i for i in range(64)}) | st.just({}))


@st.composite
def updates_(draw: st.DrawFn) -> list[Any]:
    state = draw(st.integers(0, 3))
    address = draw(addresses) if state == 0 else draw(st.just("") | addresses)
    u: list[Any] = [state, draw(ids), draw(incarnations), address]
    for more in (ids | st.just(""), incarnations, metas):      # origin, meta_version, meta
        if not draw(st.integers(0, 3)):
            return u
        u.append(draw(more))
    if not draw(st.integers(0, 4)):
        u += draw(st.lists(values, min_size=1, max_size=3))    # items from the future
    return u


updates = st.lists(updates_(), max_size=6)
membership_messages = st.one_of(
    st.builds(Ping, seqs, ids, ids, addresses, updates),
    st.builds(PingReq, seqs, ids, addresses, ids, addresses),
    st.builds(PingAck, seqs, ids, updates),
    st.builds(PingNack, seqs, ids),
    st.builds(Gossip, ids, updates),
    st.builds(PushPull, ids, addresses, updates, st.booleans()),
    st.builds(PushPullReply, ids, updates),
)
other_messages = st.sampled_from([
    Submit("t", "tasks.add", b""), Control("r", "ping"), Ack(["t"], "n1"),
])
# (message, hand it over decoded or as its bytes, simulated seconds to let pass after it)
steps = st.tuples(membership_messages | other_messages, st.booleans(),
                  st.sampled_from([0.0, 0.0, 0.001, 0.05, 0.3, 1.5]))


# ---- the victim and its invariants ----------------------------------------------------------

def mesh(seed: int) -> tuple[SimCluster, Membership]:
    sim = SimCluster(CONFIG, seed=seed)
    sim.bootstrap(3)
    sim.run_for(0.5)
    return sim, sim.nodes[VICTIM]


def hand_over(m: Membership, msg: Message, as_bytes: bool) -> bool:
    """Give ``msg`` to ``m`` as a node would: decoded if it decodes, else as bytes
    (handle() refuses them). True if it decoded."""
    try:
        frame = encode(msg)
    except EncodeError:
        return False
    try:
        decoded = decode(frame)
    except DecodeError:
        m.handle("evil", frame)
        return False
    m.handle("evil", frame if as_bytes else decoded)
    return True


def check_consistent(m: Membership) -> None:
    """The victim's view of itself and its member table hold together."""
    me = m.member(m.id)
    assert me is not None and me.state is ALIVE and not m.has_left
    assert 0 <= m.incarnation <= MAX_U63
    members = m.members()
    assert members[0].id == m.id
    assert len({x.id for x in members}) == len(members)
    assert all(isinstance(x.state, MemberState) and 0 <= x.incarnation <= MAX_U63 for x in members)
    assert m.alive_members()[0].id == m.id
    table = m._table
    nodes = table.nodes
    assert m.id not in nodes and len(nodes) <= m.config.max_members
    assert table.live == sum(1 for n in nodes.values() if n.state in LIVE)
    assert table.suspects == {i for i, n in nodes.items() if n.state is SUSPECT}
    assert all(nodes[i].suspicion is not None for i in table.suspects)
    assert set(table.gone) == {i for i, n in nodes.items() if n.state in (DEAD, LEFT)}
    assert sorted(table._ids) == sorted(nodes)
    assert all(table._ids[table._id_at[i]] == i for i in nodes)
    st_ = m.stats()
    assert st_.messages_received >= st_.decode_errors >= 0


def honest_peers_refused_nothing(sim: SimCluster) -> None:
    for peer in ("n1", "n2"):
        assert sim.nodes[peer].stats().decode_errors == 0, \
            f"{peer} refused frames: the victim sent something the wire does not allow"


# ---- the tests ---------------------------------------------------------------------------

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=1, max_size=12), st.integers(0, 3))
def test_nonsense_from_a_peer_never_breaks_membership(script: list[tuple[Message, bool, float]],
                                                      seed: int) -> None:
    sim, victim = mesh(seed)
    for msg, as_bytes, wait in script:
        hand_over(victim, msg, as_bytes)
        check_consistent(victim)
        if wait:
            sim.run_for(wait)          # timers act on it: probes, suspicions, gossip, forgetting
            check_consistent(victim)
    sim.run_for(SETTLE)          # past every suspicion timer, push-pulls, the reclaim of the dead
    check_consistent(victim)
    honest_peers_refused_nothing(sim)


def test_an_accusation_at_the_highest_incarnation_is_ignored() -> None:
    # Once, the victim refuted with incarnation 2**63 (beyond the wire), then at 2**63-1,
    # where any later "dead at 2**63-1" was final: nobody can out-bid it. An incarnation
    # may not leap (state.MAX_INCARNATION_STEP): the accusation is ignored, the victim
    # keeps its small number and stays alive everywhere.
    sim, victim = mesh(1)
    for state in (1, 2, 1):
        victim.handle("evil", Gossip("evil", [[state, VICTIM, MAX_U63, "", "evil"]]))
        sim.run_for(2.0)
    assert victim.incarnation < 10
    check_consistent(victim)
    sim.run_for(SETTLE)
    honest_peers_refused_nothing(sim)
    assert sim.seen_by_all(VICTIM, ALIVE)


def test_a_forged_death_at_a_leap_is_ignored_by_peers() -> None:
    # The attack: one GOSSIP frame declaring a live node dead at 2**63-1. A peer
    # that knows the victim at a small incarnation ignores it; an honest step is taken.
    sim, victim = mesh(1)
    n1 = sim.nodes["n1"]
    known = n1.member(VICTIM).incarnation              # type: ignore[union-attr]
    n1.handle("evil", Gossip("evil", [[2, VICTIM, MAX_U63, "", "evil"]]))
    n1.handle("evil", Gossip("evil", [[2, VICTIM, known + 5000, "", "evil"]]))
    assert n1.member(VICTIM).state == ALIVE            # type: ignore[union-attr]
    sim.run_for(SETTLE)
    assert sim.seen_by_all(VICTIM, ALIVE)
    n1.handle("evil", Gossip("evil", [[1, VICTIM, known + 1, "", "evil"]]))   # within bounds
    assert n1.member(VICTIM).state == SUSPECT          # type: ignore[union-attr]
    sim.run_for(SETTLE)                                # the victim refutes it
    assert sim.seen_by_all(VICTIM, ALIVE)


def test_a_flood_of_made_up_members_is_declared_dead_and_forgotten() -> None:
    # Members that exist only in a hostile push-pull, at addresses that lead
    # nowhere, with absurd meta: the victim probes them (slowly: they never NACK,
    # so Lifeguard makes it doubt itself), they go dead everywhere and are
    # forgotten; the honest members stay alive throughout.
    sim, victim = mesh(2)
    rng = random.Random(5)
    fake = [[0, f"fake-{i}", rng.randrange(2**63), addr, "", rng.randrange(5), {"total": float("inf")}]
            for i, addr in enumerate(["x", "tcp://", "mem://nowhere", "tcp://127.0.0.1:1", " "] * 4)]
    victim.handle("evil", decode(encode(PushPull("evil", "mem://nowhere", fake, join=True))))
    check_consistent(victim)
    assert len(victim.members()) == 3 + len(fake)

    def only_the_real_ones() -> bool:
        return all(sorted(x.id for x in m.members()) == ["n0", "n1", "n2"] for m in sim.nodes.values())

    deadline = sim.now + 600.0
    while not only_the_real_ones() and sim.now < deadline:
        sim.run_for(1.0)
        check_consistent(victim)
        for m in sim.nodes.values():
            assert all(m.member(i).state is ALIVE for i in ("n0", "n1", "n2")), m.id  # type: ignore[union-attr]
    assert only_the_real_ones()
    honest_peers_refused_nothing(sim)


def test_a_peer_cannot_grow_the_member_table_without_bound(caplog: pytest.LogCaptureFixture) -> None:
    # One PUSH_PULL of 100,000 made-up members (a 4 MB frame) used to cost a node
    # ~90 MB and, probing them at addresses that lead nowhere, its whole probe
    # round. The table stops at max_members; the real members keep their places,
    # and once the made-up ones are dead and forgotten there is room again.
    config = dataclasses.replace(CONFIG, max_members=50)
    sim = SimCluster(config, seed=3)
    sim.bootstrap(3)
    sim.run_for(0.5)
    victim = sim.nodes[VICTIM]
    fake = [[0, f"fake-{i}", 1, "mem://nowhere"] for i in range(500)]
    with caplog.at_level(logging.WARNING, logger="mesh.membership"):
        victim.handle("evil", decode(encode(PushPull("evil", "mem://nowhere", fake))))
    assert len(victim.members()) == 1 + 50
    assert "ignoring new ones" in caplog.text
    assert {"n1", "n2"} <= {m.id for m in victim.members()}
    check_consistent(victim)
    assert sim.run_until(lambda: len(victim.members()) == 3, timeout=600.0)
    check_consistent(victim)
    victim.handle("evil", decode(encode(Gossip("evil", [[0, "late", 1, "mem://late"]]))))
    assert victim.member("late") is not None
