"""docs/protocol.md against the code, so the reference a client in another language is
written from cannot drift again: every message type's number, name and field list
(names, order, types, defaults), and every byte of the worked examples. The SUBMIT
example and the RETRY resend rule are checked on the client's real path: a real
``Mesh`` client sends to a bare ROUTER socket that plays the node."""
from __future__ import annotations

import ast
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import zmq
from harness import wait_until

from mesh import Mesh
from mesh.wire import codec
from mesh.wire.protocol import (
    _MISSING,
    _REGISTRY,
    Ack,
    Control,
    Message,
    MsgType,
    Result,
    Submit,
    _Factory,
    decode,
    encode,
    peek_type,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
TEXT = DOC.read_text()
TASK_ID = "6f1c0a52-5d1e-4c5e-9a51-0b7a3c1e2d4f"
DEADLINE = 30.0


# ---- reading the document ---------------------------------------------------------------

def signature_lines() -> dict[int, list[str]]:
    """``[1, N, field, ...]`` lines: type number -> field names (each must be unique)."""
    found: dict[int, list[str]] = {}
    for m in re.finditer(r"^`\[1, (\d+)((?:, [a-z_]+)*)\]`$", TEXT, re.M):
        n = int(m.group(1))
        assert n not in found, f"two field lists for message type {n}"
        found[n] = [f.strip() for f in m.group(2).split(",") if f.strip()]
    return found


def field_table(number: int) -> list[list[str]]:
    """The rows of the table that follows the ``[1, N, ...]`` line of type ``number``."""
    m = re.search(rf"^`\[1, {number}(?:, [a-z_]+)*\]`$", TEXT, re.M)
    assert m, f"no field list for message type {number}"
    rows = []
    lines = TEXT[m.end():].lstrip("\n").splitlines()
    assert lines[0].startswith("| # | field | type | default |"), lines[0]
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append(cells)
    return rows


def examples() -> dict[str, bytes]:
    """``<!-- example: NAME -->`` followed by a code block of hex bytes."""
    out = {}
    for m in re.finditer(r"<!-- example: ([a-z-]+) -->\s*```\n(.*?)```", TEXT, re.S):
        out[m.group(1)] = bytes.fromhex(" ".join(m.group(2).split()))
    return out


EXAMPLES = examples()


# ---- types: the document's words and the code's annotations, in one form ----------------

_DOC_TYPES = {"str": "str", "bin": "bytes", "int": "int", "float": "float", "bool": "bool",
              "nil": "None", "any": "Any", "map": "map", "array<str>": "list[str]",
              "array<int>": "list[int]", "array<array>": "list[list]", "array<bin>": "list[bytes]"}


def doc_type(cell: str) -> frozenset[str]:
    base = cell.replace("\\|", "|").replace("\\<", "<").replace("\\>", ">").split(",")[0]
    return frozenset(_DOC_TYPES[part.strip()] for part in base.split("|"))


def code_type(tp: Any) -> frozenset[str]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return frozenset().union(*(code_type(a) for a in typing.get_args(tp)))
    if tp is type(None):
        return frozenset({"None"})
    if tp is Any:
        return frozenset({"Any"})
    origin = typing.get_origin(tp) or tp
    if origin is dict:
        return frozenset({"map"})
    if origin is list:
        (item,) = typing.get_args(tp)
        name = "list" if typing.get_origin(item) is list else item.__name__
        return frozenset({f"list[{name}]"})
    return frozenset({tp.__name__})


def doc_default(cell: str) -> Any:
    text = cell.strip("`")
    return {"nil": None, "false": False, "true": True}.get(text) if text in (
        "nil", "false", "true") else ast.literal_eval(text)


# ---- message types and fields -----------------------------------------------------------

def test_the_type_table_lists_exactly_the_codes_message_types() -> None:
    section = TEXT[TEXT.index("## 4. Message types"):TEXT.index("## 5. Messages")]
    listed: dict[int, str] = {}
    for m in re.finditer(r"^\| (\d+)(?:–(\d+))? \| ([A-Z_, ]+) \|", section, re.M):
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        names = [n.strip() for n in m.group(3).split(",")]
        assert len(names) == last - first + 1, m.group(0)
        listed.update(zip(range(first, last + 1), names))
    assert listed == {int(t): t.name for t in MsgType}


@pytest.mark.parametrize("mtype", list(MsgType), ids=lambda t: t.name)
def test_every_message_fields_are_documented_as_the_code_has_them(mtype: MsgType) -> None:
    cls: type[Message] = _REGISTRY[int(mtype)]
    spec = [(name, default) for name, _check, default, _t in cls._spec]
    hints = typing.get_type_hints(cls)
    assert signature_lines().get(int(mtype)) == [n for n, _ in spec], \
        f"the [1, {int(mtype)}, ...] line of {mtype.name}"
    rows = field_table(int(mtype))
    assert [(int(r[0]), r[1]) for r in rows] == [(i + 2, n) for i, (n, _) in enumerate(spec)]
    for (name, default), row in zip(spec, rows):
        assert doc_type(row[2]) == code_type(hints[name]), f"{mtype.name}.{name}: {row[2]}"
        if isinstance(default, _Factory):
            default = default.make()
        if row[3] == "required":
            assert default is _MISSING, f"{mtype.name}.{name} has a default in the code"
        else:
            assert doc_default(row[3]) == default and type(doc_default(row[3])) is type(default), \
                f"{mtype.name}.{name}: default {row[3]} in the doc, {default!r} in the code"


# ---- the worked examples --------------------------------------------------------------

def submit() -> Submit:
    return Submit(TASK_ID, "tasks.add", codec.dump_call((2, 3), None),
                  headers={"queue": "celery"},       # the queue it is routed to
                  max_message_size=16 * 1024 * 1024)  # what the client reads (its default)


def retry_result() -> Result:
    return Result(TASK_ID, "RETRY", None, exc={
        "type": "OSError", "module": "builtins", "message": "later",
        "args": codec.dumps(["later"])}, traceback="Traceback...", runtime=0.25, node="n1",
        retries=0, eta=1700000000.5, payload=codec.dump_call((7, 3), None))


def test_every_example_block_is_checked() -> None:
    assert set(EXAMPLES) == {"submit", "submit-short", "ack", "result", "ping", "retry-result",
                             "retry-resend"}


def test_the_examples_are_what_the_code_encodes() -> None:
    assert EXAMPLES["submit"] == encode(submit())
    assert EXAMPLES["submit-short"] == b"\x95" + EXAMPLES["submit"][1:58]
    assert decode(EXAMPLES["submit-short"]) == dataclasses.replace(submit(), headers={},
                                                                   max_message_size=0)
    assert EXAMPLES["ack"] == encode(Ack([TASK_ID], "n1", [0, 4, 0]))
    assert EXAMPLES["result"] == encode(Result(TASK_ID, "SUCCESS", codec.dumps(5), runtime=0.25,
                                               node="n1", date_done=1700000000.75))
    assert EXAMPLES["ping"] == encode(Control("r1", "ping"))
    assert EXAMPLES["retry-result"] == encode(retry_result())


def test_the_stated_sizes_and_array_headers_match_the_bytes() -> None:
    sizes = {}
    for m in re.finditer(r"<!-- example: ([a-z-]+) -->", TEXT):
        before = TEXT[:m.start()].rsplit("```", 1)[-1]       # since the previous block
        said = re.search(r"\((\d+) bytes", before)
        if said:
            sizes[m.group(1)] = int(said.group(1))
    assert sizes == {"submit": 83, "ack": 49, "result": 78}
    for name, n in sizes.items():
        assert len(EXAMPLES[name]) == n, name
    for header, count in re.findall(r"^\| `(9[0-9a-f])` \| fixarray, (\d+) elements \|", TEXT, re.M):
        assert int(header, 16) - 0x90 == int(count)
    assert TEXT.count("| `9d` | fixarray, 13 elements |") == 2       # SUBMIT and RESULT


class FakeNode:
    """A bare ROUTER that a real client sends to: it sees the client's real frames."""

    def __init__(self) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def next_submit(self) -> tuple[bytes, bytes]:
        """(routing id, frame) of the next SUBMIT; other frames (members) are skipped."""
        while self.sock.poll(int(DEADLINE * 1000)):
            ident, *frames = self.sock.recv_multipart()
            for frame in frames:
                if peek_type(frame) == MsgType.SUBMIT:
                    return ident, frame
        raise AssertionError("the client sent no SUBMIT")

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def fake_node() -> Any:
    node = FakeNode()
    yield node
    node.close()


def test_apply_async_sends_the_example_frame_and_a_retry_rewrites_it_as_section_12_1_says(
        fake_node: FakeNode) -> None:
    app = Mesh("demo", peers=[fake_node.endpoint], mdns=False)
    try:
        @app.task(name="tasks.add")
        def add(x: int, y: int) -> int:
            return x + y

        r = add.apply_async((2, 3), task_id=TASK_ID)
        ident, frame = fake_node.next_submit()
        assert frame == EXAMPLES["submit"]
        fake_node.sock.send_multipart([ident, EXAMPLES["retry-result"]])
        slot = app._lookup_slot(TASK_ID)
        assert slot is not None
        wait_until(lambda: slot.frame != EXAMPLES["submit"], DEADLINE, "the RETRY to be applied")
        assert slot.frame == EXAMPLES["retry-resend"]
        assert decode(slot.frame) == dataclasses.replace(
            submit(), retries=1, eta=1700000000.5, payload=codec.dump_call((7, 3), None))
        assert r.state == "RETRY"
    finally:
        app.close()
