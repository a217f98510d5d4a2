"""meshctl's one-shot control sockets (mesh/client/control.py) against a server that
refuses their handshake: the answer is the refusal, never a hang."""
from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import zmq

from mesh.client.control import ControlClient, KeyRefusal
from mesh.security.curve import Security


class _SlowConnect(zmq.Socket):  # type: ignore[type-arg]
    """A socket whose thread pauses right after connect(), as on a loaded machine: the
    server's refusal of the handshake comes before the first send."""

    pauses = itertools.cycle([0.005, 0.02, 0.05, 0.1])

    def connect(self, addr: str) -> Any:
        out = super().connect(addr)
        time.sleep(next(self.pauses))
        return out


class _SlowContext(zmq.Context):  # type: ignore[type-arg]
    _socket_class = _SlowConnect


def test_a_handshake_refused_before_the_first_send_is_a_refusal_not_a_hang() -> None:
    """A CURVE server (a keyed node's front door) refuses a keyless handshake. When
    that happens before the first send, libzmq leaves the socket no pipe for a while
    (in about half the tries here) and a blocking send waited for ever: a cluster
    test's `meshctl ping` without keys hung 30 s in CI (session 16). Now every ask
    ends in the refusal and every noreply send returns."""
    server = zmq.Context()
    pub, sec = zmq.curve_keypair()
    router = server.socket(zmq.ROUTER)
    router.curve_server, router.curve_secretkey, router.curve_publickey = True, sec, pub
    ep = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    ctx = _SlowContext()
    done: dict[str, Any] = {"replies": [], "sent": 0}

    def ask() -> None:
        with ControlClient(ctx, security=Security(None)) as cc:
            for _ in range(16):
                done["replies"].append(cc.broadcast([ep], "ping", timeout=2.0))
                cc.send([ep], "ping", {"noreply": True})
                done["sent"] += 1

    t = threading.Thread(target=ask, daemon=True)
    try:
        t.start()
        t.join(60)
        assert not t.is_alive(), f"a send on a socket whose handshake was refused blocked: {done}"
    finally:
        ctx.destroy(linger=0)
        router.close(0)
        server.term()
    assert len(done["replies"]) == done["sent"] == 16, done
    for replies in done["replies"]:
        assert isinstance(replies[ep], KeyRefusal) and "requires keys" in replies[ep], replies
