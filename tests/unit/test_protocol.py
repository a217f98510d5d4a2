"""The wire protocol (mesh/protocol.py): round trips, evolution, and refusal.

Anything that comes off the network must either decode to a Message or raise
DecodeError; nothing else may escape decode(), since a node decodes every frame a
stranger sends it.
"""
from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.exceptions import DecodeError, EncodeError
from mesh.wire import codec
from mesh.wire.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_TIME_LIMIT,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Ack,
    ChildCancel,
    ChildDone,
    ChildReady,
    ChildState,
    Control,
    ControlReply,
    Error,
    Gossip,
    Handoff,
    HandoffAck,
    Message,
    Moved,
    MsgType,
    Ping,
    PingAck,
    PingNack,
    PingReq,
    PushPull,
    PushPullReply,
    Reclaim,
    Reclaimed,
    Release,
    Replicate,
    ReplicateAck,
    Result,
    State,
    Submit,
    WfPull,
    WfPulled,
    WfReport,
    decode,
    encode,
    peek_type,
)


def pack(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def expect_decode_error(frame: bytes, *fragments: str) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(frame)
    text = str(info.value)
    for frag in fragments:
        assert frag in text, f"{frag!r} not in {text!r}"
    return info.value


# One sample of every message type, with every field away from its default, so a
# field that encode or decode drops or reorders shows up as a difference.
SAMPLES: list[Message] = [
    Submit(task_id="5b0c", name="tasks.add", payload=codec.dump_call((2, 3), {"z": 1}),
           priority=7, eta=1700000000.5, expires=1700000100.0, time_limit=30.0,
           soft_time_limit=25.5, retries=2, headers={"parent_id": "p1", "n": [1, 2]}),
    Ack(task_ids=["a", "b", "c"], node="node-1", load=[1, 4, 9]),
    Result(task_id="5b0c", state="FAILURE", result=b"\x05",
           exc={"type": "ValueError", "module": "builtins", "message": "bad",
                "args": codec.dumps(["bad"])},
           traceback="Traceback (most recent call last):\n...", runtime=0.25, node="node-1",
           retries=1, eta=1700000001.0, date_done=1700000000.25, payload=b"\x92\x90\x80"),
    State(task_id="5b0c", state="PROGRESS", meta=codec.dumps({"done": 3}), node="node-1"),
    Release(task_ids=["x", "y"], node="node-2", reason="node is shutting down"),
    Error(code="decode", message="frame is not msgpack", ref="5b0c"),
    Control(req_id="r1", command="status", args={"verbose": True}),
    ControlReply(req_id="r1", ok=True, node="node-1",
                 payload={"busy": 1, "total": 4, "registered": ["tasks.add"]}, error="none"),
    ChildReady(pid=4242),
    ChildCancel(task_id="5b0c", reason="time limit"),
    ChildDone(task_id="5b0c", state="SUCCESS", runtime=1.5, retire="max tasks per child (1)",
              rss=1 << 20, countdown=2.5, keep=False),
    ChildState(task_id="5b0c", state="STARTED", meta=codec.dumps({"pid": 7})),
    Ping(seq=7, target="n2", source="n1", source_addr="tcp://10.0.0.1:7700",
         updates=[[1, "n3", 4, "tcp://10.0.0.3:7700", "n1", 2, {"busy": 1}]]),
    PingReq(seq=8, target="n2", target_addr="tcp://10.0.0.2:7700", source="n1",
            source_addr="tcp://10.0.0.1:7700"),
    PingAck(seq=7, node="n2", updates=[]),
    PingNack(seq=8, node="n3"),
    Gossip(source="n1", updates=[[3, "n4", 2, "", "n1"]]),
    PushPull(source="n1", source_addr="tcp://10.0.0.1:7700",
             members=[[0, "n1", 1, "tcp://10.0.0.1:7700", "n1", 0, {}]], join=True),
    PushPullReply(source="n2", members=[[0, "n2", 3, "tcp://10.0.0.2:7700", "n2", 5, {"q": 0}]]),
    WfReport(source="n1", groups=["g1", "g1"], indexes=[0, 3], results=[b"\x93", b"\x94"]),
    WfPull(source="n1", source_addr="tcp://10.0.0.1:7700", group="g1", round=2,
           ids=["a", "b"], indexes=[0, -1]),
    WfPulled(source="n2", group="g1", round=2, held=["b"], indexes=[3], results=[b"\x93"]),
    Reclaim(source="n1", source_addr="tcp://10.0.0.1:7700", round=1, ids=["a", "b"]),
    Reclaimed(source="n2", round=1, held=["a"], result_ids=["b"], results=[b"\x93"]),
    Moved(task_ids=["x"], node="n1", target="tcp://10.0.0.2:7700", target_node="n2",
          reason="shed to a node with room"),
    Handoff(batch="b1", source="n1", source_addr="tcp://10.0.0.1:7700",
            tasks=[b"\x95\x01\x01\xa1x\xa1y\xc4\x00"], reason="node is shutting down"),
    HandoffAck(batch="b1", node="n2", accepted=["x"], refused={"y": "not registered"},
               address="tcp://10.0.0.2:7700"),
    Replicate(batch="r1", source="n1", source_addr="tcp://10.0.0.1:7700", task_ids=["t1"],
              tasks=[b"\x01"], result_ids=["t2"], result_states=["SUCCESS"], results=[b"\x02"],
              drop=["z"], handed_to=["n3"]),
    ReplicateAck(batch="r1", node="n2"),
]


# ---- the enum is protocol ------------------------------------------------------------

def test_message_type_numbers_are_fixed() -> None:
    # The numbers are on the wire; renumbering breaks every peer built from another
    # version. This table may only ever grow.
    assert {m.name: m.value for m in MsgType} == {
        "SUBMIT": 1, "ACK": 2, "RESULT": 3, "RELEASE": 4, "ERROR": 5, "CONTROL": 6,
        "CONTROL_REPLY": 7, "STATE": 8, "CHILD_READY": 20, "CHILD_DONE": 21, "CHILD_STATE": 22,
        "CHILD_CANCEL": 23,
        "PING": 30, "PING_REQ": 31, "PING_ACK": 32, "PING_NACK": 33, "GOSSIP": 34,
        "PUSH_PULL": 35, "PUSH_PULL_REPLY": 36, "MOVED": 9, "HANDOFF": 40, "HANDOFF_ACK": 41,
        "REPLICATE": 42, "REPLICATE_ACK": 43, "WF_REPORT": 50, "WF_PULL": 51, "WF_PULLED": 52,
        "RECLAIM": 53, "RECLAIMED": 54,
    }


def test_every_message_type_has_a_class_and_a_sample() -> None:
    classes = {cls.TYPE: cls for cls in Message.__subclasses__()}
    assert set(classes) == set(MsgType)
    assert {type(s) for s in SAMPLES} == set(classes.values())


def test_version_constants() -> None:
    assert 1 <= MIN_PROTOCOL_VERSION <= PROTOCOL_VERSION
    assert DEFAULT_MAX_MESSAGE_SIZE == 16 * 1024 * 1024


# ---- round trips ---------------------------------------------------------------------

@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    frame = encode(msg)
    assert isinstance(frame, bytes)
    back = decode(frame)
    assert type(back) is type(msg)
    assert back == msg


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_frame_layout_is_version_type_then_fields_in_order(msg: Message) -> None:
    raw = msgpack.unpackb(encode(msg), raw=False)
    names = [f[0] for f in type(msg)._spec]
    assert raw[0] == PROTOCOL_VERSION
    assert raw[1] == int(msg.TYPE)
    assert raw[2:] == [getattr(msg, n) for n in names]
    assert peek_type(encode(msg)) == int(msg.TYPE)


def test_submit_with_only_required_fields_round_trips_to_defaults() -> None:
    msg = Submit("t1", "tasks.add", b"\x92\x90\x80")
    back = decode(encode(msg))
    assert back == msg
    assert (back.priority, back.eta, back.expires, back.time_limit, back.soft_time_limit,
            back.retries, back.headers) == (0, None, None, None, None, 0, {})


def test_int_is_accepted_for_float_fields() -> None:
    back = decode(pack(1, 1, "t", "n", b"", 0, 1700000000, None, 30, None))
    assert isinstance(back, Submit)
    assert back.eta == 1700000000 and back.time_limit == 30


def test_peek_type_of_unreadable_frames_is_none() -> None:
    assert peek_type(b"") is None
    assert peek_type(b"\x01\x02\x03") is None
    assert peek_type(msgpack.packb({"a": 1})) is None


# ---- evolution: missing trailing optional fields, extra trailing fields -------------

def test_missing_trailing_optional_fields_get_defaults() -> None:
    back = decode(pack(1, 1, "t1", "tasks.add", b"p"))
    assert back == Submit(task_id="t1", name="tasks.add", payload=b"p")
    assert isinstance(back, Submit) and back.headers == {}


def test_missing_fields_with_factory_defaults_get_fresh_values() -> None:
    a = decode(pack(1, 1, "t1", "n", b""))
    b = decode(pack(1, 1, "t2", "n", b""))
    assert isinstance(a, Submit) and isinstance(b, Submit)
    assert a.headers == {} and a.headers is not b.headers
    ack = decode(pack(1, 2, ["t"], "node"))
    assert ack == Ack(["t"], "node", [])


def test_some_trailing_fields_present_rest_default() -> None:
    back = decode(pack(1, 3, "t1", "SUCCESS", b"\x03"))
    assert back == Result(task_id="t1", state="SUCCESS", result=b"\x03")
    assert isinstance(back, Result)
    assert (back.exc, back.traceback, back.runtime, back.node, back.retries) == (None, None, 0.0, "", 0)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_extra_trailing_fields_are_ignored(msg: Message) -> None:
    raw = msgpack.unpackb(encode(msg), raw=False)
    newer = msgpack.packb(raw + ["a field from the future", 42, {"x": [1]}, None], use_bin_type=True)
    assert decode(newer) == msg


def test_extra_trailing_fields_with_ext_types_are_still_refused() -> None:
    # Unknown trailing fields are ignored, but the frame is still checked whole.
    raw = msgpack.unpackb(encode(SAMPLES[0]), raw=False)
    frame = msgpack.packb(raw + [msgpack.ExtType(9, b"x")], use_bin_type=True)
    expect_decode_error(frame, "extension type 9")


# ---- refusal -------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    b"", b"\xc1", b"\x93\x01", b"\xdc\xff", b"\x92\x01\x06\x00\x00",
    b"\xa5ab", b"\xa2\xff\xfe", "π".encode("utf-16"),
], ids=["empty", "never-used-byte", "truncated-array", "truncated-array16", "trailing-bytes",
        "truncated-str", "bad-utf8", "utf16-text"])
