"""A peer's gossiped Lamport ``clock`` (meta) is whatever it says. Real in-process
nodes (mesh.testing.running_node), real membership over real sockets."""
from __future__ import annotations

import logging

import pytest
from test_node_inprocess import app, client, run, until

from mesh.node import events as events_mod
from mesh.testing import running_node


def test_a_peer_clock_past_what_msgpack_holds_is_not_taken(caplog: pytest.LogCaptureFixture) -> None:
    """Every heartbeat a node takes the highest clock its peers gossip. A peer saying
    2**64 - 1 (msgpack's largest integer) gave the node that clock; its next event made
    it 2**64, which its own meta then carried: every membership message it sent failed
    to encode ('cannot encode PingAck: Integer value out of range'), its peers declared
    it dead, and a client's task sent to it was never answered. (A node with an event
    listener or subscriber: the dashboard, meshctl events.) And the clock spread: every
    node merged it, each one lost at its next event. A clock past MAX_CLOCK is not
    taken (said once per peer)."""
    async def main() -> None:
        async with running_node(app, name="liar") as liar:
            liar.routing.meta["clock"] = 2**64 - 1    # what it gossips (the meta's last word)
            liar.membership.update_local_meta()
            async with running_node(app, name="victim", peers=[liar.address]) as v:
                v.events.listeners.append(lambda body: None)   # (as --http's dashboard)
                await until(lambda: (m := v.membership.member("liar")) is not None
                            and m.meta.get("clock") == 2**64 - 1, "the victim to know the meta")
                # what each heartbeat does: the clocks merged, then a node-heartbeat event
                v.heartbeat.merge_clocks()
                v.events.emit("node-heartbeat", **v.heartbeat.node_fields())
                v.membership.update_local_meta()    # its meta, with its clock, gossiped
                clock = v.events.clock
                await until(lambda: (m := liar.membership.member("victim")) is not None
                            and m.meta.get("clock") == clock,
                            "the liar to have the victim's meta with its clock")
                async with client(v) as c:
                    assert await c.send_task("fast.add", (1, 2)) == 3
                assert liar.membership.member("victim").state.value == "alive"  # type: ignore[union-attr]
                v.heartbeat.merge_clocks()          # said once, not at each heartbeat
    with caplog.at_level(logging.WARNING, logger=events_mod.log.name):
        run(main())
    said = [r for r in caplog.records if "clock" in r.getMessage() and "liar" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]


def test_a_peer_clock_up_to_the_bound_is_taken() -> None:
    p = events_mod.Publisher(None, "n")
    assert p.tick(events_mod.MAX_CLOCK) and p.clock == events_mod.MAX_CLOCK
    assert not p.tick(events_mod.MAX_CLOCK + 1) and p.clock == events_mod.MAX_CLOCK
    assert p.tick(5) and p.clock == events_mod.MAX_CLOCK        # (behind ours: nothing to take)
