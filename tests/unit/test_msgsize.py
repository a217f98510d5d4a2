"""A peer that says its max_message_size (the last field of SUBMIT and CONTROL) is sent
no bigger frame by a node: the front door's replacement of a reply over it, and a
``result`` lookup's answer made to fit (the real parts: tests/integration/
test_e2e_msgsize.py and the scripted-node tests in tests/unit/test_client_scripted.py)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from mesh.exceptions import DecodeError
from mesh.node.front import LIMITS_KEPT, FrontDoor
from mesh.node.taskstate import REPLY_HEADROOM, fit
from mesh.wire import codec
from mesh.wire.protocol import (
    REPLY_TOO_LARGE,
    Control,
    ControlReply,
    Error,
    Result,
    State,
    Submit,
    decode,
    encode,
)

KIB = 1024
OWN = 16 * KIB * KIB


# ---- the fields ---------------------------------------------------------------------

def test_the_limit_travels_as_the_last_field_and_older_frames_say_none() -> None:
    sub = Submit("t", "n", b"", max_message_size=KIB * KIB)
    assert decode(encode(sub)).max_message_size == KIB * KIB      # type: ignore[attr-defined]
    old = encode(Submit("t", "n", b""))[:-1]                        # (the 0 left off)
    old = bytes([old[0] - 1]) + old[1:]                             # one element fewer
    assert decode(old) == Submit("t", "n", b"")
    ctl = Control("r", "result", {"task_id": "t"}, 5000)
    assert decode(encode(ctl)) == ctl
    assert decode(encode(Control("r", "ping"))).max_message_size == 0   # type: ignore[attr-defined]


@pytest.mark.parametrize("msg", [Submit("t", "n", b"", max_message_size=-1),
                                 Submit("t", "n", b"", max_message_size=1023),
                                 Control("r", "ping", {}, 5)], ids=["submit", "tiny", "control"])
def test_a_limit_under_what_a_peer_may_have_is_refused(msg: Any) -> None:
    """(A peer saying 5 bytes would be sent ERRORs for every reply, even a ping's.)"""
    with pytest.raises(DecodeError, match="max_message_size must be 0 .not said. or at least "
                                          "1024, got") as e:
        decode(encode(msg))
    assert e.value.ref in ("t", "r")
    assert decode(encode(dataclasses.replace(msg, max_message_size=1024))) is not None


# ---- the front door -----------------------------------------------------------------

def _front(own: int = OWN) -> FrontDoor:
    front = FrontDoor()
    front._own_limit = own
    front._flush_scheduled = True          # (no event loop here: nothing is flushed)
    front.node = SimpleNamespace(        # type: ignore[assignment]
        name="n1", config=SimpleNamespace(max_message_size=own),
        intake=SimpleNamespace(submit=lambda *a: None),
        control=SimpleNamespace(handle=lambda *a: None))
    return front


def _sent(front: FrontDoor, ident: bytes) -> list[Any]:
    return [decode(f, OWN) for f in front._out.get(ident, [])]


def _result(tid: str, size: int, state: str = "SUCCESS") -> bytes:
    return encode(Result(tid, state, codec.dumps(b"x" * size), node="n1"))


def test_a_reply_over_the_limit_a_peer_said_becomes_an_error_naming_the_sizes() -> None:
    front = _front()
    front._said(b"small", 10 * KIB)
    big = _result("t-big", 20 * KIB)
    front.reply(b"small", big)
    front.reply(b"small", _result("t-ok", 1 * KIB))
    front.reply(b"other", big)                       # said nothing: sent as it is
    err, ok = _sent(front, b"small")
    assert isinstance(err, Error) and err.code == REPLY_TOO_LARGE and err.ref == "t-big"
    assert err.message == (f"the result of task t-big is {len(big):,} bytes, over this client's "
                           f"max_message_size ({10 * KIB:,}); it stays stored on node n1: raise "
                           f"the client's max_message_size to {len(big):,} or more to read it "
                           "(AsyncResult by id), or return a smaller result")
    assert isinstance(ok, Result) and ok.task_id == "t-ok"
    assert front._out[b"other"] == [big]
    assert front.too_large == 1


def test_a_control_reply_names_its_request_and_a_state_is_not_sent() -> None:
    front = _front()
    front._said(b"small", 10 * KIB)
    front.reply(b"small", encode(ControlReply("req-1", True, "n1", {"x": b"y" * 20 * KIB})))
    front.reply(b"small", encode(State("t", "PROGRESS", b"m" * 20 * KIB, "n1")))
    ctl, = _sent(front, b"small")
    assert isinstance(ctl, Error) and ctl.ref == "req-1" and "CONTROLREPLY" in ctl.message
    assert "raise the client's max_message_size to" in ctl.message
    assert front.too_large == 2


def _retry(tid: str, cause: int, tb: int, payload: int = 0) -> Result:
    return Result(tid, "RETRY", exc={"type": "OSError", "module": "builtins",
                                     "message": "m" * cause, "args": codec.dumps(["m" * cause])},
                  traceback="Traceback...\n" + "t" * tb, node="n1", retries=2, eta=1.7e9,
                  payload=codec.dumps([[b"p" * payload], {}]) if payload else None)


@pytest.mark.parametrize("payload", [0, 100, 20 * KIB], ids=["same-args", "new-args", "big-args"])
def test_a_retry_over_the_limit_goes_cut_short_never_as_an_error(payload: int) -> None:
    """A RETRY is not final (the task runs again, its result follows): an ERROR in its
    place failed the task at the client (ResultTooLarge) while it ran on. It goes cut
    short instead: what a resend must carry whole (retries, eta, the next run's
    arguments: docs/protocol.md 12.1), the start of its cause's message saying so, the
    end of its traceback. Next-run arguments alone over the limit are left out."""
    front = _front()
    front._said(b"small", 10 * KIB)
    big = _retry("t-retry", 8 * KIB, 8 * KIB, payload)
    frame = encode(big)
    front.reply(b"small", frame)
    (sent,) = front._out[b"small"]
    assert len(sent) <= 10 * KIB
    retry = decode(sent)
    assert isinstance(retry, Result) and retry.state == "RETRY" and retry.task_id == "t-retry"
    assert (retry.retries, retry.eta) == (2, 1.7e9)
    assert retry.payload == (big.payload if payload < 10 * KIB else None)
    assert retry.exc is not None and retry.exc["type"] == "OSError" and retry.exc["args"] is None
    assert retry.exc["message"] == ("m" * 200 + f"... [cut: this RETRY notice was {len(frame):,} "
                                    f"bytes, over this client's max_message_size ({10 * KIB:,}), "
                                    "and not sent whole; the task runs again]")
    assert retry.traceback == "..." + "t" * 2000
    assert front.too_large == 1
    front.reply(b"small", encode(_retry("t-small", 10, 10)))     # one that fits: as it is
    assert decode(front._out[b"small"][1]) == _retry("t-small", 10, 10)


def test_only_limits_below_the_nodes_own_are_kept_and_at_most_so_many() -> None:
    front = _front(own=OWN)
    front._on_message(b"a", encode(Submit("t", "n", b"", max_message_size=OWN)))
    front._on_message(b"b", encode(Control("r", "ping", {}, 2 * OWN)))
    front._on_message(b"c", encode(Submit("t", "n", b"", max_message_size=KIB * KIB)))
    front._on_message(b"d", encode(Control("r", "ping", {}, 64 * KIB)))
    front._on_message(b"e", encode(Submit("t", "n", b"")))            # (an older client)
    assert front.limits == {b"c": KIB * KIB, b"d": 64 * KIB}
    big = _result("t-big", 2 * KIB * KIB)                   # over c's and d's, under OWN
    for ident in (b"a", b"b", b"c", b"d", b"e"):
        front.reply(ident, big)
    assert {i: type(m).__name__ for i in (b"a", b"b", b"c", b"d", b"e")
            for m in _sent(front, i)} == {b"a": "Result", b"b": "Result", b"c": "Error",
                                          b"d": "Error", b"e": "Result"}
    front._out.clear()
    for i in range(LIMITS_KEPT + 5):
        front._said(b"peer-%d" % i, 4 * KIB)
    assert len(front.limits) == LIMITS_KEPT and b"c" not in front.limits
    front._on_message(b"peer-7", encode(Control("r", "ping", {}, 8 * KIB)))   # said anew:
    assert list(front.limits)[-1] == b"peer-7" and front.limits[b"peer-7"] == 8 * KIB  # kept longest


# ---- a result lookup's answer ---------------------------------------------------------

def test_a_lookup_answer_fits_the_asker_submit_first_then_the_result() -> None:
    answer = {"task_id": "t", "state": "SUCCESS", "result": b"r" * 50 * KIB,
              "submit": b"s" * 30 * KIB}
    assert fit(answer, OWN) is answer
    room = 50 * KIB + REPLY_HEADROOM
    assert fit(answer, room) == {"task_id": "t", "state": "SUCCESS", "result": b"r" * 50 * KIB}
    assert fit(answer, room - 1) == {"task_id": "t", "state": "SUCCESS", "result_size": 50 * KIB}
    held = {"task_id": "t", "state": "PROGRESS", "meta": b"m" * 50 * KIB}
    assert fit(held, 10 * KIB) == {"task_id": "t", "state": "PROGRESS"}
    small = {"task_id": "t", "state": "SUCCESS", "result": b"r" * 100}
    assert fit(small, 1024) is small                  # (the least limit: room for 100 bytes)


def test_a_lookup_answer_is_cut_only_for_an_asker_that_said_a_smaller_limit() -> None:
    """An asker that said no limit (an older client, meshctl) or one as large as the
    node's gets the stored result as before: ``result_size`` is for a limit said
    (docs/protocol.md 5.7). Before, a result within REPLY_HEADROOM of the node's own
    limit was left out for every asker: an older client saw a final state without its
    result, and a client with the node's own limit was told to raise it to a size
    below it."""
    from mesh.node.taskstate import lookup
    front = _front()
    result = b"r" * (OWN - REPLY_HEADROOM // 2)
    node = SimpleNamespace(front=front, ledger=SimpleNamespace(
        task_state=lambda ident, tid, watch: {"task_id": tid, "state": "SUCCESS",
                                              "result": result}))
    for ident in (b"older", b"same"):
        if ident == b"same":
            front._on_message(ident, encode(Control("r", "result", {"task_id": "t"}, OWN)))
        answer = lookup(node, ident, "t", False)          # type: ignore[arg-type]
        assert answer["result"] is result and "result_size" not in answer
    front._said(b"small", 10 * KIB)
    assert lookup(node, b"small", "t", False) == {      # type: ignore[arg-type]
        "task_id": "t", "state": "SUCCESS", "result_size": len(result)}


def test_a_peer_that_says_a_limit_as_large_as_the_nodes_later_is_sent_everything() -> None:
    """The limit remembered is the last one said: a routing id that said a smaller one,
    then one as large as the node's (its client's setting raised, the same identity
    connecting again), is forgotten. Before, it kept the smaller one, and every big
    reply to it was an ERROR reply-too-large telling it to raise what it had raised."""
    front = _front()
    front._on_message(b"c", encode(Submit("t", "n", b"", max_message_size=KIB * KIB)))
    front._on_message(b"c", encode(Submit("t", "n", b"", max_message_size=KIB * KIB)))
    assert front.limits == {b"c": KIB * KIB}            # (said again: kept)
    front._on_message(b"c", encode(Control("r", "ping", {}, 2 * OWN)))
    assert front.limits == {}
    big = _result("t-big", 2 * KIB * KIB)
    front.reply(b"c", big)
    assert front._out[b"c"] == [big] and front.too_large == 0
    front._on_message(b"c", encode(Submit("t", "n", b"", max_message_size=KIB * KIB)))
    front._on_message(b"c", encode(Submit("t", "n", b"")))        # (says none: kept)
    assert front.limits == {b"c": KIB * KIB}