def test_non_msgpack_bytes(frame: bytes) -> None:
    expect_decode_error(frame)


@pytest.mark.parametrize("value", [None, 1, "x", b"x", 1.5, True, {"version": 1, "type": 1}])
def test_non_array(value: object) -> None:
    expect_decode_error(msgpack.packb(value, use_bin_type=True), "array")


@pytest.mark.parametrize("items", [[], [1]])
def test_too_short_array(items: list[object]) -> None:
    expect_decode_error(msgpack.packb(items), "array")


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, MIN_PROTOCOL_VERSION - 1, -1, 2**40,
                                     "1", 1.0, True, None, [1]])
def test_unsupported_version(version: object) -> None:
    raw = msgpack.unpackb(encode(SAMPLES[0]), raw=False)
    raw[0] = version
    expect_decode_error(msgpack.packb(raw, use_bin_type=True), "unsupported protocol version")


@pytest.mark.parametrize("mtype", [0, 10, 19, 29, 49, 99, -1, 2**33, "1", 1.0, True, None, b"\x01"])
def test_unknown_type(mtype: object) -> None:
    expect_decode_error(pack(1, mtype, "t", "n", b""), "unknown message type")


@pytest.mark.parametrize("fields,name", [
    ((1, 1, 7, "n", b""), "task_id"),
    ((1, 1, "t", None, b""), "name"),
    ((1, 1, "t", "n", "payload as text"), "payload"),
    ((1, 1, "t", "n", b"", 1.0), "priority"),
    ((1, 1, "t", "n", b"", True), "priority"),
    ((1, 1, "t", "n", b"", 0, "soon"), "eta"),
    ((1, 1, "t", "n", b"", 0, None, None, True), "time_limit"),
    ((1, 1, "t", "n", b"", 0, None, None, None, None, 0, [("a", 1)]), "headers"),
    ((1, 1, "t", "n", b"", 0, None, None, None, None, 0, {1: "int key"}), "headers"),
    ((1, 2, "t", "node"), "task_ids"),
    ((1, 2, ["t", 5], "node"), "task_ids"),
    ((1, 2, ["t"], "node", [1, 1.5, 0]), "load"),
    ((1, 2, ["t"], "node", [1, False, 0]), "load"),
    ((1, 3, "t", "SUCCESS", "not bytes"), "result"),
    ((1, 3, "t", "FAILURE", None, "not a map"), "exc"),
    ((1, 3, "t", "SUCCESS", None, None, None, "fast"), "runtime"),
    ((1, 4, ["t"], b"node"), "node"),
    ((1, 5, 404, "m"), "code"),
    ((1, 6, "r", "ping", ["not", "a", "map"]), "args"),
    ((1, 7, "r", 1, "node"), "ok"),
    ((1, 7, "r", True, "node", None, 5), "error"),
    ((1, 20, "4242"), "pid"),
    ((1, 21, "t", "SUCCESS", 0.1, None, 1.5), "rss"),
])
def test_wrong_field_types(fields: tuple[object, ...], name: str) -> None:
    expect_decode_error(pack(*fields), f".{name} must be")


