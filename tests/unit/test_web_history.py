"""The dashboard's journal reader, on journals written by the real Journal class."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from mesh import states
from mesh.node.sqlite_journal import SqliteJournal as Journal
from mesh.web.history import HistoryError, JournalReader, Query
from mesh.wire import codec
from mesh.wire.protocol import Result, Submit, encode

T0 = 1_700_000_000.0


def _submit(tid: str, name: str, *args: object) -> bytes:
    return encode(Submit(task_id=tid, name=name, payload=codec.dump_call(list(args), {})))


def _result(tid: str, state: str, value: object = None, runtime: float = 0.01) -> bytes:
    if state == states.SUCCESS:
        return encode(Result(task_id=tid, state=state, result=codec.dumps(value), runtime=runtime,
                             node="n1"))
    return encode(Result(task_id=tid, state=state, runtime=runtime, node="n1",
                         exc={"type": "KeyError", "module": "builtins", "message": "'k'"},
                         traceback="Traceback (most recent call last):\nKeyError: 'k'\n"))


def fill(j: Journal, n: int, fail_every: int = 10) -> None:
    """n finished tasks, one per second from T0: tasks.add(i, i), every fail_every-th
    one tasks.fail failing; the first one's argument is the text 'tasks.fail'."""
    for i in range(n):
        tid = f"t{i:06d}"
        failing = i % fail_every == fail_every - 1
        name = "tasks.fail" if failing else "tasks.add"
        j.add(tid, b"c", _submit(tid, name, "tasks.fail" if i == 0 else i, i), T0 + i)
        j.finish(tid, states.FAILURE if failing else states.SUCCESS,
                 _result(tid, states.FAILURE if failing else states.SUCCESS, 2 * i), T0 + i + 0.5)
        if i % 1000 == 999:
            j.commit()
    j.commit()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(str(tmp_path / "data"))
    yield j
    j.close()


def test_reads_while_the_node_holds_the_journal_open(journal: Journal) -> None:
    # the node keeps its journal open (and writing) for its whole life: a reader must
    # still get in (this fails with "database is locked" under EXCLUSIVE locking)
    fill(journal, 30)
    r = JournalReader(journal.path, "n1")
    assert len(r.page(Query(), limit=100)["tasks"]) == 30
    journal.add("late", b"c", _submit("late", "tasks.add", 1, 1), T0 + 100)
    journal.finish("late", states.SUCCESS, _result("late", states.SUCCESS, 2), T0 + 101)
    journal.commit()
    assert r.page(Query(), limit=1)["tasks"][0]["uuid"] == "late"
    r.close()


def test_rows_read_back_with_flower_fields(journal: Journal) -> None:
    fill(journal, 10)
    r = JournalReader(journal.path, "n1")
    page = r.page(Query(), limit=3)
    assert [t["uuid"] for t in page["tasks"]] == ["t000009", "t000008", "t000007"]
    failed, ok = page["tasks"][0], page["tasks"][1]
    assert failed["state"] == states.FAILURE and failed["name"] == "tasks.fail"
    assert failed["exception"].startswith("KeyError(") and "KeyError" in failed["traceback"]
    assert failed["failed"] == T0 + 9.5 and failed["received"] == T0 + 9
    assert ok["result"] == "16" and ok["args"] == "(8, 8)" and ok["succeeded"] == T0 + 8.5
    assert ok["started"] == pytest.approx(T0 + 8.5 - 0.01)
    full = r.task("t000009")
    assert full is not None and full["traceback"].endswith("KeyError: 'k'\n")
    assert r.task("nope") is None


def test_filters(journal: Journal) -> None:
    fill(journal, 100)
    r = JournalReader(journal.path, "n1")

    def ids(q: Query) -> list[str]:
        return [t["uuid"] for t in r.page(q, limit=1000)["tasks"]]

    failed = ids(Query(states=frozenset({states.FAILURE})))
    assert len(failed) == 10 and all(int(t[1:]) % 10 == 9 for t in failed)
    # the text "tasks.fail" is also t000000's argument: the name filter checks the name
    assert ids(Query(name="tasks.fail")) == failed
    assert "t000000" in ids(Query(search="tasks.fail"))
    assert ids(Query(since=T0 + 90, until=T0 + 92)) == ["t000092", "t000091", "t000090"]
    assert ids(Query(states=frozenset({states.STARTED}))) == []     # open tasks: not here
    # a task received in the window that finished long after it is still found
    journal.add("slow", b"c", _submit("slow", "tasks.add", 0, 0), T0 + 91.2)
    journal.finish("slow", states.SUCCESS, _result("slow", states.SUCCESS, 0), T0 + 5000)
    journal.commit()
    assert ids(Query(since=T0 + 90, until=T0 + 92)) == ["slow", "t000092", "t000091", "t000090"]
    assert len(ids(Query(name="tasks.add", since=T0 + 50))) == 45 + 1     # with "slow"


