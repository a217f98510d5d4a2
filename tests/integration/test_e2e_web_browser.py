"""The dashboard page in a real headless browser (Debian's chromium, driven by selenium).

Skipped, with the reason, when chromium, its driver or selenium is missing
(scripts/setup.sh installs chromium when run as root). Nothing is downloaded at run
time: the driver and the browser are the system's. Set MESH_WEB_SCREENSHOT=DIR to
keep the screenshots.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from harness import free_port, occupy
from webclient import Web, wait_for

pytestmark = pytest.mark.timeout(240)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver"
                                          if os.path.exists("/usr/bin/chromedriver") else None)


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver, or scripts/setup.sh as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1400", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _shot(driver: Any, name: str, tmp_path: Path) -> None:
    where = Path(os.environ.get("MESH_WEB_SCREENSHOT") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(where / name))


def test_the_page_shows_nodes_and_tasks_and_updates_live(browser, start_node, make_client,
                                                         tmp_path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    http = f"127.0.0.1:{free_port()}"
    a = start_node(name="page-a", http=http)
    b = start_node(name="page-b", peers=a.endpoint)
    web = Web("http://" + http)
    wait_for(lambda: len(web.get("/api/workers?status=true")) == 2, what="two members")
    client = make_client(a, b)
    first = client.tasks.add.delay(20, 22)
    assert first.get(timeout=30) == 42

    browser.get(f"http://{http}/")

    def text(css: str) -> str:
        return "\n".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, css))

    wait_for(lambda: "page-a" in text("#nodes tbody") and "page-b" in text("#nodes tbody"),
             what="both nodes in the nodes table")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-uuid="{first.id}"]'),
             what="the first task in the task list")
    assert "tasks_app.add" in text(f'tr[data-uuid="{first.id}"]')
    wait_for(lambda: "live" in text("#live") and "on" in browser.find_element(
        By.ID, "live").get_attribute("class"), what="the live indicator")

    # new work while the page is open: it appears without a reload
    later = [client.tasks.echo.delay(f"live-{i}") for i in range(3)] + \
            [client.tasks.fail.delay("live failure", 7)]
    for r in later[:3]:
        r.get(timeout=30)
    wait_for(lambda: all(browser.find_elements(By.CSS_SELECTOR, f'tr[data-uuid="{r.id}"]')
                         for r in later), timeout=30, what="the new tasks, live")
    row = text(f'tr[data-uuid="{later[3].id}"]')
    wait_for(lambda: "FAILURE" in text(f'tr[data-uuid="{later[3].id}"]'), what="the failure, live")
    assert "CustomError" in text(f'tr[data-uuid="{later[3].id}"]'), row
    assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-rate svg path.series, "
                                           "#chart-rate svg circle"), what="a throughput chart")
    _shot(browser, "dashboard.png", tmp_path)

    # a task's page: its traceback and timeline
    browser.find_element(By.CSS_SELECTOR, f'tr[data-uuid="{later[3].id}"] a').click()
    wait_for(lambda: "raise CustomError" in text("#task-result"), what="the traceback")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#task-timeline .tl-row")) >= 3,
             what="the timeline")
    assert "FAILURE" in text("#task-title")
    _shot(browser, "task.png", tmp_path)
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_the_charts_break_where_a_node_was_down(browser, start_node, make_client,
                                                tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A node ran tasks, was down for minutes, and runs again: its throughput line
    has a gap there (not a straight line across), and runs on at 0 while it is idle.
    The minutes down are made by moving the first run's journal rows 5 minutes back
    while the node is stopped (a real wait of minutes has no place in a test)."""
    import sqlite3

    from selenium.webdriver.common.by import By
    http = f"127.0.0.1:{free_port()}"
    a = start_node(name="gap-a", http=http)
    client = make_client(a)
    assert [r.get(timeout=30) for r in [client.tasks.add.delay(i, i) for i in range(6)]] == \
        [2 * i for i in range(6)]
    assert a.stop() == 0
    db = sqlite3.connect(a.data_dir / "journal.sqlite3")
    with db:
        assert db.execute("UPDATE results SET finished = finished - 300").rowcount == 6
        db.execute("UPDATE tasks SET received = received - 300")
    db.close()
    a = start_node.restart(a)
    client = make_client(a)
    assert client.tasks.add.delay(1, 2).get(timeout=30) == 3

    browser.get(f"http://{http}/")

    def pieces() -> list[str]:
        """The separate pieces of gap-a's throughput line: subpaths and lone points."""
        css = '#chart-rate svg [data-node="gap-a"]'
        out = []
        for e in browser.find_elements(By.CSS_SELECTOR, css):
            if e.tag_name == "path":
                out += ["M" + d for d in e.get_attribute("d").split("M") if d]
            else:
                out.append(f"dot {e.get_attribute('cx')}")
        return out

    wait_for(lambda: pieces(), what="gap-a's throughput line")
    got = pieces()
    _shot(browser, "charts-gap.png", tmp_path)
    # before the gap: the first run (a point, or a line over its buckets); after it:
    # from the restart to now (0 when idle), apart
    assert len(got) == 2, got
    # (in time order, not the page's: a lone point is a circle, drawn after the paths)
    first_x, second_x = sorted(float(p.split()[-1]) if p.startswith("dot")
                               else float(p[1:].split(",")[0]) for p in got)
    assert second_x - first_x > 100, got       # 5 of the window's 15 minutes: ~170 px
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