@pytest.mark.parametrize("fields,missing", [
    ((1, 1, "t", "n"), "payload"),
    ((1, 1, "t"), "name"),
    ((1, 1), "task_id"),
    ((1, 2, ["t"]), "node"),
    ((1, 3, "t"), "state"),
    ((1, 5, "decode"), "message"),
    ((1, 6, "r"), "command"),
    ((1, 7, "r", True), "node"),
    ((1, 20), "pid"),
])
def test_missing_required_field(fields: tuple[object, ...], missing: str) -> None:
    expect_decode_error(pack(*fields), f"missing field {missing!r}")


def test_frame_over_max_size() -> None:
    frame = encode(Submit("t", "n", b"x" * 2000))
    assert decode(frame, max_size=len(frame)) == Submit("t", "n", b"x" * 2000)
    with pytest.raises(DecodeError, match="over the limit"):
        decode(frame, max_size=len(frame) - 1)


def test_frame_over_default_max_size() -> None:
    frame = encode(Submit("t", "n", b"\0" * DEFAULT_MAX_MESSAGE_SIZE))
    assert len(frame) > DEFAULT_MAX_MESSAGE_SIZE
    expect_decode_error(frame, "over the limit", str(DEFAULT_MAX_MESSAGE_SIZE))


def test_size_is_checked_before_parsing() -> None:
    # A huge frame of garbage is refused for its size, without being parsed.
    expect_decode_error(b"\xc1" * 2048, "not msgpack")
    with pytest.raises(DecodeError, match="over the limit"):
        decode(b"\xc1" * 2048, max_size=1024)


