"""Every message type fuzzed at the decoder (mesh.wire.protocol.decode).

tests/unit/test_protocol.py fuzzes the frame as bytes and tampers with a few valid
message types. Here each type in MsgType (looped over, so a type added later is
covered without touching this file) gets frames whose envelope is right,
``[version, type, ...]``, and whose fields are anything msgpack can carry: the
wrong type, huge or negative ints, NaN and infinities, long strings, nested and
deeply nested containers, maps with odd keys, extension types, too few or too many
fields, and membership updates of every shape. For each such frame decode() must
either return a message of exactly that type or raise DecodeError; and what it
returns must encode, decode again to the same bytes, and hold the very values the
frame carried (defaults where the frame stopped early).
"""
from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.exceptions import DecodeError
from mesh.wire.protocol import (
    MAX_ADDRESS_LEN,
    MAX_ID_LEN,
    MAX_NAME_LEN,
    MAX_NESTING,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Message,
    MsgType,
    decode,
    encode,
)

CLASSES: dict[MsgType, type[Message]] = {cls.TYPE: cls for cls in Message.__subclasses__()}
ALL_TYPES = list(MsgType)
FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1


# ---- values -----------------------------------------------------------------------------
# Strategies are built once, here: building them per draw makes the fuzzing slow.

INT_EDGES = [0, 1, -1, 9, 10, 127, 128, 255, 256, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63,
             UINT64_MAX, INT64_MIN, INT64_MIN + 1, -(2**31)]
FLOAT_EDGES = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, 1e-9]
# empty, short, at and over MAX_ID_LEN / MAX_NAME_LEN / MAX_ADDRESS_LEN, long
TEXT_LENGTHS = [0, 1, MAX_ID_LEN, MAX_ID_LEN + 1, MAX_NAME_LEN, MAX_NAME_LEN + 1, MAX_ADDRESS_LEN + 1, 5000]

edge_ints = st.sampled_from(INT_EDGES) | st.integers(INT64_MIN, UINT64_MAX)
edge_floats = st.sampled_from(FLOAT_EDGES) | st.floats()
edge_texts = (st.sampled_from(["", "tcp://", "\x00", "é€", "\ud7ff", " "])
              | st.builds(lambda n, c: c * n, st.sampled_from(TEXT_LENGTHS), st.sampled_from("xé€\x00")))
sane_texts = st.text(alphabet="abc019:/._-", min_size=1, max_size=8)
sane_ints = st.integers(0, 9)


class _Deep:
    """A value nested ``depth`` containers deep. Its bytes are spliced into the frame
    after packing (see _pack): msgpack's packer recurses on the Python stack, and
    inside hypothesis it gives up long before the depths worth sending."""

    def __init__(self, depth: int, as_map: bool) -> None:
        self.depth, self.as_map = depth, as_map

    def __repr__(self) -> str:
        return f"_Deep({self.depth}, as_map={self.as_map})"

    def packed(self) -> bytes:
        # [[[...[nil]...]]] or {"k": {"k": ... nil}}
        return (b"\x81\xa1k" if self.as_map else b"\x91") * self.depth + b"\xc0"


scalars = (st.none() | st.booleans() | edge_ints | edge_floats | edge_texts | st.text(max_size=6)
           | st.binary(max_size=12))
deep = st.builds(_Deep, st.sampled_from([1000, 600, 300, 101, 100, 99, 20, 1100]), st.booleans())
odd_leaves = (deep
              | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=3))
              | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)))
# msgpack map keys need not be strings; tuples pack as arrays (unhashable when decoded)
odd_keys = (st.integers(-3, 3) | st.none() | st.booleans() | st.binary(max_size=3)
            | st.floats(allow_nan=False) | st.tuples(st.integers(0, 2)))
junk = st.recursive(
    scalars | odd_leaves,
    lambda inner: (st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                   | st.dictionaries(odd_keys, inner, max_size=2)),
    max_leaves=6)
maps = st.dictionaries(st.text(max_size=5), junk, max_size=3)


_MARK_CODE = 99     # ExtType code of the placeholders (their 8-byte data is unique)


def _pack(items: list[Any]) -> bytes:
    """msgpack of ``items``, with each _Deep's bytes in its place."""
    deeps: list[_Deep] = []

    def swap(v: Any) -> Any:
        if isinstance(v, _Deep):
            deeps.append(v)
            return msgpack.ExtType(_MARK_CODE, b"DEEP%04d" % (len(deeps) - 1))
        if isinstance(v, list):
            return [swap(x) for x in v]
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        return v

    frame: bytes = msgpack.packb(swap(items), use_bin_type=True)
    for i, d in enumerate(deeps):
        mark = msgpack.packb(msgpack.ExtType(_MARK_CODE, b"DEEP%04d" % i))
        assert frame.count(mark) == 1
        frame = frame.replace(mark, d.packed())
    return frame


