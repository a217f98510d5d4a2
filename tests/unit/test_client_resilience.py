"""The client's I/O thread survives a node that membership calls dead while it keeps
talking (a cut between nodes only): real sockets, two scripted ROUTER 'nodes'."""
from __future__ import annotations

import threading
from typing import Any

import zmq
from harness import wait_until

from mesh.client.io import Client
from mesh.config import Config
from mesh.wire.protocol import Ack, Control, ControlReply, decode, encode


def _bound_router(ctx: zmq.Context[Any]) -> tuple[zmq.Socket[bytes], int]:
    """A ROUTER bound here, on a port the kernel picks (a port found free and bound
    later can be taken by another process in between)."""
    s: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.ROUTER_HANDOVER, 1)
    return s, s.bind_to_random_port("tcp://127.0.0.1")


def test_the_io_thread_survives_a_node_declared_dead_that_keeps_talking() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    (sa, pa), (sb, pb) = _bound_router(ctx), _bound_router(ctx)
    ea, eb = f"tcp://127.0.0.1:{pa}", f"tcp://127.0.0.1:{pb}"
    state = {"b": "alive", "flip": False, "stop": False}

    def node(s: zmq.Socket[bytes], name: str) -> None:     # the socket moves to this thread
        peers: set[bytes] = set()
        try:
            while not state["stop"]:
                if s.poll(0 if name == "B" else 20):
                    ident, *frames = s.recv_multipart()
                    peers.add(ident)
                    for f in frames:
                        m = decode(f)
                        if isinstance(m, Control) and m.command == "members":
                            b = state["b"] if name == "A" else "alive"
                            members = [{"node": "A", "endpoint": ea, "state": "alive", "load": [0, 1, 0]},
                                       {"node": "B", "endpoint": eb, "state": b, "load": [0, 1, 0]}]
                            s.send_multipart([ident, encode(ControlReply(m.req_id, True, name, members))])
                            if name == "A" and state["flip"]:      # A: B is dead, alive, dead...
                                state["b"] = "alive" if state["b"] == "dead" else "dead"
                if name == "B":            # B keeps sending to the client all along
                    for p in list(peers):
                        s.send_multipart([p, encode(Ack([], "B", [0, 1, 0]))])

        finally:
            s.close(linger=0)

    threads = [threading.Thread(target=node, args=(s, n), daemon=True)
               for s, n in ((sa, "A"), (sb, "B"))]
    for t in threads:
        t.start()
    client = Client(Config(), [ea])
    try:
        wait_until(lambda: len(client.links) == 2, what="the client to learn B")
        state["flip"] = True

        def flipped_a_few_times() -> bool:
            assert client._thread.is_alive(), "the client's I/O thread died"
            return client.links[eb].reconnects >= 3      # B was reset and came back, often
        wait_until(flipped_a_few_times, timeout=60, what="B to be declared dead and back 3 times",
                   interval=0.1)
    finally:
        state["stop"] = True
        client.close(linger=0)
        for t in threads:
            t.join(30)
        # destroy, not term: under a loaded machine a scripted node may still hold its
        # socket here, and term() would then block forever (no pytest timeout reaches it)
        ctx.destroy(linger=0)