@pytest.mark.parametrize("where", ["headers", "payload", "top", "version"])
@pytest.mark.parametrize("code", [0, 1, 5, 127])
def test_ext_types_in_the_envelope_are_refused(where: str, code: int) -> None:
    ext = msgpack.ExtType(code, b"\x00\x01")
    frame = {
        "headers": pack(1, 1, "t", "n", b"", 0, None, None, None, None, 0, {"x": [ext]}),
        "payload": pack(1, 7, "r", True, "node", {"deep": {"er": ext}}),
        "top": pack(1, 5, "decode", "m", None, ext),
        "version": pack(ext, 1, "t", "n", b""),
    }[where]
    expect_decode_error(frame, f"extension type {code}")


def test_negative_ext_types_in_the_envelope_are_refused() -> None:
    # [1, ERROR, "c", <fixext1 type -5>]; msgpack.ExtType cannot build negative codes
    frame = bytes([0x94, 0x01, 0x05, 0xA1, 0x63, 0xD4, 0xFB, 0x00])
    expect_decode_error(frame, "extension type -5")


@pytest.mark.parametrize("where", ["headers", "payload"])
def test_msgpack_timestamp_ext_in_the_envelope_is_refused(where: str) -> None:
    # Extension type -1 (msgpack's Timestamp) is an extension type like any other;
    # the envelope carries plain msgpack only. Until fixed, decode() lets it through
    # as a msgpack.Timestamp object (msgpack handles -1 without calling ext_hook).
    ts = msgpack.Timestamp(1700000000, 0)
    frame = {
        "headers": pack(1, 1, "t", "n", b"", 0, None, None, None, None, 0, {"sent": ts}),
        "payload": pack(1, 7, "r", True, "node", {"when": ts}),
    }[where]
    expect_decode_error(frame, "extension type")


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(priority=-1), "priority"),
    (dict(priority=10), "priority"),
    (dict(priority=2**40), "priority"),
    (dict(task_id=""), "task_id"),
    (dict(task_id="x" * (MAX_ID_LEN + 1)), "task_id"),
    (dict(task_id="t\n[2026-12-01 INFO forged] a line"), "task_id must be printable"),   # nodes
    (dict(task_id="t\x1b[2J"), "task_id must be printable"),                          # log ids
    (dict(name=""), "task name"),
    (dict(name="n" * (MAX_NAME_LEN + 1)), "task name"),
    (dict(time_limit=0), "time_limit"),
    (dict(time_limit=-1.5), "time_limit"),
    (dict(time_limit=math.nan), "time_limit"),
    (dict(soft_time_limit=0.0), "soft_time_limit"),
    (dict(soft_time_limit=-3), "soft_time_limit"),
    (dict(soft_time_limit=math.inf), "soft_time_limit"),       # a child's timer cannot take
    (dict(soft_time_limit=1e300), "soft_time_limit"),          # them (a hostile frame: CI)
    (dict(time_limit=math.inf), "time_limit"),
    (dict(retries=-1), "retries"),
])
def test_submit_validate_failures(kwargs: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = dict(task_id="t", name="n", payload=b"")
    fields.update(kwargs)
    msg = Submit(**fields)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match=fragment):
        msg.validate()
    # and the same values coming off the wire are refused by decode
    expect_decode_error(encode(msg), fragment)