def _pick(sane: st.SearchStrategy[Any], edge: st.SearchStrategy[Any],
          weights: tuple[int, ...] = (0, 0, 0, 0, 1, 2)) -> st.SearchStrategy[Any]:
    """Mostly sane (to get past the checks), sometimes an edge, sometimes junk."""
    return st.sampled_from(weights).flatmap(lambda k: (sane, edge, junk)[k])


_UPDATE_ITEMS: list[st.SearchStrategy[Any]] = [
    _pick(st.integers(0, 3), st.integers(-2, 6)),                            # state
    _pick(sane_texts, edge_texts),                                           # node
    _pick(sane_ints, edge_ints),                                             # incarnation
    _pick(st.sampled_from(["tcp://127.0.0.1:7700", "mem://a", "x"]),
          st.sampled_from(["", "not an address", "tcp://", "tcp://[::1:7", "\x00"]) | edge_texts),
    _pick(st.sampled_from(["", "n1"]), edge_texts),                          # origin
    _pick(sane_ints, edge_ints),                                             # meta_version
    _pick(st.just({}) | maps,                                                # meta
          st.sampled_from([{f"k{i}": i for i in range(n)} for n in (64, 65, 200)])
          | st.dictionaries(odd_keys, st.none(), max_size=2)),
]
update = st.sampled_from([7, 7, 7, 4, 5, 6, 0, 1, 3, 8, 9]).flatmap(
    lambda n: st.tuples(*[_UPDATE_ITEMS[i] if i < len(_UPDATE_ITEMS) else junk for i in range(n)]).map(list))
updates = st.lists(_pick(update, junk), max_size=5)


