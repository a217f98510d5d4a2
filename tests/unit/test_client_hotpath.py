"""The client's delay() path made cheaper (docs/performance.md, round 7): each short
cut must give what the long way gave: the same bytes, the same errors."""
from __future__ import annotations

import re
import threading
import time
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mesh.app
from mesh.app import new_task_id
from mesh.exceptions import DecodeError, EncodeError
from mesh.wire import codec
from mesh.wire.codec import ThreadPacker
from mesh.wire.protocol import Submit, encode, encode_submit

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.text(max_size=8), st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8)


# ---- dump_call: the payload of a task ------------------------------------------------

@given(st.lists(values, max_size=4), st.dictionaries(st.text(max_size=6), values, max_size=3),
       st.sampled_from([tuple, list, iter]))
def test_dump_call_is_dumps_of_the_call(args: list[Any], kwargs: dict[str, Any],
                                        shape: Any) -> None:
    assert codec.dump_call(shape(args), kwargs) == codec.dumps([list(args), dict(kwargs)])


def test_dump_call_of_nothing() -> None:
    assert codec.dump_call(None, None) == codec.dumps([[], {}])


@pytest.mark.parametrize("args, kwargs", [
    (([{(1, 2): "pair"}],), None),            # a bad key inside a container of args
    (({"ok": {(1,): "x"}},), None),
    ((), {(1, 2): "pair"}),                   # a bad key of kwargs itself
    ((), {"a": [{(3,): 1}]}),                 # and inside one of its values
], ids=["in-args-list", "in-args-map", "kwargs-key", "in-kwargs-value"])
def test_dump_call_refuses_keys_that_cannot_come_back(args: Any, kwargs: Any) -> None:
    with pytest.raises(EncodeError, match="cannot be sent"):
        codec.dump_call(args, kwargs)


def test_dump_call_refuses_deep_nesting() -> None:
    deep: list[Any] = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(EncodeError, match="nested deeper"):
        codec.dump_call((deep,), None)


# ---- ThreadPacker: one msgpack Packer per thread -------------------------------------

def test_a_packer_that_failed_packs_the_next_value_right() -> None:
    pack = ThreadPacker(default=codec._default, use_bin_type=True, datetime=False)
    with pytest.raises(EncodeError):
        pack([1, "two", {"x": object()}])
    assert pack([1, "two", {"x": b"3"}]) == msgpack.packb([1, "two", {"x": b"3"}],
                                                           use_bin_type=True)


def test_a_call_made_while_the_threads_packer_is_busy_gets_its_own() -> None:
    class Odd:
        pass

    def hook(obj: Any) -> Any:        # runs in the middle of the outer pack, on its thread
        return pack(["inner", 1, 2, 3])

    pack = ThreadPacker(default=hook, use_bin_type=True)
    inner = msgpack.packb(["inner", 1, 2, 3], use_bin_type=True)
    assert pack(["outer", Odd(), "end"]) == msgpack.packb(["outer", inner, "end"],
                                                          use_bin_type=True)


def test_a_packer_that_grew_large_is_not_kept() -> None:
    pack = ThreadPacker(use_bin_type=True)
    pack([1])
    kept = pack._local.packer
    assert kept is not None
    big = b"x" * (ThreadPacker.KEEP + 1)
    assert pack(big) == msgpack.packb(big, use_bin_type=True)
    assert pack._local.packer is None
    pack([2])
    assert pack._local.packer is not None and pack._local.packer is not kept


def test_threads_pack_at_once_without_mixing_their_values() -> None:
    pack = ThreadPacker(use_bin_type=True)
    wrong: list[int] = []

    def work(k: int) -> None:
        for i in range(3000):
            v = [k, i, "x" * (i % 50), {"k": k}]
            if pack(v) != msgpack.packb(v, use_bin_type=True):
                wrong.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# ---- encode_submit: encode(Submit(...)) without the message --------------------------

SUBMITS = [
    dict(task_id="t-1", name="tasks.add", payload=b"\x92\x90\x80"),
    dict(task_id="t-2", name="n", payload=b"", priority=9, eta=1.5e9, expires=2e9,
         time_limit=3, soft_time_limit=2.5, retries=4, headers={"queue": "q", "x": [1, {}]}),
    dict(task_id="t" * 200, name="n" * 500, payload=b"p", priority=0, headers=None),
    dict(task_id="t-3", name="n", payload=b"", max_message_size=1024 * 1024),
]


@pytest.mark.parametrize("fields", SUBMITS)
def test_encode_submit_makes_the_bytes_of_encode(fields: dict[str, Any]) -> None:
    msg_fields = {k: v for k, v in fields.items() if v is not None}
    assert encode_submit(**fields) == encode(Submit(**msg_fields))


@pytest.mark.parametrize("bad", [
    dict(task_id=""), dict(task_id="t" * 201), dict(name=""), dict(name="n" * 501),
    dict(priority=10), dict(priority=-1), dict(time_limit=0), dict(soft_time_limit=-1.0),
    dict(retries=-1), dict(max_message_size=-1),
])
def test_encode_submit_refuses_what_validate_refuses(bad: dict[str, Any]) -> None:
    fields = {"task_id": "t", "name": "n", "payload": b"", **bad}
    with pytest.raises(DecodeError) as want:
        Submit(**fields).validate()
    with pytest.raises(DecodeError) as got:
        encode_submit(**fields)
    assert str(got.value) == str(want.value)


def test_encode_submit_says_what_cannot_be_encoded() -> None:
    with pytest.raises(EncodeError, match="cannot encode Submit"):
        encode_submit("t", "n", b"", headers={"x": object()})


# ---- task ids ------------------------------------------------------------------------

def test_task_ids_carry_the_millisecond_they_were_made(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
    now = time.time_ns() // 1_000_000
    tid = new_task_id()
    assert shape.match(tid)
    assert abs(int(tid[:8] + tid[9:13], 16) - now) < 5_000
    ms = [1_700_000_000_000]
    monkeypatch.setattr(mesh.app.time, "time_ns", lambda: ms[0] * 1_000_000 + 123)
    first, again = new_task_id(), new_task_id()
    ms[0] += 1
    later = new_task_id()

    def stamp(m: int) -> str:
        t = f"{m:012x}"
        return f"{t[:8]}-{t[8:]}-"
    assert first[:14] == again[:14] == stamp(ms[0] - 1) == "018bcfe5-6800-"
    assert later[:14] == stamp(ms[0])
    assert len({first[14:], again[14:], later[14:]}) == 3


# ---- the I/O thread's frames (mesh/client/frames.py) ---------------------------------

def test_frames_go_and_come_as_pyzmqs_multipart_calls_would() -> None:
    import zmq

    from mesh.client.frames import recv_frames, send_frames
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        assert recv_frames(dealer) is None              # nothing waiting: None, no raise
        batch = [b"first", b"", b"x" * 5000, b"last"]
        send_frames(dealer, batch)
        send_frames(dealer, [b"alone"])
        assert router.poll(10_000)
        rid, *got = router.recv_multipart()
        assert got == batch                             # one message of four frames
        assert router.poll(10_000)
        assert router.recv_multipart()[1:] == [b"alone"]
        router.send_multipart([rid, b"a", b"b"])
        router.send_multipart([rid, b"c"])
        assert dealer.poll(10_000)
        deadline = time.monotonic() + 10
        messages: list[list[bytes]] = []
        while len(messages) < 2 and time.monotonic() < deadline:
            m = recv_frames(dealer)
            if m is not None:
                messages.append(m)
        assert messages == [[b"a", b"b"], [b"c"]]
        assert recv_frames(dealer) is None
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        ctx.term()