@pytest.mark.parametrize("kwargs", [
    dict(priority=0), dict(priority=9), dict(task_id="x" * MAX_ID_LEN),
    dict(name="n" * MAX_NAME_LEN), dict(time_limit=1e-6), dict(soft_time_limit=0.001),
    dict(retries=0),
])
def test_submit_validate_boundaries_pass(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = dict(task_id="t", name="n", payload=b"")
    fields.update(kwargs)
    msg = Submit(**fields)  # type: ignore[arg-type]
    msg.validate()
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize("req_id,command", [("", "ping"), ("r" * (MAX_ID_LEN + 1), "ping"),
                                            ("r", ""), ("r", "c" * 65)])
def test_control_validate_failures(req_id: str, command: str) -> None:
    expect_decode_error(encode(Control(req_id, command)))


@pytest.mark.parametrize("field", ["task_ids", "result_ids", "drop"])
@pytest.mark.parametrize("bad", ["", "t" * (MAX_ID_LEN + 1)])
def test_replicate_ids_of_a_bad_length_are_refused(field: str, bad: str) -> None:
    """Every id in a REPLICATE is 1..MAX_ID_LEN characters, wherever it sits in its list
    (the check reads the shortest and longest of each list)."""
    lists: dict[str, Any] = {"task_ids": ["t1", "t2"], "tasks": [b"f1", b"f2"],
                             "result_ids": ["r1", "r2"], "result_states": ["SUCCESS"] * 2,
                             "results": [b"x", b"y"], "drop": ["d1", "d2"]}
    lists[field] = [lists[field][0], bad]
    frame = encode(Replicate("b1", "n1", "tcp://10.0.0.1:7700", **lists))
    with pytest.raises(DecodeError, match="task id must be 1"):
        decode(frame)
    lists[field] = [lists[field][0], "t" * MAX_ID_LEN]       # the longest allowed passes
    decode(encode(Replicate("b1", "n1", "tcp://10.0.0.1:7700", **lists)))


def test_replicate_handed_to_is_empty_or_beside_drop_and_absent_from_older_senders() -> None:
    """``handed_to`` (field 11, appended): an older sender's frame has none (every drop
    then says nothing of where the task went); given, it is as long as ``drop``, names
    of at most MAX_ID_LEN characters, else the frame is refused (``decode``), never a
    crash of the backup that reads it."""
    older = msgpack.packb([1, int(MsgType.REPLICATE), "b1", "n1", "tcp://10.0.0.1:7700",
                           [], [], [], [], [], ["d1", "d2"]])
    msg = decode(older)
    assert isinstance(msg, Replicate) and msg.drop == ["d1", "d2"] and msg.handed_to == []
    ok = Replicate("b1", "n1", "tcp://10.0.0.1:7700", drop=["d1", "d2"], handed_to=["", "n2"])
    assert decode(encode(ok)) == ok
    for bad in (["n2"], ["", "n2", "n3"], ["", "n" * (MAX_ID_LEN + 1)]):
        expect_decode_error(encode(Replicate("b1", "n1", "tcp://10.0.0.1:7700",
                                             drop=["d1", "d2"], handed_to=bad)))
    expect_decode_error(msgpack.packb([1, int(MsgType.REPLICATE), "b1", "n1",
                                       "tcp://10.0.0.1:7700", [], [], [], [], [], ["d1"], [7]]))


def test_encode_refuses_values_msgpack_cannot_hold() -> None:
    with pytest.raises(EncodeError, match="Submit"):
        encode(Submit("t", "n", b"", priority=2**64))
    with pytest.raises(EncodeError, match="ControlReply"):
        encode(ControlReply("r", True, "node", payload=object()))


# ---- property tests ------------------------------------------------------------------

def plain(max_leaves: int = 10) -> st.SearchStrategy[object]:
    """Plain msgpack values that compare equal after a round trip."""
    scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
               | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20))
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=max_leaves)


