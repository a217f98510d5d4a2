"""Eager mode (Task.apply, task_always_eager) and the Task API it shares with the node
(mesh/trace.py): handlers, base classes, retries, autoretry, Reject/Ignore,
ignore_result, update_state, task_annotations, options from app.conf."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from mesh import Mesh, Task, states
from mesh.eager import EagerResult
from mesh.exceptions import (
    ConfigError,
    EncodeError,
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Reject,
    ResultIgnored,
)


@pytest.fixture
def app() -> Iterator[Mesh]:
    a = Mesh("eager", mdns=False)
    yield a
    a.close()


# ---- apply and EagerResult -----------------------------------------------------------

def test_apply_runs_here_and_returns_an_eager_result(app: Mesh) -> None:
    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y
    r = add.apply((2, 3), task_id="t-1")
    assert isinstance(r, EagerResult)
    assert (r.id, r.state, r.get(), r.result, r.info) == ("t-1", states.SUCCESS, 5, 5, 5)
    assert r.ready() and r.successful() and not r.failed()
    assert (r.name, r.args, r.kwargs) == ("tasks.add", [2, 3], {})
    assert r.date_done is not None and r.date_done.tzinfo is not None
    assert r.worker.startswith("eager@")
    assert app._client is None


def test_task_always_eager_makes_delay_and_send_task_run_here(app: Mesh) -> None:
    @app.task(name="tasks.mul")
    def mul(x: int, y: int) -> int:
        return x * y
    app.conf.task_always_eager = True
    assert mul.delay(3, 4).get() == 12
    assert mul.apply_async((2, 2), countdown=60).get() == 4     # no waiting, as in Celery
    assert app.send_task("tasks.mul", args=(5, 5)).get() == 25
    with pytest.raises(NotRegistered, match="not registered in this process"):
        app.send_task("tasks.elsewhere")
    assert app._client is None            # nothing went on the wire


def test_a_failure_is_kept_or_raised_as_task_eager_propagates_says(app: Mesh) -> None:
    @app.task
    def boom() -> None:
        raise KeyError("missing")
    app.conf.task_always_eager = True
    r = boom.delay()
    assert r.state == states.FAILURE and r.failed()
    assert isinstance(r.result, KeyError) and "KeyError" in (r.traceback or "")
    with pytest.raises(KeyError):
        r.get()
    assert isinstance(r.get(propagate=False), KeyError)
    app.conf.task_eager_propagates = True
    with pytest.raises(KeyError):
        boom.delay()
    with pytest.raises(KeyError):
        boom.apply(throw=True)
    assert boom.apply(throw=False).failed()


def test_arguments_and_results_go_through_the_codec_as_on_the_mesh(app: Mesh) -> None:
    @app.task
    def echo(value: Any) -> Any:
        return value
    assert echo.apply(((1, 2),)).get() == [1, 2]        # a tuple comes back a list
    r = echo.apply(({1, 2},))
    assert isinstance(r.result, EncodeError)              # a set cannot be sent
    with pytest.raises(EncodeError):
        echo.apply(({1, 2},), throw=True)

    @app.task
    def make_set() -> Any:
        return {1}
    assert isinstance(make_set.apply().result, EncodeError)

    @app.task
    def kind(value: Any) -> str:          # what the task itself is given
        return type(value).__name__
    assert kind.apply(((1, 2),)).get() == "list"
    assert isinstance(kind.apply(({1, 2},)).result, EncodeError)


def test_task_store_eager_result_lets_asyncresult_by_id_find_it(app: Mesh) -> None:
    # a Django test in eager mode: one view sends the task and returns its id, another
    # shows AsyncResult(id).state; the second asked the nodes (none in a test) and said
    # UNKNOWN, and the Celery setting that fixes it was "not used" (Celery keeps an eager
    # result in its backend with task_store_eager_result)
    from mesh.result import AsyncResult

    @app.task(name="tasks.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tasks.boom")
    def boom(what: str) -> None:
        raise KeyError(what)
    app.conf.update(task_always_eager=True, task_store_eager_result=True)
    sent = add.delay(2, y=3).id
    failed = boom.delay("gone").id
    r = AsyncResult(sent, app=app)
    assert (r.state, r.get(), r.name, r.args, r.kwargs) == (
        states.SUCCESS, 5, "tasks.add", [2], {"y": 3})
    assert r.worker is not None and r.worker.startswith("eager@")
    f = app.AsyncResult(failed)
    assert f.failed() and isinstance(f.result, KeyError) and "KeyError" in (f.traceback or "")
    with pytest.raises(KeyError):
        f.get()
    assert app._client is None            # nothing went on the wire
    app.conf.task_store_eager_result = False      # the default: nothing kept
    assert app._lookup_slot(add.delay(1, 1).id) is None


def test_eager_results_can_be_awaited(app: Mesh) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    async def main() -> int:
        value: int = await add.apply((1, 1))
        return value
    assert asyncio.run(main()) == 2


# ---- retries -------------------------------------------------------------------------

def test_retries_run_at_once_until_success(app: Mesh) -> None:
    seen: list[int] = []

    @app.task(bind=True, max_retries=5)
    def flaky(self: Task, n: int) -> int:
        seen.append(self.request.retries)
        if self.request.retries < n:
            raise self.retry(countdown=60)
        return self.request.retries
    r = flaky.apply((3,))
    assert (r.get(), r.retries, seen) == (3, 3, [0, 1, 2, 3])


def test_retry_with_new_arguments(app: Mesh) -> None:
    @app.task(bind=True)
    def countdown_to(self: Task, n: int, step: int = 1) -> int:
        if n > 0:
            raise self.retry(args=(n - step,), kwargs={"step": step}, countdown=0)
        return self.request.retries
    r = countdown_to.apply((4,), {"step": 2})
    assert r.get() == 2 and r.args == [0] and r.kwargs == {"step": 2}


def test_retries_used_up_fail_with_exc_or_max_retries_exceeded(app: Mesh) -> None:
    @app.task(bind=True, max_retries=2)
    def with_exc(self: Task) -> None:
        raise self.retry(exc=ValueError("still broken"), countdown=0)

    @app.task(bind=True, max_retries=1)
    def without(self: Task) -> None:
        raise self.retry(countdown=0)
    r = with_exc.apply()
    assert r.state == states.FAILURE and isinstance(r.result, ValueError) and r.retries == 2
    assert isinstance(without.apply().result, MaxRetriesExceededError)


def test_retry_throw_false_retries_when_the_task_returns(app: Mesh) -> None:
    @app.task(bind=True)
    def soft(self: Task) -> str:
        if self.request.retries == 0:
            self.retry(countdown=0, throw=False)
            return "dropped"
        return "second run"
    assert soft.apply().get() == "second run"


def test_autoretry_for_dont_autoretry_for_and_retry_kwargs(app: Mesh) -> None:
    calls: list[str] = []

    @app.task(autoretry_for=(Exception,), dont_autoretry_for=(KeyError,),
              retry_kwargs={"max_retries": 2, "countdown": 0})
    def auto(kind: str) -> None:
        calls.append(kind)
        raise (KeyError if kind == "key" else OSError)(kind)
    assert isinstance(auto.apply(("os",)).result, OSError)
    assert calls == ["os"] * 3                             # retry_kwargs max_retries=2
    calls.clear()
    assert isinstance(auto.apply(("key",)).result, KeyError)
    assert calls == ["key"]                                 # never retried


# ---- Reject, Ignore, ignore_result -----------------------------------------------------

def test_ignore_ends_the_task_without_a_result(app: Mesh) -> None:
    @app.task
    def skip() -> None:
        raise Ignore()
    r = skip.apply()
    assert r.state == states.IGNORED and r.ready()
    with pytest.raises(ResultIgnored, match="Ignore"):
        r.get()
    assert r.get(propagate=False) is None


def test_reject_fails_the_task_and_requeue_runs_it_again(app: Mesh) -> None:
    runs: list[int] = []

    @app.task
    def refuse() -> None:
        raise Reject("bad message", requeue=False)

    @app.task(bind=True, max_retries=2)
    def requeue(self: Task) -> str:
        runs.append(self.request.retries)
        if len(runs) < 3:
            raise Reject("not now", requeue=True)
        return "taken"
    r = refuse.apply()
    assert r.state == states.FAILURE and isinstance(r.result, Reject)
    assert r.result.reason == "bad message"
    assert requeue.apply().get() == "taken" and runs == [0, 1, 2]


def test_ignore_result_keeps_no_value_and_get_says_so(app: Mesh) -> None:
    @app.task(ignore_result=True)
    def quiet() -> int:
        return 42

    @app.task
    def loud() -> int:
        return 7
    r = quiet.apply()
    assert r.state == states.SUCCESS and r.result is None
    with pytest.raises(ResultIgnored, match="ignore_result"):
        r.get()
    with pytest.raises(ResultIgnored):
        loud.apply(ignore_result=True).get()
    app.conf.task_ignore_result = True
    with pytest.raises(ResultIgnored):
        loud.apply().get()
    assert quiet.apply(ignore_result=False).get() == 42


# ---- handlers and base classes --------------------------------------------------------

def test_handlers_run_in_order_with_celerys_arguments(app: Mesh) -> None:
    log: list[tuple[Any, ...]] = []

    class Tracked(app.Task):  # type: ignore[name-defined,misc]
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            log.append(("before_start", task_id, args, kwargs))

        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            log.append(("on_success", retval, task_id))

        def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                       einfo: Any) -> None:
            log.append(("on_failure", type(exc).__name__, "ValueError" in einfo.traceback))

        def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                     einfo: Any) -> None:
            log.append(("on_retry", str(exc)))

        def after_return(self, status: str, retval: Any, task_id: str, args: Any,
                         kwargs: Any, einfo: Any) -> None:
            log.append(("after_return", status))

    @app.task(base=Tracked, bind=True, max_retries=1)
    def work(self: Task, x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        if x == 0 and self.request.retries == 0:
            raise self.retry(exc=OSError("again"), countdown=0)
        return x * 2
    assert isinstance(work, Tracked)
    work.apply((3,), task_id="a")
    assert log == [("before_start", "a", [3], {}), ("on_success", 6, "a"),
                   ("after_return", states.SUCCESS)]
    log.clear()
    work.apply((-1,), task_id="b")
    assert log[1:] == [("on_failure", "ValueError", True), ("after_return", states.FAILURE)]
    log.clear()
    work.apply((0,), task_id="c")
    assert [e[0] for e in log] == ["before_start", "on_retry", "after_return",
                                   "before_start", "on_success", "after_return"]


def test_a_handler_that_raises_is_logged_and_changes_nothing(
        app: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(app.Task):  # type: ignore[name-defined,misc]
        def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
            raise RuntimeError("handler bug")

    @app.task(base=Broken)
    def fine() -> str:
        return "ok"
    with caplog.at_level(logging.ERROR, "mesh.trace"):
        assert fine.apply().get() == "ok"
    assert "on_success" in caplog.text and "handler bug" in caplog.text


def test_before_start_raising_fails_the_task(app: Mesh) -> None:
    class Guarded(app.Task):  # type: ignore[name-defined,misc]
        def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
            raise PermissionError("not allowed")

    @app.task(base=Guarded)
    def never() -> str:
        return "ran"
    assert isinstance(never.apply().result, PermissionError)


def test_class_attributes_are_options_and_decorator_keywords_win(app: Mesh) -> None:
    class Patient(app.Task):  # type: ignore[name-defined,misc]
        max_retries = 7
        autoretry_for = (OSError,)
        acks_late = False

    @app.task(base=Patient)
    def a() -> None: ...

    @app.task(base=Patient, max_retries=1)
    def b() -> None: ...
    assert (a.options.max_retries, a.options.autoretry_for, a.options.acks_late) == (7, (OSError,), False)
    assert a.max_retries == 7 and b.max_retries == 1


def test_a_base_class_call_wraps_every_run_as_flasks_app_context_does(app: Mesh) -> None:
    contexts: list[str] = []

    class ContextTask(app.Task):  # type: ignore[name-defined,misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            contexts.append("enter")
            try:
                return super().__call__(*args, **kwargs)   # the run, under the task's request
            finally:
                contexts.append("exit")

    @app.task(base=ContextTask, bind=True)
    def inside(self: Task) -> Any:
        return [self.request.id, self.request.called_directly]
    assert inside.apply(task_id="ctx").get() == ["ctx", False]
    assert contexts == ["enter", "exit"]


def test_register_task_takes_a_class_based_task(app: Mesh) -> None:
    class Double(app.Task):  # type: ignore[name-defined,misc]
        name = "tasks.double"
        max_retries = 0

        def run(self, x: int) -> int:
            return 2 * x
    t = app.register_task(Double)
    assert app.tasks["tasks.double"] is t and t.apply((21,)).get() == 42
    assert t.options.max_retries == 0


def test_task_cls_sets_the_base_of_every_task() -> None:
    class Base(Task):
        track_started = True
    with Mesh("tc", mdns=False, task_cls=Base) as app:
        @app.task
        def t() -> None: ...
        assert isinstance(t, Base) and t.options.track_started is True
        with pytest.raises(ConfigError, match="task_cls"):
            Mesh("bad", mdns=False, task_cls=dict)  # type: ignore[arg-type]


# ---- options from app.conf and task_annotations ---------------------------------------

def test_task_defaults_come_from_conf_and_follow_it(app: Mesh) -> None:
    @app.task
    def a() -> None: ...

    @app.task(acks_late=True, priority=1)
    def b() -> None: ...
    assert a.options.acks_late is True and a.options.track_started is False
    app.conf.update(task_acks_late=False, task_track_started=True, task_default_priority=4,
                    task_default_rate_limit="10/s")
    assert (a.options.acks_late, a.options.track_started, a.options.priority,
            a.options.rate_limit) == (False, True, 4, "10/s")
    assert (b.options.acks_late, b.options.priority) == (True, 1)   # its own options win
    app.conf.worker_disable_rate_limits = True
    assert a.options.rate_limit is None


def test_task_annotations_win_and_can_set_handlers(app: Mesh) -> None:
    failures: list[str] = []

    def on_failure(self: Task, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        failures.append(f"{self.name}: {exc}")

    class ByPrefix:
        def annotate(self, task: Task) -> dict[str, Any] | None:
            return {"max_retries": 9} if task.name.startswith("tasks.") else None

    @app.task(name="tasks.add", rate_limit="1/s")
    def add() -> None:
        raise ValueError("nope")

    @app.task(name="other.thing")
    def other() -> None: ...
    app.conf.task_annotations = [{"tasks.add": {"rate_limit": "10/s"}, "*": {"on_failure": on_failure}},
                                 ByPrefix()]
    assert (add.options.rate_limit, add.options.max_retries) == ("10/s", 9)
    assert other.options.max_retries == 3
    add.apply()
    assert failures == ["tasks.add: nope"]
    app.conf.task_annotations = {"tasks.add": {"max_retrys": 1}}
    with pytest.raises(ConfigError, match="did you mean 'max_retries'"):
        add.options  # noqa: B018


# ---- update_state and the request -----------------------------------------------------

def test_update_state_reaches_the_eager_result_and_refuses_final_states(app: Mesh) -> None:
    states_seen: list[Any] = []

    @app.task(bind=True)
    def progress(self: Task, result_box: list[Any]) -> str:
        self.update_state(state="PROGRESS", meta={"done": 1})
        states_seen.append("updated")
        for bad in (states.REVOKED, states.RETRY, states.PENDING, "", "x" * 101):
            with pytest.raises(ConfigError):
                self.update_state(state=bad)
        with pytest.raises(ConfigError, match="only set the state of the task that is running"):
            self.update_state(task_id="someone-else", state="PROGRESS")
        with pytest.raises(EncodeError):
            self.update_state(state="PROGRESS", meta={1, 2})
        return "done"
    r = progress.apply(([],))
    assert r.get() == "done" and states_seen == ["updated"]
    progress([])          # a plain call: nobody to tell, nothing happens


def test_update_state_moves_the_state_while_it_runs(app: Mesh) -> None:
    seen: list[Any] = []

    class Watch(app.Task):  # type: ignore[name-defined,misc]
        pass

    @app.task(bind=True, base=Watch)
    def step(self: Task) -> None:
        self.update_state(state="PROGRESS", meta={"done": 3, "of": 4})
        sink = self.request.state_sink
        assert sink is not None
        owner = sink.__self__                       # the EagerResult being filled in
        seen.append((owner.state, owner.info))
    step.apply()
    assert seen == [("PROGRESS", {"done": 3, "of": 4})]


def test_shadow_and_headers_reach_the_request(app: Mesh) -> None:
    @app.task(bind=True)
    def who(self: Task) -> Any:
        return [self.request.shadow, self.request.headers.get("x"), self.request.is_eager]
    assert who.apply(shadow="alias", headers={"x": 1}).get() == ["alias", 1, True]


def test_unknown_call_options_fail_and_broker_ones_are_logged(
        app: Mesh, caplog: pytest.LogCaptureFixture) -> None:
    @app.task
    def t() -> int:
        return 1
    app.conf.task_always_eager = True
    with pytest.raises(ConfigError, match="unknown apply_async option 'countdwn'"):
        t.apply_async(countdwn=1)
    with caplog.at_level(logging.WARNING, "mesh.conf"):
        assert t.apply_async(queue="low", routing_key="r", serializer="json").get() == 1
    assert "routing_key='r' is not used" in caplog.text and "queue=" not in caplog.text


def test_task_signals_are_sent_in_eager_mode_as_celerys_tracer_sends_them(app: Mesh) -> None:
    from mesh import signals
    seen: list[tuple[Any, ...]] = []

    def prerun(sender: Any = None, task_id: Any = None, args: Any = None, **kw: Any) -> None:
        seen.append(("prerun", sender.name, task_id, args))

    def success(sender: Any = None, result: Any = None, **kw: Any) -> None:
        seen.append(("success", result))

    def retry(sender: Any = None, reason: Any = None, einfo: Any = None, **kw: Any) -> None:
        seen.append(("retry", type(reason).__name__, type(einfo.exception).__name__))

    def failure(sender: Any = None, exception: Any = None, einfo: Any = None, **kw: Any) -> None:
        seen.append(("failure", type(exception).__name__, "KeyError" in einfo.traceback))

    def postrun(sender: Any = None, state: Any = None, retval: Any = None, **kw: Any) -> None:
        seen.append(("postrun", state, type(retval).__name__))

    receivers = [(signals.task_prerun, prerun), (signals.task_success, success),
                 (signals.task_retry, retry), (signals.task_failure, failure),
                 (signals.task_postrun, postrun)]
    for sig, fn in receivers:
        sig.connect(fn)
    try:
        @app.task(bind=True, name="sig.t", max_retries=1)
        def t(self: Task, mode: str) -> int:
            if mode == "fail":
                raise KeyError("k")
            if self.request.retries == 0:
                raise self.retry(countdown=0)
            return 7
        t.apply(("ok",), task_id="s1")
        assert seen == [("prerun", "sig.t", "s1", ["ok"]), ("retry", "Retry", "Retry"),
                        ("postrun", states.RETRY, "Retry"), ("prerun", "sig.t", "s1", ["ok"]),
                        ("success", 7), ("postrun", states.SUCCESS, "int")]
        seen.clear()
        t.apply(("fail",), task_id="s2")
        assert seen[1:] == [("failure", "KeyError", True), ("postrun", states.FAILURE, "KeyError")]
    finally:
        for sig, fn in receivers:
            sig.disconnect(fn)
