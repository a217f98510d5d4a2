"""Celery's health-check idioms on real nodes, with ``from mesh import Mesh as Celery``:
``app.control.ping(timeout=1)``, ``app.control.inspect().ping()`` and
``.active_queues()``, ``meshctl inspect ping`` as a liveness probe (exit 0 / 1)."""
from __future__ import annotations

import json
from typing import Any

from harness import MESHCTL, free_port, run_program

from mesh import Mesh as Celery
from mesh.cli.common import EXIT_FAILURE, EXIT_OK

PONG = {"ok": "pong"}


def _app(*endpoints: str) -> Any:
    return Celery("probe", peers=list(endpoints), mdns=False)


def test_control_ping_and_inspect_as_celery(start_node: Any) -> None:
    some = start_node(app="routing_app", name="q-some", queues="reports,media")
    every = start_node(app="routing_app", name="q-every", peers=some.endpoint)
    app = _app(some.endpoint, every.endpoint)
    try:
        pongs = app.control.ping(timeout=1)
        assert isinstance(pongs, list)
        assert sorted(pongs, key=lambda d: list(d)) == [{"q-every": PONG}, {"q-some": PONG}]
        assert app.control.ping(destination=["q-some"], timeout=1.0) == [{"q-some": PONG}]
        ins = app.control.inspect()
        assert ins.ping() == {"q-every": PONG, "q-some": PONG}
        queues = ins.active_queues()
        assert [q["name"] for q in queues["q-some"]] == ["media", "reports"]
        # no --queues: every queue; it lists the default queue and the ones its tasks name
        assert [q["name"] for q in queues["q-every"]] == ["celery", "media"]
        q = queues["q-some"][0]
        assert q["routing_key"] == "media" and q["exchange"]["name"] == "media"
        assert {"durable", "exclusive", "auto_delete", "no_ack", "bindings"} <= set(q)
    finally:
        app.close()


def test_nobody_answers_ping() -> None:
    app = _app(f"tcp://127.0.0.1:{free_port()}")
    try:
        assert app.control.ping(timeout=0.5) == []
        assert app.control.inspect(timeout=0.5).ping() is None
    finally:
        app.close()


def test_meshctl_inspect_ping_is_a_probe(start_node: Any) -> None:
    node = start_node(name="probe-a")
    p = run_program(MESHCTL, "--peers", node.endpoint, "inspect", "ping")
    assert p.returncode == EXIT_OK, p
    assert "probe-a: OK pong" in p.stdout and "1 node(s) online." in p.stdout
    p = run_program(MESHCTL, "--peers", node.endpoint, "--json", "inspect", "ping")
    assert p.returncode == EXIT_OK and json.loads(p.stdout) == {"probe-a": PONG}, p
    p = run_program(MESHCTL, "--peers", node.endpoint, "--json", "inspect", "active_queues")
    assert p.returncode == EXIT_OK, p
    assert [q["name"] for q in json.loads(p.stdout)["probe-a"]] == ["celery"]
    node.stop()
    p = run_program(MESHCTL, "--peers", node.endpoint, "--timeout", "0.5", "inspect", "ping")
    assert p.returncode == EXIT_FAILURE, p