ids = st.text(min_size=1, max_size=MAX_ID_LEN)
# a task's id is printable text (nodes log it): no control, format or separator
# characters but the space
task_ids = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
                   | st.just(" "), min_size=1, max_size=MAX_ID_LEN)
limits = st.none() | st.floats(min_value=1e-9, max_value=MAX_TIME_LIMIT, exclude_max=True) | st.integers(1, int(MAX_TIME_LIMIT) - 1)
times = st.none() | st.floats(allow_nan=False) | st.integers(0, 2**40)

submits = st.builds(
    Submit, task_id=task_ids, name=st.text(min_size=1, max_size=MAX_NAME_LEN), payload=st.binary(max_size=64),
    priority=st.integers(0, 9), eta=times, expires=times, time_limit=limits,
    soft_time_limit=limits, retries=st.integers(0, 2**63 - 1),
    headers=st.dictionaries(st.text(max_size=10), plain(), max_size=4))
results = st.builds(
    Result, task_id=ids, state=st.sampled_from(["SUCCESS", "FAILURE", "REVOKED", "x"]),
    result=st.none() | st.binary(max_size=64),
    exc=st.none() | st.dictionaries(st.text(max_size=10), plain(), max_size=4),
    traceback=st.none() | st.text(max_size=100), runtime=st.floats(allow_nan=False) | st.integers(0, 10),
    node=st.text(max_size=20), retries=st.integers(0, 100))
acks = st.builds(Ack, task_ids=st.lists(ids, max_size=10), node=st.text(max_size=20),
                 load=st.lists(st.integers(-(2**63), 2**64 - 1), max_size=3))
controls = st.builds(Control, req_id=ids, command=st.text(min_size=1, max_size=64),
                     args=st.dictionaries(st.text(max_size=10), plain(), max_size=4))
valid_messages = st.one_of(submits, results, acks, controls)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_decode_error(frame: bytes) -> None:
    try:
        msg = decode(frame)
    except DecodeError:
        return
    assert isinstance(msg, Message)