def test_pages_cover_every_row_once(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    import mesh.web.history as history
    monkeypatch.setattr(history, "WINDOW", 64)       # many windows per page
    fill(journal, 1000)
    r = JournalReader(journal.path, "n1")
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = r.page(Query(states=frozenset({states.FAILURE})), limit=7, cursor=cursor)
        seen += [t["uuid"] for t in page["tasks"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 100
    assert seen == sorted(seen, reverse=True)


def test_a_page_returns_within_its_budget_even_when_nothing_matches(journal: Journal) -> None:
    fill(journal, 3000)
    ticks = iter(range(10**6))
    r = JournalReader(journal.path, "n1", clock=lambda: float(next(ticks)))   # 1 s per look
    import mesh.web.history as history
    old = history.WINDOW
    history.WINDOW = 500
    try:
        page = r.page(Query(name="tasks.never"), limit=10, budget=2.5)
    finally:
        history.WINDOW = old
    assert page["tasks"] == [] and page["cursor"] is not None and page["scanned"] < 3000


def test_a_text_search_keeps_to_its_budget(journal: Journal,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The free-text filter decodes each frame in Python (``frame_matches``): a page of
    a search looks at the rows its budget affords, not a window of 20,000 whatever
    that costs (measured: 5.5 s for 20,000 tasks with a list of 2,000 numbers, 15 s for
    5,000 with 20,000 numbers, for a budget of 0.25 s). Here the clock goes 1 ms per
    frame decoded; paging on still finds every match once."""
    import mesh.web.history as history
    fill(journal, 3000)
    decoded = 0
    real = history.frame_matches

    def counted(frame: bytes | None, text: str) -> int:
        nonlocal decoded
        decoded += 1
        return real(frame, text)
    monkeypatch.setattr(history, "frame_matches", counted)
    r = JournalReader(journal.path, "n1", clock=lambda: decoded * 0.001)
    page = r.page(Query(search="never there"), limit=10, budget=0.25)
    assert page["tasks"] == [] and page["cursor"] is not None
    assert page["scanned"] <= 500 and decoded <= 500, (page["scanned"], decoded)
    found: list[str] = []
    cursor = None
    for _ in range(1000):
        page = r.page(Query(search="tasks.fail"), limit=50, cursor=cursor, budget=0.25)
        found += [t["uuid"] for t in page["tasks"]]
        if (cursor := page["cursor"]) is None:
            break
    assert len(found) == len(set(found)) == 301 and "t000000" in found     # (its argument)


def test_series_counts_and_updates_incrementally(journal: Journal) -> None:
    fill(journal, 100)
    r = JournalReader(journal.path, "n1")
    points = r.series(T0, 10)
    assert sum(p[1] for p in points) == 100
    assert all(p[2] == pytest.approx(0.5) for p in points)     # received -> finished
    for i in range(100, 110):
        tid = f"x{i}"
        journal.add(tid, b"c", _submit(tid, "tasks.add", 1, 1), T0 + i)
        journal.finish(tid, states.SUCCESS, _result(tid, states.SUCCESS, 2), T0 + i + 2.0)
    journal.commit()
    points = r.series(T0, 10)
    assert sum(p[1] for p in points) == 110
    assert max(p[3] for p in points) == pytest.approx(2.0)
    assert sum(p[1] for p in r.series(T0 + 50, 10)) == 60


def test_summary(journal: Journal) -> None:
    fill(journal, 50)
    journal.add("open", b"c", _submit("open", "tasks.add", 1, 1), time.time())
    journal.commit()
    s = JournalReader(journal.path, "n1").summary()
    assert s["finished"] == {states.SUCCESS: 45, states.FAILURE: 5}
    assert s["open_rows"] == 1 and s["bytes"] > 0


def test_no_journal_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no journal"):
        JournalReader(str(tmp_path / "missing.sqlite3"), "n1").page(Query())


def test_query_arguments_are_checked() -> None:
    q = Query.from_args({"states": "success,FAILURE", "name": "a", "since": "12.5"})
    assert q.states == {"SUCCESS", "FAILURE"} and q.since == 12.5
    for bad in ({"since": "yesterday"}, {"name": 3}, {"states": [1]}):
        with pytest.raises(ValueError):
            Query.from_args(bad)


def test_chart_lines_break_where_there_is_no_data(journal: Journal) -> None:
    """A node ran tasks (T0..T0+29), was down (no rows), started at T0+100 and ran
    more from T0+130: the charts' lines have a gap while it was down, 0 tasks/s
    while it ran idle, and no latency where nothing finished."""
    from mesh.web.chartlines import chart_lines
    for i in [*range(30), *range(130, 150)]:
        tid = f"g{i}"
        journal.add(tid, b"c", _submit(tid, "tasks.add", i, i), T0 + i)
        journal.finish(tid, states.SUCCESS, _result(tid, states.SUCCESS, 2 * i), T0 + i + 0.5)
    journal.commit()
    r = JournalReader(journal.path, "n1")
    lines = chart_lines(r.series(T0, 10), T0, T0 + 159, 10, up_since=T0 + 100)
    rate = {int(t - T0): v for t, v in lines["rate"]}
    lat = {int(t - T0): v for t, v in lines["latency"]}
    assert sorted(rate) == list(range(5, 160, 10))          # every bucket: its middle
    assert [rate[m] for m in (5, 15, 25)] == [1.0, 1.0, 1.0]
    assert [rate[m] for m in (35, 45, 55, 65, 75, 85, 95)] == [None] * 7   # down: a gap
    assert [rate[m] for m in (105, 115, 125)] == [0.0] * 3  # up and idle
    assert [rate[m] for m in (135, 145, 155)] == [1.0, 1.0, 0.0]
    assert all(lat[m] is None for m in range(35, 130, 10))  # nothing finished: no latency
    assert all(isinstance(lat[m], float) for m in (5, 15, 25, 135, 145))
    # a node running the whole window: no gap, zeros where it was idle
    whole = chart_lines(r.series(T0, 10), T0, T0 + 159, 10, up_since=T0 - 1)["rate"]
    assert None not in [v for _, v in whole]
