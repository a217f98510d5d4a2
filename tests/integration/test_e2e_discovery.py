"""mDNS discovery with real multicast on loopback (no root): Discovery instances in
this process and in a child process, browse()/browse_sync(), goodbyes, restarts,
malformed peers.

Other programs on this machine may use mDNS on loopback at the same time, so every
test names its nodes with a unique suffix and only looks at those. Waiting is always
for a condition, to a deadline; never a fixed sleep.
"""
from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from mesh.discovery.mdns import SERVICE_TYPE, Discovery, browse, browse_sync
from mesh.wire.protocol import PROTOCOL_VERSION

pytestmark = pytest.mark.mdns

LOOPBACK = ["127.0.0.1"]
DEADLINE = 8.0       # s for anything to be seen; typical times are well under 2 s
ROOT = Path(__file__).resolve().parents[2]


def unique() -> str:
    return uuid.uuid4().hex[:10]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class Recorder:
    """Collects on_found / on_goodbye calls (with loop time) and lets a test wait
    until a condition over them holds."""

    def __init__(self, only: str) -> None:
        self.only = only                 # unique suffix: ignore other programs' nodes
        self.found: list[tuple[str, str, dict[str, str], float]] = []
        self.goodbyes: list[tuple[str, float]] = []
        self._changed = asyncio.Event()

    def on_found(self, node_id: str, endpoint: str, props: dict[str, str]) -> None:
        if self.only in node_id:
            self.found.append((node_id, endpoint, props, time.monotonic()))
            self._changed.set()

    def on_goodbye(self, node_id: str) -> None:
        if self.only in node_id:
            self.goodbyes.append((node_id, time.monotonic()))
            self._changed.set()

    def found_ids(self) -> list[str]:
        return [f[0] for f in self.found]

    def last(self, node_id: str) -> tuple[str, dict[str, str]]:
        ep, props = next((f[1], f[2]) for f in reversed(self.found) if f[0] == node_id)
        return ep, props

    async def wait(self, pred: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
        """Wait until pred() holds; returns the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            if pred():
                return time.monotonic()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; found={self.found_ids()} "
                                     f"goodbyes={self.goodbyes}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass


def discovery(node_id: str, port: int, rec: Recorder, **kw: Any) -> Discovery:
    return Discovery(node_id, f"tcp://127.0.0.1:{port}", rec.on_found, on_goodbye=rec.on_goodbye, **kw)


def test_nodes_find_each_other_say_goodbye_and_come_back(record_property: Callable[[str, object], None]) -> None:
    """Two nodes find each other with the right properties and never themselves; a
    clean stop is seen as a goodbye; the same id restarted is found again; a
    reannounce is seen as an update. Three rounds give the discovery times (printed;
    with -s). The rounds run back to back, so "new finds old" is often ~1 s longer
    than on an idle mesh (~0.15 s): a responder that multicast a record less than a
    second ago must wait before sending it again (RFC 6762 section 14)."""
    u = unique()
    a_id, b_id = f"a-{u}", f"b-{u}"
    times: dict[str, list[float]] = {"new finds old": [], "old finds new": [], "goodbye seen": []}

    async def main() -> None:
        ra, rb = Recorder(u), Recorder(u)
        a = discovery(a_id, 7911, ra)
        await a.start()
        try:
            ports = [7912, 7912, 7913]       # the same object restarted, then a new one
            b = discovery(b_id, ports[0], rb)
            for round_, port in enumerate(ports):
                if round_ and port != ports[round_ - 1]:
                    b = discovery(b_id, port, rb)    # same id, a new endpoint
                t0 = time.monotonic()
                await b.start()
                try:
                    await rb.wait(lambda: a_id in rb.found_ids(), "b to find a")
                    await ra.wait(lambda n=round_ + 1: ra.found_ids().count(b_id) == n, "a to find b")
                    times["new finds old"].append(rb.found[0][3] - t0)
                    times["old finds new"].append(ra.found[-1][3] - t0)
                    ep, props = ra.last(b_id)
                    assert ep == f"tcp://127.0.0.1:{port}"
                    assert props["id"] == b_id and props["proto"] == str(PROTOCOL_VERSION)
                    assert props["ep"] == ep and props["seq"] == "0" and len(props["boot"]) == 12
                    assert rb.last(a_id)[0] == "tcp://127.0.0.1:7911"
                    if round_ == 2:
                        await b.reannounce({"load": "3"})
                        await ra.wait(lambda: ra.last(b_id)[1].get("load") == "3", "a to see the update")
                        assert ra.last(b_id)[1]["seq"] == "1"
                finally:
                    t1 = time.monotonic()
                    await b.stop()
                await ra.wait(lambda n=round_ + 1: len(ra.goodbyes) == n, "a to see b's goodbye")
                times["goodbye seen"].append(ra.goodbyes[-1][1] - t1)
                assert ra.goodbyes[-1][0] == b_id
                rb.found.clear()
            assert a_id not in ra.found_ids() and b_id not in rb.found_ids()   # never themselves
            assert not rb.goodbyes                                               # a never left
        finally:
            await a.stop()

    run(main())
    summary = {k: round(statistics.median(v), 3) for k, v in times.items()}
    record_property("discovery_seconds_median", summary)
    print("\nmDNS on loopback, median of 3 (s):", summary,
          "\nall:", {k: [round(x, 3) for x in v] for k, v in times.items()})


CHILD = """
import asyncio, signal, sys
from mesh.discovery import Discovery

async def main():
    node_id, endpoint, marker = sys.argv[1:4]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    def found(nid, ep, props):
        if marker in nid:
            print("FOUND", nid, ep, props["proto"], flush=True)
    d = Discovery(node_id, endpoint, found)
    await d.start()
    print("STARTED", flush=True)
    await stop.wait()
    await d.stop()
    print("STOPPED", flush=True)

asyncio.run(main())
"""


def test_nodes_in_two_processes_find_each_other() -> None:
    u = unique()
    me, child_id = f"p-{u}", f"c-{u}"

    async def main() -> None:
        rec = Recorder(u)
        lines: list[str] = []
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHILD, child_id, "tcp://127.0.0.1:7921", u,
            cwd=str(ROOT), stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        stdout = proc.stdout

        async def read() -> None:
            while line := await stdout.readline():
                lines.append(line.decode().strip())
                rec._changed.set()
        reader = asyncio.create_task(read())
        d = discovery(me, 7922, rec)
        try:
            await d.start()
            await rec.wait(lambda: child_id in rec.found_ids(), "the child to be found")
            assert rec.last(child_id)[0] == "tcp://127.0.0.1:7921"
            await rec.wait(lambda: f"FOUND {me} tcp://127.0.0.1:7922 {PROTOCOL_VERSION}" in lines,
                           f"the child to find us (child said {lines})")
            proc.terminate()                          # SIGTERM: the child stops cleanly
            await rec.wait(lambda: [g[0] for g in rec.goodbyes] == [child_id], "the child's goodbye")
            assert await asyncio.wait_for(proc.wait(), DEADLINE) == 0
            assert not any("FOUND " + child_id in line for line in lines)   # never itself
        finally:
            if proc.returncode is None:
                proc.kill()
            await reader
            await proc.wait()
            await d.stop()
        assert "STOPPED" in lines

    run(main())


def test_browse_sync_finds_a_running_node() -> None:
    """The node is bound to the wildcard (announced on loopback only, so nothing
    leaves this machine): it advertises all its addresses, and a loopback browser
    picks 127.0.0.1."""
    u = unique()
    node_id = f"n-{u}"

    async def main() -> None:
        rec = Recorder(u)
        d = Discovery(node_id, "tcp://0.0.0.0:7931", rec.on_found, interfaces=LOOPBACK)
        await d.start()
        try:
            loop = asyncio.get_running_loop()
            deadline = time.monotonic() + DEADLINE
            found: dict[str, str] = {}
            while node_id not in found:
                # browse returns once *some* node answered; another program's node on
                # loopback may answer first, so browse again until ours is there
                assert time.monotonic() < deadline, f"browse_sync never found {node_id}: {found}"
                found = await loop.run_in_executor(None, browse_sync, 3.0, LOOPBACK)
            assert found[node_id] == "tcp://127.0.0.1:7931"
            # the async flavour, too
            found = await browse(3.0, LOOPBACK)
            assert found.get(node_id, "tcp://127.0.0.1:7931") == "tcp://127.0.0.1:7931"
        finally:
            await d.stop()

    run(main())


def test_browse_sync_returns_empty_at_the_timeout_when_no_node_runs() -> None:
    t0 = time.monotonic()
    # a mesh no node runs (another program's nodes on loopback, such as a demo left
    # running, are of other meshes)
    found = browse_sync(1.0, LOOPBACK, mesh=f"nobody-{unique()}")
    elapsed = time.monotonic() - t0
    assert found == {}
    assert elapsed >= 0.9, elapsed      # it waited its whole timeout (however slow the machine)


def test_malformed_peers_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    u = unique()
    me, good, boom, future = f"m-{u}", f"good-{u}", f"boom-{u}", f"future-{u}"
    bad = {   # instance label -> TXT (dict, or raw bytes as on the wire)
        f"bad-utf8-{u}": {"id": b"\xff\xfe", "proto": "1", "ep": "tcp://127.0.0.1:1"},
        f"bad-noep-{u}": {"id": f"x-{u}", "proto": "1"},
        f"bad-proto-{u}": {"id": f"y-{u}", "proto": "one", "ep": "tcp://127.0.0.1:1"},
        f"bad-raw-{u}": b"\x40id=\xff" + b"\x03a=b" + b"\x00" + b"\xff",   # lengths overrun
        f"bad-empty-{u}": b"",
    }

    async def main() -> None:
        rec = Recorder(u)

        def on_found(node_id: str, endpoint: str, props: dict[str, str]) -> None:
            if node_id == boom:
                raise RuntimeError("a buggy callback")
            rec.on_found(node_id, endpoint, props)

        d = Discovery(me, "tcp://127.0.0.1:7941", on_found)
        await d.start()
        other = AsyncZeroconf(interfaces=LOOPBACK)
        try:
            def info(label: str, props: dict[str, Any] | bytes, port: int = 1) -> AsyncServiceInfo:
                return AsyncServiceInfo(SERVICE_TYPE, f"{label}.{SERVICE_TYPE}", port=port,
                                        properties=props, parsed_addresses=["127.0.0.1"])

            infos = [info(label, txt) for label, txt in bad.items()]
            infos.append(info(boom, {"id": boom, "proto": "1", "ep": "tcp://127.0.0.1:7942"}))
            infos.append(info(future, {"id": future, "proto": str(PROTOCOL_VERSION + 1),
                                       "ep": "tcp://127.0.0.1:7943"}))
            # the good one last: once it is found, the others have been processed too
            announcing = [await other.async_register_service(i, cooperating_responders=True)
                          for i in infos]
            await asyncio.gather(*announcing)
            await other.async_register_service(
                info(good, {"id": good, "proto": "1", "ep": "tcp://127.0.0.1:7944"}),
                cooperating_responders=True)
            await rec.wait(lambda: good in rec.found_ids(), "the good service")
            await rec.wait(lambda: all(f"bad-{k}-{u}" in caplog.text
                                       for k in ("utf8", "noep", "proto", "raw", "empty")),
                           f"warnings for every bad service: {caplog.text}")
            await rec.wait(lambda: future in caplog.text and boom in caplog.text,
                           "the incompatible node and the failing callback to be logged")
            assert rec.found_ids() == [good]
            assert rec.last(good)[0] == "tcp://127.0.0.1:7944"
        finally:
            await other.async_close()
            await d.stop()

    with caplog.at_level(logging.WARNING, logger="mesh.discovery"):
        run(main())
    assert "speaks protocol" in caplog.text and "a buggy callback" in caplog.text
