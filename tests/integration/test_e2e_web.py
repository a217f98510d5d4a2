"""The dashboard's API and /metrics against real nodes (meshnode --http)."""
from __future__ import annotations

import signal
import socket

import pytest
import tasks_app
from harness import MESHNODE, clean_env, free_port, make_client_app, run_program
from webclient import Web, all_tasks, metric_sum, wait_for

from mesh import states

pytestmark = pytest.mark.timeout(240)


def _http(node_port: int | None = None) -> str:
    return f"127.0.0.1:{node_port or free_port()}"


def _web(node) -> Web:  # type: ignore[no-untyped-def]
    return Web("http://" + node.http)


def start_web_node(start_node, **flags):  # type: ignore[no-untyped-def]
    http = _http()
    node = start_node(http=http, **flags)
    node.http = http
    wait_for(lambda: _ok(Web("http://" + http)), what="the dashboard to answer")
    return node


def _ok(web: Web) -> bool:
    try:
        return web.request("GET", "/healthz")[0] == 200
    except OSError:
        return False


def test_api_and_metrics_count_what_ran(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    a = start_web_node(start_node, name="wa")
    b = start_web_node(start_node, name="wb", peers=a.endpoint)
    c = start_node(name="wc", peers=a.endpoint)          # no --http: still answers web.*
    web_a, web_b = _web(a), _web(b)
    wait_for(lambda: len(web_a.get("/api/workers?status=true")) == 3, what="three members")
    client = make_client(a, b, c)
    ok = [client.tasks.add.delay(i, i) for i in range(60)]
    bad = [client.tasks.fail.delay(f"no {i}", i) for i in range(6)]
    assert [r.get(timeout=60) for r in ok] == [2 * i for i in range(60)]
    for r in bad:
        with pytest.raises(tasks_app.CustomError):
            r.get(timeout=60)

    # the whole mesh's history from one node, and from another
    for web in (web_a, web_b):
        # history is what the journals committed: a result reaches its owner up to a
        # commit delay (2 ms, longer on a loaded machine) before it is there
        want = {r.id for r in ok + bad}
        wait_for(lambda: {t["uuid"] for t in all_tasks(web)} == want,  # noqa: B023
                 what="every task in the mesh's history")
        failed = all_tasks(web, state="FAILURE")
        assert {t["uuid"] for t in failed} == {r.id for r in bad}
        assert all(t["name"] == "tasks_app.fail" for t in failed)
        assert {t["uuid"] for t in all_tasks(web, name="tasks_app.fail")} == {r.id for r in bad}
    by_node = {n.name: n.status() for n in (a, b, c)}
    for n in (a, b, c):
        mine = all_tasks(web_a, node=n.name)
        assert len(mine) == by_node[n.name]["succeeded"] + by_node[n.name]["failed"]
        assert {t["worker"] for t in mine} <= {n.name}

    # one task in full: arguments, exception, traceback, timeline
    info = web_b.get(f"/api/task/info/{bad[0].id}")
    assert info["state"] == states.FAILURE and info["args"] == "('no 0', 0)"
    assert "CustomError" in info["exception"] and "raise CustomError" in info["traceback"]
    assert info["received"] <= info["started"] <= info["failed"]
    result = web_a.get(f"/api/task/result/{ok[5].id}")
    assert result == {"task-id": ok[5].id, "state": states.SUCCESS, "result": 10}
    status, body = web_a.request("GET", "/api/task/info/no-such-task")
    assert status == 404 and "no node knows" in body["error"]

    # /metrics: each node counts what it ran, under celery-exporter's and Flower's names
    for node, web in ((a, web_a), (b, web_b)):
        st = by_node[node.name]
        m = web.metrics()
        assert metric_sum(m, "celery_task_succeeded_total", hostname=node.name) == st["succeeded"]
        assert metric_sum(m, "celery_task_failed_total", hostname=node.name,
                          exception="CustomError") == st["failed"]
        assert metric_sum(m, "celery_task_runtime_count", hostname=node.name) == st["succeeded"]
        assert metric_sum(m, "flower_events_total", worker=node.name,
                          type="task-succeeded") == st["succeeded"]
        assert metric_sum(m, "flower_task_runtime_seconds_count", worker=node.name) == \
            st["succeeded"] + st["failed"]
        # received here, less given back to a peer (shed), is what ran here
        assert metric_sum(m, "celery_task_received_total") - \
            metric_sum(m, "celery_task_rejected_total") == st["succeeded"] + st["failed"]
        assert metric_sum(m, "celery_task_started_total") >= st["succeeded"] + st["failed"]
        assert metric_sum(m, "mesh_task_queue_wait_seconds_count") == \
            metric_sum(m, "celery_task_started_total")
        assert m[("celery_worker_up", (("hostname", node.name),))] == 1
        assert m[("flower_worker_online", (("worker", node.name),))] == 1
        assert metric_sum(m, "mesh_members", state="alive") == 3
        assert metric_sum(m, "mesh_journal_bytes") > 0
        assert metric_sum(m, "mesh_tasks_finished_total", state="SUCCESS") == st["succeeded"]

    # charts and totals cover every node's journal
    series = web_a.get("/api/mesh/series?window=600&step=5")
    assert sum(p[1] for s in series["nodes"].values() for p in s["series"]) == 66
    summary = web_b.get("/api/mesh/summary")
    assert sum(s["journal"]["finished"].get("SUCCESS", 0) for s in summary.values()) == 60
    workers = web_a.get("/api/workers")
    assert set(workers) == {"wa", "wb", "wc"}
    assert "tasks_app.add" in {t["name"] for t in workers["wc"]["registered"]}
    assert web_a.get("/api/task/types")["task-types"].count("tasks_app.add") == 1
    assert web_a.get("/healthz")["status"] == "ok"
    assert "<title>mesh dashboard</title>" in web_a.get("/")


def test_history_survives_a_restart(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    a = start_web_node(start_node, name="wr")
    client = make_client(a)
    done = [client.tasks.add.delay(i, 1) for i in range(20)]
    [r.get(timeout=30) for r in done]
    client.close()
    a.send_signal(signal.SIGTERM)
    assert a.wait(60) == 0
    a2 = start_node.restart(a)
    a2.http = a.http
    web = _web(a2)
    wait_for(lambda: _ok(web), what="the dashboard after the restart")
    assert {t["uuid"] for t in all_tasks(web)} == {r.id for r in done}
    assert web.get(f"/api/task/info/{done[3].id}")["result"] == "4"


def test_control_verbs_need_post_and_csrf(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    a = start_web_node(start_node, name="wv")
    web = _web(a)
    # applying a task: waits for its result, or not
    out = web.post("/api/task/apply/tasks_app.add?timeout=30", {"args": [1, 2]})
    assert out["state"] == states.SUCCESS and out["result"] == 3
    sent = web.post("/api/task/async-apply/tasks_app.echo", {"args": ["hi"]})
    assert web.get(f"/api/task/result/{sent['task-id']}?timeout=30")["result"] == "hi"
    status, body = web.request("POST", "/api/task/async-apply/tasks_app.nope", {"args": []})
    assert status == 400 and "not registered" in body["error"]
    # revoke a task waiting for its countdown
    later = web.post("/api/task/async-apply/tasks_app.add", {"args": [1, 1], "countdown": 60})
    web.post(f"/api/task/revoke/{later['task-id']}")
    assert web.get(f"/api/task/result/{later['task-id']}?timeout=30")["state"] == states.REVOKED
    # limits and the pool
    web.post("/api/task/rate-limit/tasks_app.add?ratelimit=10/m")
    web.post("/api/task/timeout/tasks_app.add?soft=5&hard=9")
    reg = {t["name"]: t for t in web.get("/api/workers")["wv"]["registered"]}
    assert reg["tasks_app.add"]["rate_limit"] == pytest.approx(10 / 60)
    assert (reg["tasks_app.add"]["soft_time_limit"], reg["tasks_app.add"]["time_limit"]) == (5, 9)
    web.post("/api/worker/pool/grow/wv?n=2")
    wait_for(lambda: a.status()["total"] == 4, what="the pool to grow")
    web.post("/api/worker/pool/shrink/wv", {"n": 1})
    wait_for(lambda: a.status()["total"] == 3, what="the pool to shrink")
    status, body = web.request("POST", "/api/worker/pool/grow/nobody")
    assert status == 404
    # what a hostile page could try
    status, body = web.request("POST", "/api/worker/shutdown/wv", csrf=False)
    assert status == 403 and "CSRF" in body["error"]
    status, body = web.request("POST", "/api/worker/shutdown/wv",
                               headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-site" in body["error"]
    status, body = web.request("GET", "/api/tasks", headers={"Host": "evil.example"})
    assert status == 421
    status, _ = web.request("GET", "/api/worker/shutdown/wv")
    assert status == 405
    assert a.ping()
    # shutdown, through the front door
    web.post("/api/worker/shutdown/wv")
    assert a.wait(60) == 0


def test_task_sent_for_clients_that_opt_in(start_node) -> None:  # type: ignore[no-untyped-def]
    a = start_web_node(start_node, name="ws")
    web = _web(a)
    quiet = make_client_app([a.endpoint], tasks_app)
    loud = make_client_app([a.endpoint], tasks_app)
    loud.app.conf.task_send_sent_event = True
    try:
        [r.get(timeout=30) for r in [quiet.tasks.add.delay(1, 1) for _ in range(5)]]
        [r.get(timeout=30) for r in [loud.tasks.add.delay(2, 2) for _ in range(7)]]
    finally:
        quiet.close()
        loud.close()
    m = web.metrics()
    assert metric_sum(m, "celery_task_sent_total", name="tasks_app.add") == 7
    assert metric_sum(m, "celery_task_received_total", name="tasks_app.add") == 12


def test_a_node_whose_http_port_is_taken_does_not_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run_program(MESHNODE, "--app", "tasks_app", "--bind", f"tcp://127.0.0.1:{free_port()}",
                           "--no-mdns", "--concurrency", "1", "--data-dir", str(tmp_path / "d"),
                           "--http", f"127.0.0.1:{port}", env=clean_env(), timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "cannot serve HTTP" in proc.stderr
    # the children it had started are stopped cleanly first: no traceback from them or it
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not [x for x in proc.stderr.splitlines() if "WARNING" in x and "mesh.pool" in x], \
        proc.stderr
    bad = run_program(MESHNODE, "--app", "tasks_app", "--http", "localhost:http", env=clean_env())
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


def test_limit_is_for_the_whole_mesh_and_pages_lose_nothing(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    # Flower's limit: at most N tasks in all (merged newest first, then cut), not N per node
    a = start_web_node(start_node, name="la")
    b = start_web_node(start_node, name="lb", peers=a.endpoint)
    web = _web(a)
    wait_for(lambda: len(web.get("/api/workers?status=true")) == 2, what="two members")
    ran, held = [], []
    for node in (a, b):
        c = make_client(node)
        ran += [c.tasks.add.delay(i, 1) for i in range(12)]
        held += [c.tasks.add.apply_async((i, 2), countdown=600) for i in range(3)]
        assert [r.get(timeout=60) for r in ran[-12:]] == [i + 1 for i in range(12)]
    want = {r.id for r in ran + held}
    wait_for(lambda: {t["uuid"] for t in all_tasks(web)} == want, what="every task listed")
    assert {t["worker"] for t in all_tasks(web)} == {"la", "lb"}

    flower = web.get("/api/tasks?limit=10")
    assert len(flower) == 10, len(flower)
    assert {r.id for r in held} <= set(flower)          # held ones first, then the newest
    done = {t["uuid"]: t for t in all_tasks(web) if t["uuid"] not in {r.id for r in held}}
    shown = [done[u]["timestamp"] for u in flower if u in done]
    assert min(shown) >= max(t["timestamp"] for u, t in done.items() if u not in flower)

    pages, cursor = [], None                            # 30 tasks, 4 a page: 8 pages
    for _ in range(20):
        page = web.get("/api/mesh/tasks?limit=4" + (f"&cursor={cursor}" if cursor else ""))
        assert not page["errors"] and len(page["tasks"]) <= 4, page
        pages.append([t["uuid"] for t in page["tasks"]])
        cursor = page["cursor"]
        if cursor is None:
            break
    listed = [u for p in pages for u in p]
    assert sorted(listed) == sorted(want), (len(listed), len(want))    # each once, none lost
    assert len(pages) == 8 and all(len(p) == 4 for p in pages[:-1])
    for r in held:
        r.revoke()


def test_a_workflows_records_show_nowhere(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    """A chain and a chord on two nodes: the history, totals, charts, /metrics and
    status show the steps sent (and the chord's group, mesh.group), never the
    workflow's records (results under record_id, internal: docs/workflows.md)."""
    from mesh import chain, chord
    from mesh.workflow.ids import record_id
    a = start_web_node(start_node, name="ra")
    b = start_web_node(start_node, name="rb", peers=a.endpoint)
    web_a, web_b = _web(a), _web(b)
    wait_for(lambda: len(web_a.get("/api/workers?status=true")) == 2, what="two members")
    client = make_client(a, b)
    add, echo = client.tasks.add, client.tasks.echo
    r = chain(add.s(1, 1), add.s(10), echo.s()).apply_async()
    c = chord([add.s(i, i) for i in range(4)], echo.s()).apply_async()
    assert r.get(timeout=60) == 12 and c.get(timeout=60) == [0, 2, 4, 6]
    steps = {r.id, r.parent.id, r.parent.parent.id, c.id, *(x.id for x in c.parent.results)}
    group_id = c.parent.id
    assert client.app.AsyncResult(record_id(r.id)).get(timeout=30)   # a record: still read
    want = steps | {group_id}
    wait_for(lambda: {t["uuid"] for t in all_tasks(web_a)} == want,
             what="the steps and the group in the history")
    listed = all_tasks(web_b)
    assert {t["uuid"] for t in listed} == want, listed
    assert sorted(t["name"] for t in listed) == sorted(
        ["tasks_app.add"] * 6 + ["tasks_app.echo"] * 2 + ["mesh.group"])
    summary = web_a.get("/api/mesh/summary")
    assert sum(s["journal"]["finished"].get("SUCCESS", 0) for s in summary.values()) == 9
    series = web_a.get("/api/mesh/series?window=600&step=5")
    assert sum(p[1] for s in series["nodes"].values() for p in s["series"]) == 9
    assert sum(n.status()["succeeded"] for n in (a, b)) == 9
    for web in (web_a, web_b):
        m = web.metrics()
        assert not [k for k in m if "mesh.record" in str(k)], m
    assert sum(metric_sum(w.metrics(), "celery_task_succeeded_total") for w in (web_a, web_b)) == 9


def test_a_task_killed_at_its_time_limit_shows_how_long_it_ran(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    # the task's page said "runtime 0" for a task killed after its 1 s hard limit, and
    # "node t10b, t10b" (the node that ran it, once per node holding a copy)
    a = start_web_node(start_node, name="tla")
    b = start_node(name="tlb", peers=a.endpoint)
    client = make_client(a, b)
    wait_for(lambda: len(_web(a).get("/api/workers?status=true")) == 2, what="two members")
    r = client.tasks.sleep.apply_async((30,), time_limit=0.5)
    with pytest.raises(Exception, match="hard time limit"):
        r.get(timeout=60)
    web = _web(a)
    wait_for(lambda: len(web.get(f"/api/task/info/{r.id}")["seen_on"]) >= 1,  # noqa: B023
             what="the task's page")
    info = web.get(f"/api/task/info/{r.id}")
    assert info["state"] == states.FAILURE
    assert 0.4 < info["runtime"] < 30, info
    assert len(info["seen_on"]) == len(set(info["seen_on"])), info


def test_the_text_filter_finds_numbers_in_arguments_and_not_ids(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    """(A user trial) the page's text filter says "in name or arguments": searching an
    order number (an int argument) found nothing, because the journal's Submit frames
    were searched as bytes and msgpack keeps ints in binary; and a text found tasks
    whose id held it ("-1" was in every id). It now matches the name and the argument
    texts the page shows, as the filter of tasks still held does."""
    from urllib.parse import quote
    a = start_web_node(start_node, name="ws")
    web = _web(a)
    client = make_client(a)
    order = client.tasks.add.delay(4099, -1)
    others = [client.tasks.add.delay(i, i) for i in range(5)] + [client.tasks.echo.delay("4099x")]
    assert order.get(timeout=30) == 4098 and [r.get(timeout=30) for r in others[:5]] == \
        [2 * i for i in range(5)]
    assert others[5].get(timeout=30) == "4099x"
    wait_for(lambda: len(all_tasks(web)) == 7, what="the seven tasks in the history")

    def found(text: str, **filters: str) -> set[str]:
        return {t["uuid"] for t in all_tasks(web, search=quote(text), **filters)}
    assert found("(4099, -1)") == {order.id}
    assert found("4099") == {order.id, others[5].id}          # an int, and inside a str
    assert found("4099", name="tasks_app.add") == {order.id}
    assert found("tasks_app.echo") == {others[5].id}            # the name
    assert found(order.id[-12:]) == set()                       # not the id


def test_the_text_filter_searches_held_tasks_beyond_the_newest_few(start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    """A node holds 120 tasks (due in 5 min); the oldest one has the argument searched
    for. The filter of held tasks looked at the newest 2 x limit only, so with a page
    of 5 it was not found (nor with the dashboard's 100 among 250). The newest 200
    held at least are searched now (then up to 2,000 as 50 ms on the loop allow)."""
    a = start_web_node(start_node, name="wh")
    web = _web(a)
    client = make_client(a)
    oldest = client.tasks.add.apply_async((777001, 1), countdown=300)
    assert client.app.client.flush(30) == 0
    rest = [client.tasks.add.apply_async((i, i), countdown=300) for i in range(119)]
    assert client.app.client.flush(30) == 0 and len(rest) == 119
    wait_for(lambda: len(web.get("/api/mesh/tasks?limit=1000")["tasks"]) == 120,
             what="the 120 held tasks listed")
    page = web.get("/api/mesh/tasks?search=777001&limit=5")
    assert not page["errors"], page["errors"]
    assert [t["uuid"] for t in page["tasks"]] == [oldest.id], page["tasks"]
