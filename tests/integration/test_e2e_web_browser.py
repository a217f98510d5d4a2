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
from harness import free_port
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
