"""The membership transport contract (tests/unit/test_membership_swim.py), run
against the real ZeroMQ transport on loopback: ROUTER front doors bound on
127.0.0.1, PeerSockets DEALERs, real Memberships driven by one asyncio loop."""
from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_membership_swim import TransportContract, TransportHarness  # noqa: E402

from mesh.clock import Clock  # noqa: E402
from mesh.membership import TEST, Membership, Transport  # noqa: E402
from mesh.node.peers import PeerSockets, ZmqTransport  # noqa: E402
from mesh.node.zmqloop import SocketDriver  # noqa: E402


class ZmqHarness:
    """Each transport is a node's front door (a ROUTER) plus its PeerSockets."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.loop = asyncio.new_event_loop()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.routers: dict[str, zmq.Socket[bytes]] = {}

    def new_transport(self) -> Transport:
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind("tcp://127.0.0.1:*")
        address = router.getsockopt_string(zmq.LAST_ENDPOINT)
        transport = ZmqTransport(PeerSockets(self.ctx, address.encode()), address)

        def deliver(frames: list[bytes]) -> None:    # what the node's front door does
            for f in frames[1:]:
                transport.deliver(frames[0].hex(), f)
        driver = SocketDriver(router, deliver, f"router {address}")
        self.routers[address] = router
        self.tasks[address] = [self.loop.create_task(driver.run())]
        return transport

    def start(self, membership: Membership) -> None:
        self.tasks[membership.address].append(self.loop.create_task(membership.run()))

    def crash(self, transport: Transport) -> None:
        for t in self.tasks.pop(transport.address, []):
            t.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))     # let the cancellations land
        transport.close()
        self.routers.pop(transport.address).close(linger=0)

    def run_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        async def poll() -> bool:
            deadline = time.monotonic() + timeout
            while not condition():
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.01)
            return True
        return self.loop.run_until_complete(poll())

    def close(self) -> None:
        for tasks in self.tasks.values():
            for t in tasks:
                t.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        for r in self.routers.values():
            r.close(linger=0)
        self.ctx.destroy(linger=0)
        self.loop.close()


class TestZmqTransportContract(TransportContract):
    config = TEST
    timeout = 15.0

    @pytest.fixture
    def harness(self) -> Iterator[TransportHarness]:
        h = ZmqHarness()
        yield h
        h.close()