def test_tasks_a_node_ran_as_it_joined_show_up(browser, start_node, make_client) -> None:  # type: ignore[no-untyped-def]
    """The node serving the page looks for other nodes' event streams every 2 s: a node
    that joins while the page is open runs tasks before their events reach the page.
    The page syncs its task list for a while once it sees a new node."""
    from selenium.webdriver.common.by import By
    http = f"127.0.0.1:{free_port()}"
    a = start_node(name="join-a", http=http)
    browser.get(f"http://{http}/")
    wait_for(lambda: "on" in browser.find_element(By.ID, "live").get_attribute("class"),
             what="the live indicator")
    b = start_node(name="join-b", peers=a.endpoint, concurrency=1)
    client = make_client(b)
    early = [client.tasks.echo.delay(f"early-{i}") for i in range(4)]
    for r in early:
        r.get(timeout=30)
    wait_for(lambda: all(browser.find_elements(By.CSS_SELECTOR, f'tr[data-uuid="{r.id}"]')
                         for r in early), timeout=30, what="the tasks b ran as it joined")


def test_a_task_handed_to_another_node_shows_there_not_rejected(browser, start_node, make_client,
                                                                 tmp_path) -> None:  # type: ignore[no-untyped-def]
    """(A user trial) a node that hands a queued task on (shedding, or a warm shutdown)
    publishes task-rejected (requeue) once the receiver has taken it: after the
    receiver's task-received. The page took every event as the newest, so the task
    showed REJECTED, on the node that no longer had it, for as long as it waited
    (and a user read "rejected" as "lost"). Here a stops with tasks queued; b takes
    them while its only child is busy, and its page must show them RECEIVED on b."""
    import signal

    from selenium.webdriver.common.by import By
    http = f"127.0.0.1:{free_port()}"
    b = start_node(name="move-b", http=http, concurrency=1)
    a = start_node(name="move-a", peers=b.endpoint, concurrency=1)
    web = Web("http://" + http)
    wait_for(lambda: len(web.get("/api/workers?status=true")) == 2, what="two members")
    gate = tmp_path / "gate"
    held = occupy(b, make_client(b), gate) + occupy(a, make_client(a), gate)
    client = make_client(a, b)
    queued: list[Any] = []

    def fill() -> None:
        # tasks waiting on each node: neither then has room for the other's (a node with
        # one child has room below two tasks, running and queued: mesh/node/shedding.py)
        while a.status()["queued"] < 2 or b.status()["queued"] < 2:
            assert len(queued) < 40, "tasks never waited on each node"
            queued.append(client.tasks.wait_for_file.delay(str(gate)))
            wait_for(lambda: a.status()["queued"] + b.status()["queued"] >= len(queued),
                     what="the task queued on a node")
    fill()

    browser.get(f"http://{http}/")
    wait_for(lambda: "on" in browser.find_element(By.ID, "live").get_attribute("class"),
             what="the live indicator")
    # the events as the page takes them (its own onEvent, wrapped)
    browser.execute_script("window.seen = []; const take = onEvent;"
                           "onEvent = e => { window.seen.push(e); return take(e); };")
    # the page's node subscribes to a's events (it looks every 2 s): a's heartbeats come
    wait_for(lambda: browser.execute_script(
        "return window.seen.some(e => e.type === 'node-heartbeat' && e.node === 'move-a')"),
        what="a's events on the page")
    fill()
    a.send_signal(signal.SIGTERM)                   # a hands its queued tasks to b

    def handed() -> list[str]:
        return browser.execute_script(
            "return window.seen.filter(e => e.type === 'task-rejected' && e.node === 'move-a')"
            ".map(e => e.uuid)")
    moved = wait_for(handed, what="a's task-rejected events")
    def row(uuid: str) -> list[str]:       # state, ..., node (read at once: rows are redrawn)
        return browser.execute_script(
            "const r = document.querySelector(`tr[data-uuid='${arguments[0]}']`);"
            "return r ? [...r.cells].map(c => c.textContent) : [];", uuid)
    for uuid in moved:
        wait_for(lambda: row(uuid)[:1] == ["RECEIVED"] and row(uuid)[5] == "move-b", timeout=10,
                 what=lambda: f"{uuid} RECEIVED on move-b (last row: {row(uuid)})")
    _shot(browser, "handed.png", tmp_path)
    gate.touch()
    assert {r.get(timeout=60) for r in held + queued} == {"opened"}
    assert a.wait(60) == 0


