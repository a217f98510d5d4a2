"""Every wait ends in a result or an error, when the client closes too (a real node,
the real client and its I/O thread): a task submitted, or looked up, from another
thread while ``close()`` shuts the client down either raises at once ("the mesh
client is closed") or ends, failed with MeshError; its ``get()`` never waits for ever.

The window: a caller's ``submit`` (or a lookup's ``query``) checks that the client is
not closing, then queues its slot. A thread that the GIL (or the kernel) holds between
the two may queue it after the I/O thread has drained its outbox and failed what it
held, while it still closes its sockets (up to the linger: a second). Tracers hold the
two threads at those points here, so the interleaving is the same on every run: the
caller queues its slot after the I/O thread drained the outbox (failed the watched
slots), and returns before the I/O thread goes on closing.
"""
from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from harness import wait_until

from mesh.client import io as client_io
from mesh.client import lookups as client_lookups
from mesh.exceptions import MeshError
from mesh.exceptions import TimeoutError as MeshTimeout

HOLD = 60.0     # s a held thread waits at most for the other (then goes on: no hang)


def _line_of(fn: Callable[..., Any], text: str) -> int:
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def _tracer(code: CodeType, on_line: Callable[[int], None],
            on_return: Callable[[], None] | None = None) -> Any:
    """A trace function calling ``on_line(lineno)`` before each line of ``code`` runs
    (and ``on_return`` when it returns), ignoring every other function."""
    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            on_line(frame.f_lineno)
        elif event == "return" and on_return is not None:
            on_return()
        return local

    def call(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None
    return call


def _race(start_node: Any, make_client: Any, caller: Callable[[Any, threading.Event], Any],
          caller_fn: Callable[..., Any], caller_at: str, io_at: str) -> Any:
    """Run ``caller(client_handle, armed)`` in a thread held (once ``armed`` is set:
    at once unless ``caller`` clears it first) before the line of ``caller_fn``
    containing ``caller_at`` until the client's I/O thread, shutting down, reaches the
    line of ``_shut_down`` containing ``io_at``; that one waits there until
    ``caller_fn`` has returned. What ``caller`` returned or raised."""
    node = start_node()
    at_line = threading.Event()       # the caller is past the check, about to queue
    io_there = threading.Event()      # the I/O thread is at io_at
    returned = threading.Event()      # caller_fn has returned
    caller_line = _line_of(caller_fn, caller_at)
    io_line = _line_of(client_io.Client._shut_down, io_at)

    def on_io_line(lineno: int) -> None:
        if lineno == io_line and not io_there.is_set():
            io_there.set()
            returned.wait(HOLD)

    threading.settrace(_tracer(client_io.Client._shut_down.__code__, on_io_line))
    try:
        c = make_client(node)
        client = c.app.client          # its I/O thread starts traced
    finally:
        threading.settrace(None)       # (not the threads started after: the caller's own)
    assert c.tasks.add.delay(1, 2).get(timeout=30) == 3

    out: list[Any] = []
    armed = threading.Event()
    armed.set()

    def on_caller_line(lineno: int) -> None:
        if lineno == caller_line and armed.is_set():
            at_line.set()
            io_there.wait(HOLD)

    def run() -> None:
        sys.settrace(_tracer(caller_fn.__code__, on_caller_line, returned.set))
        try:
            out.append(caller(c, armed))
        except Exception as e:         # noqa: BLE001 -- the tests look at it
            out.append(e)
        finally:
            sys.settrace(None)
            returned.set()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    assert at_line.wait(30), "the calling thread never reached the queueing"
    client.close(linger=1.0, patient=False)
    th.join(30)
    assert io_there.is_set() and out, out
    return out[0]


def _ends_failed(outcome: Any) -> None:
    if isinstance(outcome, MeshTimeout):
        raise AssertionError("a task asked for as the client closed was never failed: "
                             "its get() would wait for ever")
    assert isinstance(outcome, MeshError) and "closed" in str(outcome), repr(outcome)


def test_a_task_submitted_as_close_shuts_the_client_down_fails_instead_of_waiting_for_ever(
        start_node: Any, make_client: Any) -> None:
    r = _race(start_node, make_client, lambda c, _armed: c.tasks.add.delay(2, 2),
              client_io.Client.submit, "self._outbox.append(slot)", "self._queued.clear()")
    assert not isinstance(r, Exception), repr(r)    # (queued: past the check)
    try:
        r.get(timeout=5)
    except Exception as e:             # noqa: BLE001
        _ends_failed(e)
    else:
        raise AssertionError("a task submitted as the client closed got a result")


def test_a_lookup_started_as_close_shuts_the_client_down_fails_instead_of_waiting_for_ever(
        start_node: Any, make_client: Any) -> None:
    tid = "4f7c1a52-0d2e-4b8e-9a41-5be1d0c0ffee"      # submitted by another process

    def get_later(c: Any, armed: threading.Event) -> Any:
        # an AsyncResult looked at, then kept a while before its get(): the client
        # forgets a watched task nobody waits for (once a second), so the slot is not
        # watched any more when get() asks the nodes again
        armed.clear()
        r = c.app.AsyncResult(tid)
        assert r.state == "UNKNOWN"
        wait_until(lambda: tid not in c.app.client._watched, timeout=30,
                   what="the client to forget the unwaited lookup")
        armed.set()
        return r.get(timeout=5)

    outcome = _race(start_node, make_client, get_later, client_lookups.Lookups.query,
                    "with self._watch_lock:", "for link in self.links.values():")
    _ends_failed(outcome)
