"""mesh.signals: Celery's connect/send semantics, sender filters, isolation of a
receiver that raises, weak references."""
from __future__ import annotations

import gc
import logging
from typing import Any

import pytest

from mesh import signals
from mesh.signals import Signal


class FakeTask:
    name = "tasks.add"


def test_connect_as_decorator_and_send_passes_signal_sender_and_arguments() -> None:
    sig = Signal("s", ("x",))
    got: list[dict[str, Any]] = []

    @sig.connect
    def recv(**kw: Any) -> str:
        got.append(kw)
        return "r"

    assert sig.send(sender="me", x=1) == [(recv, "r")]
    assert got == [{"signal": sig, "sender": "me", "x": 1}]


def test_sender_filter_by_object_and_by_task_name() -> None:
    sig = Signal("s")
    task, other = FakeTask(), object()
    seen: list[str] = []

    @sig.connect(sender="tasks.add")
    def by_name(sender: Any = None, **kw: Any) -> None:
        seen.append("name")

    @sig.connect(sender=other)
    def by_object(sender: Any = None, **kw: Any) -> None:
        seen.append("object")

    sig.send(sender=task)
    sig.send(sender=other)
    sig.send(sender="tasks.add")
    sig.send(sender="tasks.mul")
    assert seen == ["name", "object", "name"]


def test_a_receiver_that_raises_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    sig = Signal("s")
    ran: list[int] = []

    @sig.connect
    def bad(**kw: Any) -> None:
        raise RuntimeError("boom")

    @sig.connect
    def good(**kw: Any) -> None:
        ran.append(1)

    with caplog.at_level(logging.ERROR, logger="mesh.signals"):
        out = sig.send(sender=None)
    assert ran == [1]
    assert isinstance(out[0][1], RuntimeError)
    assert "boom" in caplog.text and "bad" in caplog.text


def test_connect_twice_is_one_receiver_and_disconnect_removes_it() -> None:
    sig = Signal("s")
    calls: list[int] = []

    def recv(**kw: Any) -> None:
        calls.append(1)

    sig.connect(recv)
    sig.connect(recv)
    sig.send()
    assert calls == [1]
    assert sig.disconnect(recv) is True
    assert sig.disconnect(recv) is False
    sig.send()
    assert calls == [1]


def test_weak_receivers_go_away_with_their_owner_strong_ones_stay() -> None:
    sig = Signal("s")
    calls: list[str] = []

    def make(tag: str) -> Any:
        return lambda **kw: calls.append(tag)

    sig.connect(make("weak"))
    sig.connect(make("strong"), weak=False)
    gc.collect()
    sig.send()
    assert calls == ["strong"]

    class Owner:
        def hook(self, **kw: Any) -> None:
            calls.append("method")

    o = Owner()
    sig.connect(o.hook)
    sig.send()
    assert calls[-1] == "method"
    del o
    gc.collect()
    n = len(calls)
    sig.send()
    assert calls[n:] == ["strong"]


def test_celery_names_exist() -> None:
    for name in ("task_prerun", "task_postrun", "task_success", "task_failure", "task_retry",
                 "task_revoked", "before_task_publish", "after_task_publish", "worker_init",
                 "worker_process_init", "worker_ready", "worker_shutdown",
                 "worker_process_shutdown"):
        assert isinstance(getattr(signals, name), Signal)
        assert getattr(signals, name).name == name