@pytest.mark.parametrize("order", ["receiver first", "rejection first"])
def test_the_page_keeps_a_handed_on_task_with_its_receiver_in_either_order(
        browser, start_node, order) -> None:  # type: ignore[no-untyped-def]
    """The page's own merge of events (onEvent, in the browser) fed the events of a shed
    as a user trial saw them (times from it: the rejection is published after the
    receiver's task-started), in both orders the nodes' streams may deliver them."""
    http = f"127.0.0.1:{free_port()}"
    start_node(name="order-a", http=http)
    browser.get(f"http://{http}/")
    wait_for(lambda: browser.execute_script("return typeof onEvent === 'function'"),
             what="the page's script")
    receiver = [{"type": "task-received", "node": "d1", "timestamp": 54.8444, "uuid": "t1",
                 "name": "slow"},
                {"type": "task-started", "node": "d1", "timestamp": 54.8467, "uuid": "t1"}]
    rejected = [{"type": "task-rejected", "node": "d2", "timestamp": 54.854, "uuid": "t1",
                 "requeue": True, "target": "tcp://d1", "reason": "shed to a node with room"}]
    events = receiver + rejected if order == "receiver first" else rejected + receiver
    got = browser.execute_script(
        "for (const e of arguments[0]) onEvent(e); const t = state.tasks.get('t1');"
        "return [t.state, t.worker];", events)
    assert got == ["STARTED", "d1"]
    # an older event from the node that had it, arriving late, does not take it back
    got = browser.execute_script(
        "onEvent({type: 'task-received', node: 'd2', timestamp: 54.80, uuid: 't1'});"
        "const t = state.tasks.get('t1'); return [t.state, t.worker];")
    assert got == ["STARTED", "d1"]


