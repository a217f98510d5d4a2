"""Celery's semantics where Celery code relies on them, on real meshnode processes
(tasks: tests/integration/celery_sem_app.py): a signature changed in place by ``set``
and ``link`` (Celery's canvas), ``self.request``'s fields, ResultSet and GroupResult's
``save``/``restore``. Callbacks' runs are read from files, never believed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import wait_until

from mesh import Mesh, chain, chord, group, signature
from mesh.exceptions import ChordError, MeshError
from mesh.result import GroupResult, ResultSet

APP = "celery_sem_app"
TIMEOUT = 60.0


def S(app: Mesh, name: str, *args: Any, **kwargs: Any) -> Any:
    return signature(name, args, kwargs, app=app)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_set_and_link_change_the_signature_in_place_as_celery(start_node: Any,
                                                              tmp_path: Path) -> None:
    node = start_node(app=APP)
    done = tmp_path / "done"
    with Mesh("cs-client", peers=[node.endpoint], mdns=False) as app:
        s = S(app, "cs.add", 2, 2)
        s.link(S(app, "cs.record", str(done)))          # Celery's canvas guide, verbatim
        s.set(task_id="cs-in-place-1")
        r = s.delay()
        assert r.id == "cs-in-place-1" and r.get(timeout=TIMEOUT) == 4
        wait_until(lambda: lines(done), timeout=TIMEOUT, what="the callback linked in place")
        assert lines(done) == ["4"]
        # apply_async's own options and arguments leave the signature as it was
        t = S(app, "cs.add", 1, 1)
        assert t.apply_async(task_id="cs-once").get(timeout=TIMEOUT) == 2
        assert t.options == {} and t.args == (1, 1)
        assert S(app, "cs.add", 1).apply_async((1,)).get(timeout=TIMEOUT) == 2
        # set(immutable=True): a chain passes it no result
        last = S(app, "cs.add", 5, 5)
        last.set(immutable=True)
        assert chain(S(app, "cs.add", 1, 1), last).delay().get(timeout=TIMEOUT) == 10


def test_request_has_celerys_fields(start_node: Any) -> None:
    node = start_node(app=APP)
    with Mesh("cs-client", peers=[node.endpoint], mdns=False) as app:
        one = S(app, "cs.request", 1, k=2).apply_async(priority=4, time_limit=30,
                                                       soft_time_limit=20).get(timeout=TIMEOUT)
        assert one["correlation_id"] == one["id"] and one["args"] == [1]
        assert one["delivery_info"] == {"exchange": "", "routing_key": "celery",
                                        "queue": "celery", "priority": 4}
        assert one["timelimit"] == [30, 20] and one["group_index"] is None
        assert one["get"] == [one["id"], "dflt", one["delivery_info"]]
        members = group(S(app, "cs.request"), S(app, "cs.request")).delay().get(timeout=TIMEOUT)
        assert [m["group_index"] for m in members] == [0, 1]
        assert members[0]["group"] == members[1]["group"] is not None


def test_results_as_celery_code_reads_them(start_node: Any) -> None:
    """``r.task_id``, ``AsyncResult == id``, ResultSet, GroupResult.save/restore."""
    node = start_node(app=APP)
    with Mesh("cs-client", peers=[node.endpoint], mdns=False) as app:
        r = S(app, "cs.add", 1, 2).delay()
        assert r.task_id == r.id and r == r.id and r == app.AsyncResult(r.task_id)
        assert r in {app.AsyncResult(r.id)}
        bad = S(app, "cs.boom", 1).delay()
        rs = ResultSet([r, S(app, "cs.add", 3, 4).delay()])
        assert rs.get(timeout=TIMEOUT) == [3, 7] and rs.join(timeout=TIMEOUT) == [3, 7]
        assert rs.ready() and rs.successful() and rs.completed_count() == 2
        rs.add(bad)
        rs.add(app.AsyncResult(bad.id))              # the same id: added once
        assert len(rs) == 3
        with pytest.raises(ValueError, match="boom"):
            rs.get(timeout=TIMEOUT)
        values = rs.get(timeout=TIMEOUT, propagate=False)
        assert values[:2] == [3, 7] and isinstance(values[2], ValueError)
        assert rs.failed() and not rs.successful() and rs.completed_count() == 2
        rs.discard(bad.id)
        assert len(rs) == 2
        with pytest.raises(TimeoutError):
            ResultSet([S(app, "cs.sleep", 5).delay()]).get(timeout=0.5)

        g = group(S(app, "cs.add", i, i) for i in range(4)).delay()
        assert g.save() is g
        with pytest.raises(MeshError, match="made here"):
            app.GroupResult("made-here", [r]).save()
    with Mesh("cs-reader", peers=[node.endpoint], mdns=False) as reader:   # sent nothing
        back = GroupResult.restore(g.id, app=reader)
        assert back is not None and back.get(timeout=TIMEOUT) == [0, 2, 4, 6]
        assert [x.id for x in back.results] == [x.id for x in g.results]
        assert GroupResult.restore("no-such-group", app=reader) is None


def test_nested_chains_and_chords_run_every_step(start_node: Any, tmp_path: Path) -> None:
    """A group, chain or chord in the last place of a chain, or a chord as a chord's
    body, derived ids that a step before it had: the later step was taken for a
    repeat of the earlier one and never ran, so ``get()`` waited for ever, or (a chain
    ending in a group) returned the earlier steps' values."""
    node = start_node(app=APP)
    with Mesh("cs-client", peers=[node.endpoint], mdns=False) as app:
        def A(*a: int) -> Any:
            return S(app, "cs.add", *a)
        T = S(app, "cs.tsum")
        shapes = [
            (chain(chain(A(1, 1), A(1)), chain(A(10), A(100))), 113),
            (chain(A(1, 1), chain(A(10), A(100))), 112),
            (chain(A(1, 1), chord([A(1), A(2)], chain(T, A(100)))), 107),
            (chain(A(1, 1), A(1)) | group(A(1), A(2)), [4, 5]),      # was [2, 3]
            (chain(A(1, 1), chain(A(1), group(A(1), A(2)))), [4, 5]),
            (group(A(1, 1), A(2, 2)) | chord([A(1), A(2)], T), 0),     # below
            (chord([A(1, 1), A(2, 2)], chord([A(1), A(2)], T)), 0),
        ]
        results = [c.delay() for c, _ in shapes]
        for (c, want), r in zip(shapes[:5], results[:5]):
            assert r.get(timeout=TIMEOUT) == want, c
        # a chord whose body is a chord: the header's list is the first argument of
        # every task of the inner header, as in Celery: add([2, 4], 1) fails, so the
        # inner chord fails (and not a wait without end)
        for r in results[5:]:
            with pytest.raises(ChordError, match="can only concatenate list"):
                r.get(timeout=TIMEOUT)
    # a group that is a later step starts its members after asking the mesh: not a
    # loss, so no WARNING (it said "known to no node: started again" for each)
    assert "known to no node" not in node.stderr()