def _strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    """Values of (about) the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_strategy_for(a) for a in typing.get_args(tp)])
    if tp is type(None):
        return st.none()
    if tp is Any:
        return junk | odd_leaves | deep | st.lists(deep, min_size=1, max_size=2)
    if tp is bool:
        return _pick(st.booleans(), st.sampled_from([0, 1, None]))
    if tp is int:
        return _pick(sane_ints, edge_ints)
    if tp is float:
        return _pick(st.floats(0.5, 1e9) | st.integers(1, 10**6), edge_floats | edge_ints)
    if tp is str:
        return _pick(sane_texts, edge_texts)
    if tp is bytes:
        return _pick(st.binary(max_size=12), st.just(b"\x00" * 3000))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if typing.get_origin(arg) is list:
            return updates
        return st.lists(_strategy_for(arg), max_size=4)
    if origin is dict:
        return _pick(st.just({}) | maps, st.dictionaries(odd_keys, junk, max_size=2)
                     | st.dictionaries(st.text(max_size=3), odd_leaves | deep, min_size=1, max_size=2))
    raise AssertionError(f"no strategy for {tp!r}: extend _strategy_for")


FIELD_STRATEGIES: dict[MsgType, list[st.SearchStrategy[Any]]] = {
    t: [_strategy_for(typing.get_type_hints(cls)[f.name]) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for t, cls in CLASSES.items()}


@st.composite
def field_lists(draw: st.DrawFn, mtype: MsgType) -> list[Any]:
    """Field values for ``mtype``: each mostly of its type, the list complete most of
    the time, else cut short or run long."""
    strategies = FIELD_STRATEGIES[mtype]
    n = len(strategies)
    count = draw(st.sampled_from([n] * 6 + list(range(n + 4))))
    return [draw(strategies[i] if i < n else junk) for i in range(count)]


# ---- the properties --------------------------------------------------------------------

def _check(mtype: MsgType, version: int, fields: list[Any]) -> Message | None:
    """decode() a frame of these fields: a message of this type or DecodeError, and
    what decodes round-trips and holds what was sent."""
    try:
        frame = _pack([version, int(mtype), *fields])
    except (ValueError, TypeError, OverflowError):
        return None                      # msgpack itself cannot pack it: nothing to send
    try:
        msg = decode(frame)
    except DecodeError as e:
        assert str(e)                    # a reason, for the log and the Error reply
        return None
    cls = CLASSES[mtype]
    assert type(msg) is cls and msg.TYPE is mtype
    msg.validate()
    again = encode(msg)
    assert encode(decode(again)) == again
    # the values are the ones on the wire (extra fields dropped, missing ones defaulted)
    spec = cls._spec
    expected = fields[:len(spec)]
    for _name, _check_fn, default, _t in spec[len(expected):]:
        expected.append(default.make() if hasattr(default, "make") else default)
    assert again == _pack([PROTOCOL_VERSION, int(mtype), *expected])
    return msg


def test_every_message_type_has_a_class() -> None:
    assert set(CLASSES) == set(MsgType)


@pytest.mark.parametrize("mtype", ALL_TYPES, ids=lambda t: t.name)
@FUZZ
@given(data=st.data())
def test_typed_fields_decode_to_that_type_or_raise_decode_error(mtype: MsgType, data: st.DataObject) -> None:
    fields = data.draw(field_lists(mtype), label="fields")
    version = data.draw(st.integers(MIN_PROTOCOL_VERSION, PROTOCOL_VERSION), label="version")
    _check(mtype, version, fields)


@pytest.mark.parametrize("mtype", ALL_TYPES, ids=lambda t: t.name)
@settings(FUZZ, max_examples=60)
@given(fields=st.lists(junk, max_size=12))
def test_arbitrary_fields_decode_to_that_type_or_raise_decode_error(mtype: MsgType, fields: list[Any]) -> None:
    _check(mtype, PROTOCOL_VERSION, fields)


def test_the_fuzzer_reaches_past_the_type_checks() -> None:
    """A guard on the strategies above: for every type, some generated frames decode
    and some are refused (a fuzzer refused on its first field tests nothing)."""
    for mtype in ALL_TYPES:
        outcomes: list[bool] = []

        # derandomized: the same examples every run, so fewer of them (~30 s of CPU
        # with 60 random ones, the longest unit test) cannot make it flaky
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(data=st.data())
        def probe(data: st.DataObject) -> None:
            fields = data.draw(field_lists(mtype))   # noqa: B023
            outcomes.append(_check(mtype, PROTOCOL_VERSION, fields) is not None)   # noqa: B023

        probe()
        assert any(outcomes), f"{mtype.name}: no generated frame decoded"
        assert not all(outcomes), f"{mtype.name}: every generated frame decoded"


@pytest.mark.parametrize("depth", [1, 50, 99, 100, 101, 300, 600, 1023, 1100, 5000])
@pytest.mark.parametrize("as_map", [False, True], ids=["lists", "maps"])
@pytest.mark.parametrize("mtype", [MsgType.SUBMIT, MsgType.CONTROL_REPLY, MsgType.GOSSIP],
                         ids=lambda t: t.name)
def test_deeply_nested_values_decode_or_raise_decode_error(mtype: MsgType, depth: int, as_map: bool) -> None:
    # Deep nesting used to escape decode() as RecursionError (msgpack unpacks up to
    # ~1,000 levels; the plain-value check recursed and hit Python's limit first).
    deep = _Deep(depth, as_map)
    fields: list[Any] = {
        MsgType.SUBMIT: ["t", "n", b"", 0, None, None, None, None, 0, {"h": deep}],
        MsgType.CONTROL_REPLY: ["r", True, "node", deep],
        MsgType.GOSSIP: ["s", [[0, "n", 0, "tcp://a:1", "", 0, {"m": deep}]]],
    }[mtype]
    msg = _check(mtype, PROTOCOL_VERSION, fields)
    if depth <= 50:
        assert msg is not None          # ordinary nesting is fine
    if depth >= 300:
        assert msg is None              # absurd nesting is refused, not crashed on


def test_the_nesting_limit_leaves_room_on_a_busy_stack() -> None:
    # A node decodes from inside its event loop, some frames down the stack: the
    # deepest value decode() accepts must not need anywhere near Python's limit.
    frame = _pack([PROTOCOL_VERSION, int(MsgType.CONTROL_REPLY), "r", True, "node",
                   _Deep(MAX_NESTING, as_map=True)])
    limit = sys.getrecursionlimit()

    def at_depth(n: int) -> Message:
        return decode(frame) if n == 0 else at_depth(n - 1)

    assert type(at_depth(limit // 2)) is CLASSES[MsgType.CONTROL_REPLY]
    with pytest.raises(DecodeError, match="nested"):
        decode(_pack([PROTOCOL_VERSION, int(MsgType.CONTROL_REPLY), "r", True, "node",
                      _Deep(MAX_NESTING + 1, as_map=True)]))