def test_a_dead_node_is_shown_as_such_and_its_missing_history_said(browser, start_node,
                                                                    make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """(A user trial) a node killed with -9: its row kept its last load ("2 / 2" busy,
    for a node that runs nothing), and on the next load its tasks were gone from the
    list and its counts from the totals (which went down) with nothing saying why.
    Its journal cannot be read while it is down: the page now says so."""
    import signal

    http = f"127.0.0.1:{free_port()}"
    a = start_node(name="dead-a", http=http)
    b = start_node(name="dead-b", peers=a.endpoint)
    web = Web("http://" + http)
    wait_for(lambda: len(web.get("/api/workers?status=true")) == 2, what="two members")
    client = make_client(b)
    ran = [r for r in (client.tasks.add.delay(i, i) for i in range(6))]
    assert [r.get(timeout=30) for r in ran] == [2 * i for i in range(6)]
    b.send_signal(signal.SIGKILL)
    wait_for(lambda: any(m["node"] == "dead-b" and m["state"] == "dead"
                         for m in web.get("/api/mesh/nodes")["members"]), what="b dead")

    browser.get(f"http://{http}/")

    def text(css: str) -> str:     # read at once in the page: rows are redrawn all the time
        return browser.execute_script("return [...document.querySelectorAll(arguments[0])]"
                                      ".map(e => e.innerText).join('\\n')", css)
    wait_for(lambda: "dead" in text('tr[data-node="dead-b"]'), what="b's row, dead")
    cells = browser.execute_script("return [...document.querySelectorAll("
                                   "'tr[data-node=\"dead-b\"] td')].map(c => c.innerText)")
    assert cells[3:9] == [""] * 6, cells          # no busy/children, queue, rate... of a dead node
    wait_for(lambda: "dead-b is down" in text("#tasks-away"), timeout=10,
             what=lambda: f"the task list saying b's tasks are not there (it says {text('#tasks-away')!r})")
    wait_for(lambda: "dead-b is down: not counted" in text("#totals"), timeout=10,
             what=lambda: f"the totals saying b is not counted (they say {text('#totals')!r})")
    # (same trial) an app with no periodic entries showed an empty table's header
    wait_for(lambda: "No periodic entries" in text("#periodic"), timeout=10,
             what=lambda: f"the periodic section saying there are none (it says {text('#periodic')!r})")
    _shot(browser, "dead.png", tmp_path)


def test_back_from_a_tasks_page_the_list_shows_what_happened_meanwhile(
        browser, start_node, make_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """(A user trial) a running task's page, "Revoke and terminate", then back to the
    list: the row still read STARTED (the list is not redrawn while a task's page is
    shown, and going back did not redraw it), though the page knew it was REVOKED."""
    from selenium.webdriver.common.by import By
    http = f"127.0.0.1:{free_port()}"
    a = start_node(name="back-a", http=http)
    client = make_client(a)
    browser.get(f"http://{http}/")
    wait_for(lambda: "on" in browser.find_element(By.ID, "live").get_attribute("class"),
             what="the live indicator")
    r = client.tasks.wait_for_file.delay(str(tmp_path / "never"))

    def row() -> list[str]:
        return browser.execute_script(
            "const r = document.querySelector(`tr[data-uuid='${arguments[0]}']`);"
            "return r ? [...r.cells].map(c => c.textContent) : [];", r.id)
    wait_for(lambda: row()[:1] == ["STARTED"], what="the task STARTED in the list")
    # clicked in the page at once (the list and the buttons are redrawn as events come)
    browser.execute_script("document.querySelector(`tr[data-uuid='${arguments[0]}'] a`).click()",
                           r.id)
    wait_for(lambda: browser.execute_script(
        "return document.querySelectorAll('#task-actions button').length") == 2,
        what="the task's page with its buttons")
    browser.execute_script("document.querySelectorAll('#task-actions button')[1].click()")
    wait_for(lambda: "REVOKED" in browser.find_element(By.ID, "task-title").text,
             what="the task's page saying REVOKED")
    assert r.state == "REVOKED"
    browser.find_element(By.LINK_TEXT, "← tasks").click()
    wait_for(lambda: row()[:1] == ["REVOKED"], timeout=10,
             what=lambda: f"the row REVOKED back in the list (last row: {row()})")


def test_the_token_page_flow_and_odd_guesses(browser, start_node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """(A user trial, MESH_HTTP_TOKEN) the page opened once as /?token=TOKEN works (the
    cookie), but the token stayed in the address bar and the history; it now
    redirects to / once the cookie is set (a task's #/task/ID fragment stays). A guess
    with a non-ASCII character (?token=é, a Bearer or a CSRF header so) was a 500 with a
    traceback in the node's log: it is the 401 (403) any wrong token gets."""
    from selenium.webdriver.common.by import By
    http = f"127.0.0.1:{free_port()}"
    a = start_node(name="tok-a", http=http, env={"MESH_HTTP_TOKEN": "s3cret-token"})
    web = Web("http://" + http)
    wait_for(lambda: web.request("GET", "/healthz")[0] == 200, what="the dashboard")
    assert web.request("GET", "/api/workers")[0] == 401
    assert web.request("GET", "/api/workers",
                       headers={"Authorization": "Bearer s3cret-token"})[0] == 200
    for path, headers in [("/?token=%C3%A9", {}), ("/api/workers", {"Authorization": "Bearer é"})]:
        status, body = web.request("GET", path, headers=headers)
        assert status == 401 and "needs its token" in body["error"], (path, status, body)
    status, body = web.request("POST", "/api/worker/pool/grow/tok-a", csrf=False,
                               headers={"Authorization": "Bearer s3cret-token",
                                        "X-CSRF-Token": "é", "Cookie": "mesh_csrf=x"})
    assert status == 403 and "CSRF" in body["error"], (status, body)
    assert "Traceback" not in a.stderr()

    browser.get(f"http://{http}/?token=s3cret-token#/tasks")
    wait_for(lambda: "on" in browser.find_element(By.ID, "live").get_attribute("class"),
             what="the page, live, with its cookie")
    wait_for(lambda: browser.execute_script("return Object.keys(state.nodes)") == ["tok-a"],
             what="the nodes read with the cookie")
    assert browser.current_url == f"http://{http}/#/tasks", browser.current_url
    browser.get(f"http://{http}/")                  # later visits: the cookie alone
    wait_for(lambda: "tok-a" in browser.find_element(By.CSS_SELECTOR, "#nodes tbody").text,
             what="the page again, without the token in its address")


def test_the_page_says_when_its_own_node_is_gone_and_recovers(browser, start_node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """(A user trial) the node serving the page killed: the page said only "Failed to
    fetch" (the browser's words). It now says which node it cannot reach, and the page
    comes back by itself once the node is started again."""
    import signal

    from selenium.webdriver.common.by import By
    http = f"127.0.0.1:{free_port()}"
    a = start_node(name="gone-a", http=http)
    browser.get(f"http://{http}/")
    wait_for(lambda: "gone-a" in browser.find_element(By.CSS_SELECTOR, "#nodes tbody").text,
             what="the page")
    a.send_signal(signal.SIGKILL)
    a.wait(30)
    def error() -> str:
        return browser.find_element(By.ID, "error").text
    wait_for(lambda: f"cannot reach {http}, the node serving this page" in error(), timeout=20,
             what=lambda: f"the page saying its node is gone (it says {error()!r})")
    start_node.restart(a)
    wait_for(lambda: not browser.find_element(By.ID, "error").is_displayed(), timeout=30,
             what="the page back without a reload")