def test_freeze_gives_the_ids_before_sending(start_node: Any) -> None:
    node = start_node(app=APP)
    with Mesh("cs-client", peers=[node.endpoint], mdns=False) as app:
        def A(*a: int) -> Any:
            return S(app, "cs.add", *a)
        s = A(1, 2)
        r = s.freeze()
        assert s.id == r.id and s.delay().id == r.id and r.get(timeout=TIMEOUT) == 3
        g = group(A(1, 1), A(2, 2))
        gr = g.freeze()
        sent = g.delay()
        assert sent.id == gr.id and [x.id for x in sent.results] == [x.id for x in gr.results]
        assert gr.get(timeout=TIMEOUT) == [2, 4] and gr.results[1].get(timeout=TIMEOUT) == 4
        c = chain(A(1, 1), group(A(1), A(2)))
        cr = c.freeze()
        c.delay()
        assert cr.get(timeout=TIMEOUT) == [3, 4] and cr.parent.get(timeout=TIMEOUT) == 2
        ch = chord([A(1, 1), A(2, 2)], S(app, "cs.tsum"))
        body = ch.freeze("my-chord")
        assert ch.delay().id == body.id == "my-chord" and body.get(timeout=TIMEOUT) == 6


def test_throws_logs_an_expected_error_without_its_traceback(start_node: Any) -> None:
    """``throws=(KeyError,)``: the task fails as any other (the caller gets the
    KeyError), and the node logs ``raised expected`` at INFO without a traceback,
    where any other error is ERROR with one (Celery's worker). The task options mesh
    has no use for (trail, send_events...) are taken: a module using them imports."""
    node = start_node(app=APP)
    with Mesh("cs-client", peers=[node.endpoint], mdns=False) as app:
        r = S(app, "cs.expected", "k1").delay()
        with pytest.raises(KeyError):
            r.get(timeout=TIMEOUT)
        assert r.state == "FAILURE"
        with pytest.raises(ValueError):
            S(app, "cs.expected", "other").delay().get(timeout=TIMEOUT)
        assert S(app, "cs.options").delay().get(timeout=TIMEOUT) == "ok"
    log = node.stderr()
    line = next(x for x in log.splitlines() if r.id in x)
    assert " INFO " in line and "raised expected: KeyError" in line, line
    assert "raised unexpected: KeyError" not in log and "raise KeyError" not in log
    assert "raised unexpected: ValueError: not expected" in log