@st.composite
def tampered_arrays(draw: st.DrawFn) -> list[object]:
    """A valid message's array with fields replaced, cut off or appended."""
    raw: list[object] = msgpack.unpackb(encode(draw(valid_messages)), raw=False)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "replace", "cut", "append", "retype"]))
        i = draw(st.integers(0, len(raw) - 1)) if raw else 0
        if op == "replace" and raw:
            raw[i] = draw(plain(max_leaves=4))
        elif op == "cut":
            del raw[i:]
        elif op == "append":
            raw.append(draw(plain(max_leaves=4)))
        elif op == "retype" and len(raw) > 1:
            raw[1] = draw(st.sampled_from([int(t) for t in MsgType]))
    return raw


@given(tampered_arrays())
def test_tampered_arrays_decode_or_raise_decode_error(raw: list[object]) -> None:
    # Well-formed msgpack reaches the header and field checks, which random bytes
    # rarely do. Whatever decodes must re-encode to the same message.
    try:
        msg = decode(msgpack.packb(raw, use_bin_type=True))
    except DecodeError:
        return
    assert isinstance(raw[1], int) and int(msg.TYPE) == raw[1]
    assert decode(encode(msg)) == msg


@given(valid_messages)
def test_generated_messages_round_trip(msg: Message) -> None:
    msg.validate()
    assert decode(encode(msg)) == msg


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(encode(draw(valid_messages)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        pos = draw(st.integers(0, max(len(frame) - 1, 0)))
        if op == "flip" and frame:
            frame[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and frame:
            frame[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and frame:
            del frame[pos:pos + draw(st.integers(1, 4))]
    return bytes(frame)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_mutated_frames_decode_or_raise_decode_error(frame: bytes) -> None:
    try:
        msg = decode(frame)
    except DecodeError:
        return
    assert isinstance(msg, Message)
    msg.validate()


# ---- membership updates: the edges of what is accepted ---------------------------------

@pytest.mark.parametrize("update", [
    [0, "n1", 1, "tcp://10.0.0.1:7700"],                          # the last three left off
    [1, "n1", 1, "", "o" * MAX_ID_LEN],                           # origin at its limit
    [0, "n1", 1, "tcp://10.0.0.1:7700", "n2", 3, {"k": 1}],
])
def test_membership_updates_at_the_edges_are_accepted(update: list[Any]) -> None:
    assert decode(encode(Gossip("n2", [update]))) == Gossip("n2", [update])


@pytest.mark.parametrize("update,fragment", [
    ([0, "n1", 1], "at least"),
    ([1, "n1", 1, "", "o" * (MAX_ID_LEN + 1)], "origin"),
    ([0, "n1", 1, "tcp://10.0.0.1:7700", "n2", 3, ["not", "a", "map"]], "meta"),
    ([0, "n1", 1, "tcp://10.0.0.1:7700", "n2", 3, {str(i): i for i in range(65)}], "meta"),
    ([0, "n1", 1, "tcp://10.0.0.1:7700", "n2", 3, {1: "int key"}], "meta"),
])
def test_membership_updates_past_the_edges_are_refused(update: list[Any], fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        decode(encode(Gossip("n2", [update])))


def test_a_big_frame_may_hold_one_container_per_16_bytes() -> None:
    """Past COUNTED_FROM bytes a frame may hold len // BYTES_PER_CONTAINER arrays and
    maps: a frame of empty arrays (one byte each; a decoder's list of ~60) is refused
    before it is built; a real big frame (a handoff of 4 MiB) decodes; a small frame of
    empty arrays still reaches the field checks (refused there, with its id)."""
    n = 2 * 1024 * 1024
    empties = b"\x93\x01\x01\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    with pytest.raises(DecodeError, match="arrays and maps in a frame"):
        decode(empties)
    task = encode(Submit("t" * 36, "tasks_app.add", b"\x92\x90\x80" * 20))
    big = Handoff("b", "n", "tcp://127.0.0.1:1", [task] * (4 * 1024 * 1024 // len(task)), "r")
    assert decode(encode(big)) == big
    small = msgpack.packb([1, 1, "the-id", [[]] * 1000])
    with pytest.raises(DecodeError) as e:
        decode(small)
    assert "arrays and maps" not in str(e.value) and e.value.ref == "the-id"
