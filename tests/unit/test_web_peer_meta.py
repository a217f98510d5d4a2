"""The dashboard's JSON carries what peers gossip (their meta, in /api/mesh/nodes and
/api/workers), and a peer's meta is whatever it says: a float that is inf or nan, a
map key that is bytes. Real in-process nodes and the node's real HTTP server."""
from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from typing import Any

import pytest
from test_node_inprocess import app, run, until

from mesh.testing import running_node


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _strict(text: str) -> Any:
    """JSON as a browser's JSON.parse reads it: no Infinity, no NaN."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("cpu", float("inf"), None), ("rate", float("nan"), None),
    ("x", {b"raw": 1}, {"b'raw'": 1})])
def test_the_nodes_api_is_json_whatever_a_peer_gossips(key: str, value: Any, shown: Any) -> None:
    """Before: ``json.dumps(..., default=str)`` wrote ``Infinity``/``NaN`` (not JSON: the
    page's ``resp.json()`` failed, and its node view with it, on every node of the
    mesh) and raised on a bytes key (a 500)."""
    async def main() -> None:
        port = _free_port()
        async with running_node(app, name="liar") as liar:
            liar.routing.meta[key] = value     # what it gossips (the meta's last word)
            liar.membership.update_local_meta()
            async with running_node(app, name="web", peers=[liar.address],
                                    http=f"127.0.0.1:{port}") as w:
                await until(lambda: (m := w.membership.member("liar")) is not None
                            and key in m.meta, "the web node to know the liar's meta")
                for path in ("/api/mesh/nodes", "/api/workers"):
                    status, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")
                    assert status == 200, text
                    data = _strict(text)
                    if path == "/api/mesh/nodes":
                        liar_row = next(m for m in data["members"] if m["node"] == "liar")
                        assert liar_row["meta"][key] == shown
                    else:
                        assert "liar" in data
    run(main())


def _first_batch(url: str, naming: str) -> str:
    """The first ``data:`` line of the dashboard's live stream (server-sent events)
    that names ``naming``: a batch before it may hold only the peers' other events
    (seen under load: the test read the liar's first event, not its task's)."""
    with urllib.request.urlopen(url, timeout=20) as r:
        for raw in r:
            line = raw.decode()
            if line.startswith("data: ") and naming in line:
                return line[len("data: "):]
    raise AssertionError(f"the stream ended without a batch naming {naming}")


def test_the_live_stream_is_json_whatever_a_peer_says_in_its_events() -> None:
    """A peer's event (here a task-succeeded whose runtime is inf) reaches every
    browser watching another node's dashboard: its batch was ``Infinity`` too (the
    page's JSON.parse threw on each batch)."""
    async def main() -> None:
        port = _free_port()
        async with running_node(app, name="liar") as liar, \
                running_node(app, name="web", peers=[liar.address], http=f"127.0.0.1:{port}") as w:
            await until(lambda: w.membership.member("liar") is not None, "the web node to know it")
            batch = asyncio.create_task(asyncio.to_thread(
                _first_batch, f"http://127.0.0.1:{port}/api/events", "t-inf"))
            await until(lambda: liar.events.wants("task-succeeded"),
                        "the web node to subscribe to the liar's events")
            while not batch.done():      # (until the browser's subscription is there too)
                liar.events.emit("task-succeeded", uuid="t-inf", runtime=float("inf"))
                await asyncio.sleep(0.1)
            data = _strict(await batch)
            mine = [e for e in data["events"] if e.get("uuid") == "t-inf"]
            assert mine and all(e["runtime"] is None for e in mine), data
    run(main())
