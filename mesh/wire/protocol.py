"""The wire protocol: one frozen dataclass per message type, one encode/decode pair.

(Longer than most modules, on purpose: it is the whole wire format in one place, the
code twin of docs/protocol.md, which tests/unit/test_protocol_doc.py checks against
it message by message. Each message is a small dataclass with its checks; splitting
them by plane would scatter the one table a reader of the protocol needs. How a class
becomes a message, the checks of field types and the generated ``__init__`` and
decoders are :mod:`mesh.wire.message`'s.)

Every protocol message is one ZeroMQ frame holding a msgpack array::

    [version, type, field0, field1, ...]

A ZeroMQ (multipart) message may carry several such frames; each is decoded, and
accepted or refused, on its own.

``version`` is the sender's protocol version; a receiver accepts
``MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION``. Fields are positional, in
the order the dataclass declares them. Evolution rule: new fields are only ever
appended, with a default; a decoder fills missing trailing fields from defaults and
ignores extra trailing fields, so old and new peers interoperate. docs/protocol.md
is the reference for writing a client in another language.

Task arguments and results are opaque ``bytes`` here (see :mod:`mesh.wire.codec`), so the
node routes tasks without decoding what they carry.
"""
from __future__ import annotations

import enum
from dataclasses import field
from typing import Any

import msgpack

from mesh.exceptions import DecodeError, EncodeError
from mesh.wire.codec import ThreadPacker

# the machinery of messages (mesh/wire/message.py), importable from here as before
from mesh.wire.message import _MISSING as _MISSING
from mesh.wire.message import _REGISTRY as _REGISTRY
from mesh.wire.message import MAX_NESTING as MAX_NESTING
from mesh.wire.message import Message as Message
from mesh.wire.message import _Factory as _Factory
from mesh.wire.message import _lazy_init as _lazy_init
from mesh.wire.message import message as message
from mesh.wire.message import prepare as prepare

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
MIN_MAX_MESSAGE_SIZE = 1024           # the smallest max_message_size a peer may have or say
REPLY_TOO_LARGE = "reply-too-large"   # ERROR code: a reply over the receiver's stated limit
MAX_ID_LEN = 200
MAX_NAME_LEN = 500
# MAX_NESTING (containers in containers, in any one field value): mesh/wire/message.py
# msgpack makes a one-byte empty array a list of ~60 bytes that the collector tracks:
# a frame of them under the size limit was millions of lists (16 MiB: over a GiB and a
# minute of a blocked loop). A frame over COUNTED_FROM bytes may hold one array or map
# per BYTES_PER_CONTAINER bytes, at most; one under it, COUNTED_FROM of them (~5 MB).
COUNTED_FROM = 64 * 1024
BYTES_PER_CONTAINER = 16


class MsgType(enum.IntEnum):
    """Message type numbers.

    WARNING: these numbers are protocol. Append only: never renumber, never reuse a
    retired number. Peers built from other versions rely on them.
    """

    SUBMIT = 1          # client -> node: run this task
    ACK = 2             # node -> client: these tasks are accepted (holds node load)
    RESULT = 3          # node -> client: a task finished (or failed before running)
    RELEASE = 4         # node -> client: these tasks were not started; send them elsewhere
    ERROR = 5           # node -> sender: a frame was refused
    CONTROL = 6         # anyone -> node: a control request (ping, status, ...)
    CONTROL_REPLY = 7   # node -> requester
    STATE = 8           # node -> client: a task's state before it finishes (STARTED, PROGRESS...)
    MOVED = 9           # node -> client: another node holds these tasks now (follow them)
    CHILD_READY = 20    # child -> node: a new child is up and idle (internal)
    CHILD_DONE = 21     # child -> node: header of a finished task (internal)
    CHILD_STATE = 22    # child -> node: the running task's state changed (internal)
    CHILD_CANCEL = 23   # node -> child: stop this running task (internal; threads, async)
    # membership and failure detection, node <-> node (mesh/membership, SWIM + Lifeguard)
    PING = 30             # member -> member: are you alive? (a probe; carries updates)
    PING_REQ = 31         # member -> member: probe this target for me (indirect probe)
    PING_ACK = 32         # probed member (or the relay of a PING_REQ) -> prober: alive
    PING_NACK = 33        # relay -> prober: the target did not answer me in time (Lifeguard)
    GOSSIP = 34           # member -> member: membership updates only
    PUSH_PULL = 35        # member -> member: my whole member list; send me yours (join, anti-entropy)
    PUSH_PULL_REPLY = 36  # the answer to PUSH_PULL: the whole member list
    # work moving between nodes, and the second copy of tasks and results (mesh/node/handoff.py)
    HANDOFF = 40          # node -> node: hold these tasks (journal them, then HANDOFF_ACK)
    HANDOFF_ACK = 41      # node -> node: these handed tasks are held here now (or refused)
    REPLICATE = 42        # holder -> backup: keep a copy of these tasks and results
    REPLICATE_ACK = 43    # backup -> holder: the copies of that batch are journalled
    # workflows, node <-> node (mesh/node/workflows.py)
    WF_REPORT = 50        # member's node -> group's coordinator: these members ended
    WF_PULL = 51          # coordinator -> node: what do you know of these ids?
    WF_PULLED = 52        # node -> coordinator: the answer to WF_PULL
    # a holder back after a crash (mesh/node/reclaim.py)
    RECLAIM = 53          # returning holder -> node: which of these ids did you take over?
    RECLAIMED = 54        # node -> returning holder: the answer to RECLAIM



def _bad_limit(said: int) -> DecodeError:
    return DecodeError(f"max_message_size must be 0 (not said) or at least {MIN_MAX_MESSAGE_SIZE}, "
                       f"got {said}")


def _short(s: str, n: int, what: str) -> None:
    if not s or len(s) > n:
        raise DecodeError(f"{what} must be 1..{n} characters, got {len(s)}")


Load = list  # [busy_children, total_children, queued_tasks]


@message
class Submit(Message):
    """Run a task. ``payload`` is codec bytes of ``[args, kwargs]``."""
    TYPE = MsgType.SUBMIT
    task_id: str
    name: str
    payload: bytes
    priority: int = 0                     # 0..9, higher runs first
    eta: float | None = None              # unix time before which it must not start
    expires: float | None = None          # unix time after which it must not start
    time_limit: float | None = None       # seconds; None = node default
    soft_time_limit: float | None = None  # seconds; None = node default
    retries: int = 0                      # how many times this task was retried
    headers: dict[str, Any] = field(default_factory=dict)  # extensible: parent_id, ...
    max_message_size: int = 0             # the largest frame the sender reads (its own
                                          # max_message_size); 0: not said (section 9)

    def validate(self) -> None:
        _check_submit(self.task_id, self.name, self.priority, self.time_limit,
                      self.soft_time_limit, self.retries, self.max_message_size)


# a time limit's ceiling (about 115 days, as the time_limit command's): a child's
# timer cannot take an infinite or astronomical one (setitimer's OverflowError)
MAX_TIME_LIMIT = 1e7


def _check_submit(task_id: str, name: str, priority: int, time_limit: float | None,
                  soft_time_limit: float | None, retries: int, max_message_size: int = 0) -> None:
    """Submit's own checks (validate), also made by encode_submit."""
    _short(task_id, MAX_ID_LEN, "task_id")
    if not task_id.isprintable():      # every log line names it: no line feeds in logs
        raise DecodeError(f"task_id must be printable text, got {task_id[:MAX_ID_LEN]!r}")
    _short(name, MAX_NAME_LEN, "task name")
    if not 0 <= priority <= 9:
        raise DecodeError(f"priority must be 0..9, got {priority}")
    if time_limit is not None and not 0 < time_limit < MAX_TIME_LIMIT:
        raise DecodeError(f"time_limit must be > 0 and under {MAX_TIME_LIMIT:g} s, got {time_limit}")
    if soft_time_limit is not None and not 0 < soft_time_limit < MAX_TIME_LIMIT:
        raise DecodeError(f"soft_time_limit must be > 0 and under {MAX_TIME_LIMIT:g} s, "
                          f"got {soft_time_limit}")
    if retries < 0:
        raise DecodeError("retries must be >= 0")
    if max_message_size and not MIN_MAX_MESSAGE_SIZE <= max_message_size:
        raise _bad_limit(max_message_size)


@message
class Ack(Message):
    """The node holds these tasks now. ``load`` is ``[busy, total, queued]``."""
    TYPE = MsgType.ACK
    task_ids: list[str]
    node: str
    load: list[int] = field(default_factory=list)


@message
class Result(Message):
    """A task is finished. ``result`` is codec bytes of the return value (SUCCESS);
    ``exc`` describes the exception (FAILURE): ``{"type", "module", "message",
    "args"}`` where ``args`` is codec bytes or nil."""
    TYPE = MsgType.RESULT
    task_id: str
    state: str
    result: bytes | None = None
    exc: dict[str, Any] | None = None
    traceback: str | None = None
    runtime: float = 0.0
    node: str = ""
    retries: int = 0
    eta: float | None = None   # state RETRY: unix time of the next run
    date_done: float | None = None  # unix time the task finished (final states)
    payload: bytes | None = None    # state RETRY: the next run's [args, kwargs] when
                                    # retry(args=, kwargs=) changed them (codec bytes)


MAX_STATE_LEN = 100


@message
class State(Message):
    """A task's state before it finishes: STARTED (``track_started``) or a state of
    its own from ``update_state`` (``PROGRESS``), with ``meta`` (codec bytes or nil).
    Sent to the task's owner and to processes watching it; not final."""
    TYPE = MsgType.STATE
    task_id: str
    state: str
    meta: bytes | None = None
    node: str = ""

    def validate(self) -> None:
        _short(self.task_id, MAX_ID_LEN, "task_id")
        _short(self.state, MAX_STATE_LEN, "state")


@message
class Release(Message):
    """The node gives these tasks back unstarted; the client that owns them sends
    them to ``target`` when given (the node is shedding load to a peer with room),
    else to another node (the node is shutting down)."""
    TYPE = MsgType.RELEASE
    task_ids: list[str]
    node: str
    reason: str = ""
    target: str | None = None


@message
class Error(Message):
    """The node refused a frame. ``code`` is a short stable word (``decode``,
    ``too-large``, ``version``, ``bad-request``); ``ref`` is the task or request
    id when it could be read. (``reply-too-large``: a reply to the receiver was over
    the max_message_size it said, and this went instead: section 9.)"""
    TYPE = MsgType.ERROR
    code: str
    message: str
    ref: str | None = None


@message
class Control(Message):
    """A control request; ``command`` is e.g. ``ping`` or ``status``."""
    TYPE = MsgType.CONTROL
    req_id: str
    command: str
    args: dict[str, Any] = field(default_factory=dict)
    max_message_size: int = 0     # the largest frame the sender reads; 0: not said

    def validate(self) -> None:
        _short(self.req_id, MAX_ID_LEN, "req_id")
        _short(self.command, 64, "command")
        if self.max_message_size and not MIN_MAX_MESSAGE_SIZE <= self.max_message_size:
            raise _bad_limit(self.max_message_size)


@message
class ControlReply(Message):
    """The answer to CONTROL ``req_id``: ``payload`` when ``ok``, else ``error``."""
    TYPE = MsgType.CONTROL_REPLY
    req_id: str
    ok: bool
    node: str
    payload: Any = None
    error: str | None = None


@message
class Moved(Message):
    """Another node holds these tasks now: ``node`` handed them to the node at
    ``target`` (named ``target_node``), which journalled them before ``node`` forgot
    them. The owner needs to do nothing for the tasks to run; to get their results it
    sends the kept SUBMIT frames to ``target``, which acknowledges a task it holds
    (and learns where to send its result) or answers one it finished with the
    stored RESULT."""
    TYPE = MsgType.MOVED
    task_ids: list[str]
    node: str
    target: str
    target_node: str = ""
    reason: str = ""


@message
class ChildReady(Message):
    """Internal: a child started and wants work."""
    TYPE = MsgType.CHILD_READY
    pid: int


@message
class ChildDone(Message):
    """Internal: the header of a finished task. The child sends it as the first of
    two frames; the second is the encoded Result, which the node forwards as is.
    ``retire`` says the child exits after this (max tasks or memory)."""
    TYPE = MsgType.CHILD_DONE
    task_id: str
    state: str
    runtime: float = 0.0
    retire: str | None = None
    rss: int = 0
    countdown: float | None = None   # state RETRY: run again after this many seconds
    keep: bool = True                # False: the node keeps no result (ignore_result, Ignore)


@message
class ChildState(Message):
    """Internal: the running task's state changed (track_started, update_state);
    the node passes it on as a STATE message."""
    TYPE = MsgType.CHILD_STATE
    task_id: str
    state: str
    meta: bytes | None = None

    def validate(self) -> None:
        _short(self.state, MAX_STATE_LEN, "state")


@message
class ChildCancel(Message):
    """Internal: stop a running task that shares its child with others (a thread of
    the threads pool, an ``async def`` task). The child interrupts it and reports it
    with state REVOKED; ``reason`` ("time limit", "revoked") is what the node then
    tells the task's owner. A task that does not stop in time has its child killed."""
    TYPE = MsgType.CHILD_CANCEL
    task_id: str
    reason: str = ""


# ---- membership (mesh/membership) --------------------------------------------------------
#
# Membership messages carry *updates*: each update is one msgpack array
#
#     [state, node, incarnation, address, origin, meta_version, meta]
#
# state: 0 alive, 1 suspect, 2 dead, 3 left (UPDATE_* below); node: the member's id;
# incarnation: the member's incarnation number (only the member itself raises it);
# address: where the member's membership messages go ("" is allowed for suspect, dead
# and left); origin: the id of the member that says so (for suspect, whoever suspects;
# "" allowed); meta_version, meta: the member's metadata (its load) and its version,
# meaningful in alive updates only. The last three may be left off (defaults "", 0, {});
# trailing extra items are ignored, as for message fields.

UPDATE_ALIVE = 0
UPDATE_SUSPECT = 1
UPDATE_DEAD = 2
UPDATE_LEFT = 3
MAX_UPDATES = 100_000      # per message (a push-pull carries one update per member)
MAX_META_KEYS = 64
MAX_ADDRESS_LEN = 500
_MAX_UINT63 = 2**63 - 1
MAX_INCARNATION = _MAX_UINT63   # the highest incarnation an update may carry


def _check_updates(updates: list[list[Any]], what: str) -> None:
    if len(updates) > MAX_UPDATES:
        raise DecodeError(f"{what} holds {len(updates)} updates, over the limit of {MAX_UPDATES}")
    for u in updates:
        n = len(u)
        if n < 4:
            raise DecodeError(f"{what}: an update needs at least [state, node, incarnation, address]")
        state, node, inc, addr = u[0], u[1], u[2], u[3]
        if type(state) is not int or not UPDATE_ALIVE <= state <= UPDATE_LEFT:
            raise DecodeError(f"{what}: update state must be 0..3, got {state!r}")
        if type(node) is not str:
            raise DecodeError(f"{what}: update node must be str, got {type(node).__name__}")
        _short(node, MAX_ID_LEN, "update node")
        if type(inc) is not int or not 0 <= inc <= _MAX_UINT63:
            raise DecodeError(f"{what}: update incarnation must be an int 0..2**63-1, got {inc!r}")
        if type(addr) is not str or len(addr) > MAX_ADDRESS_LEN or (state == UPDATE_ALIVE and not addr):
            raise DecodeError(f"{what}: update address must be str of up to {MAX_ADDRESS_LEN} "
                              "characters (not empty when alive)")
        if n > 4 and (type(u[4]) is not str or len(u[4]) > MAX_ID_LEN):
            raise DecodeError(f"{what}: update origin must be str of up to {MAX_ID_LEN} characters")
        if n > 5 and (type(u[5]) is not int or not 0 <= u[5] <= _MAX_UINT63):
            raise DecodeError(f"{what}: update meta_version must be an int 0..2**63-1")
        if n > 6:
            meta = u[6]
            if type(meta) is not dict or len(meta) > MAX_META_KEYS or not all(type(k) is str for k in meta):
                raise DecodeError(f"{what}: update meta must be a map of up to {MAX_META_KEYS} str keys")


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= _MAX_UINT63:
        raise DecodeError(f"seq must be 0..2**63-1, got {seq}")


def _check_address(addr: str, what: str) -> None:
    if not addr or len(addr) > MAX_ADDRESS_LEN:
        raise DecodeError(f"{what} must be 1..{MAX_ADDRESS_LEN} characters, got {len(addr)}")


@message
class Ping(Message):
    """A probe. The receiver, if its id is ``target``, answers PING_ACK(seq) to
    ``source_addr`` (a node with another id, say a new process on a reused address,
    ignores it). ``updates`` are piggybacked membership updates."""
    TYPE = MsgType.PING
    seq: int
    target: str
    source: str
    source_addr: str
    updates: list[list[Any]] = field(default_factory=list)

    def validate(self) -> None:
        _check_seq(self.seq)
        _short(self.target, MAX_ID_LEN, "target")
        _short(self.source, MAX_ID_LEN, "source")
        _check_address(self.source_addr, "source_addr")
        _check_updates(self.updates, "Ping")


@message
class PingReq(Message):
    """An indirect probe: ping ``target`` at ``target_addr`` for me; forward its ack
    to ``source_addr`` as PING_ACK(seq), or send PING_NACK(seq) if it does not answer
    within your probe timeout."""
    TYPE = MsgType.PING_REQ
    seq: int
    target: str
    target_addr: str
    source: str
    source_addr: str

    def validate(self) -> None:
        _check_seq(self.seq)
        _short(self.target, MAX_ID_LEN, "target")
        _check_address(self.target_addr, "target_addr")
        _short(self.source, MAX_ID_LEN, "source")
        _check_address(self.source_addr, "source_addr")


@message
class PingAck(Message):
    """``node`` (the probed member) is alive: the answer to PING ``seq``, sent by the
    node itself or forwarded by the relay of a PING_REQ."""
    TYPE = MsgType.PING_ACK
    seq: int
    node: str
    updates: list[list[Any]] = field(default_factory=list)

    def validate(self) -> None:
        _check_seq(self.seq)
        _short(self.node, MAX_ID_LEN, "node")
        _check_updates(self.updates, "PingAck")


@message
class PingNack(Message):
    """The relay ``node`` got no answer from the target of PING_REQ ``seq`` in time.
    It tells the prober that the relay itself is working (Lifeguard)."""
    TYPE = MsgType.PING_NACK
    seq: int
    node: str

    def validate(self) -> None:
        _check_seq(self.seq)
        _short(self.node, MAX_ID_LEN, "node")


@message
class Gossip(Message):
    """Membership updates from ``source``, and nothing else."""
    TYPE = MsgType.GOSSIP
    source: str
    updates: list[list[Any]]

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _check_updates(self.updates, "Gossip")


@message
class PushPull(Message):
    """``source``'s whole member list (one update per member it knows, itself
    included); the receiver merges it and answers PUSH_PULL_REPLY with its own list
    to ``source_addr``. ``join`` is true when ``source`` is joining through a seed."""
    TYPE = MsgType.PUSH_PULL
    source: str
    source_addr: str
    members: list[list[Any]]
    join: bool = False

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _check_address(self.source_addr, "source_addr")
        _check_updates(self.members, "PushPull")


@message
class PushPullReply(Message):
    """The answer to PUSH_PULL: the replying member's whole member list."""
    TYPE = MsgType.PUSH_PULL_REPLY
    source: str
    members: list[list[Any]]

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _check_updates(self.members, "PushPullReply")


# ---- handoff and replication, node <-> node (mesh/node/handoff.py) ------------------------

MAX_BATCH_TASKS = 100_000   # tasks, results or ids in one HANDOFF/REPLICATE


def _check_batch(what: str, *lists: list[Any]) -> None:
    for items in lists:
        if len(items) > MAX_BATCH_TASKS:
            raise DecodeError(f"{what} holds {len(items)} items, over the limit of {MAX_BATCH_TASKS}")


@message
class Handoff(Message):
    """Hold these tasks: ``tasks`` are SUBMIT frames, as the sender holds them (a
    retried task carries its ``retries`` and ``eta``). The receiver journals each
    one it takes and then answers HANDOFF_ACK(batch) to ``source_addr``; until that
    answer the sender keeps them (and sends the batch again, or to another node).
    A receiver whose boot id is not ``target_boot`` refuses them all: the batch was
    sent to an earlier run of it (queued while it was down), which the sender gave up."""
    TYPE = MsgType.HANDOFF
    batch: str
    source: str
    source_addr: str
    tasks: list[bytes]
    reason: str = ""
    target_boot: str = ""     # the receiver's boot id as the sender knew it ("": any)

    def validate(self) -> None:
        _short(self.batch, MAX_ID_LEN, "batch")
        _short(self.source, MAX_ID_LEN, "source")
        _check_address(self.source_addr, "source_addr")
        _check_batch("Handoff", self.tasks)
        if len(self.target_boot) > MAX_ID_LEN:
            raise DecodeError(f"Handoff.target_boot longer than {MAX_ID_LEN} characters")


@message
class HandoffAck(Message):
    """The answer to HANDOFF ``batch``: ``accepted`` are held here now (journalled,
    and copied to this node's backup), or finished here already; ``refused`` maps
    the others to why (the sender keeps them)."""
    TYPE = MsgType.HANDOFF_ACK
    batch: str
    node: str
    accepted: list[str]
    refused: dict[str, Any] = field(default_factory=dict)
    address: str = ""          # the receiver's front door (where the owners follow)

    def validate(self) -> None:
        _short(self.batch, MAX_ID_LEN, "batch")
        _short(self.node, MAX_ID_LEN, "node")
        _check_batch("HandoffAck", self.accepted, list(self.refused))


@message
class Replicate(Message):
    """From a task's holder (``source``) to its backup: keep a copy of the tasks
    ``task_ids`` (their SUBMIT frames in ``tasks``, in the same order; a newer frame
    for an id replaces the copy), replace the copies of finished tasks with their
    results (``result_ids``, ``result_states`` and the RESULT frames ``results``, in
    the same order), and forget the copies of ``drop`` (ids the holder no longer
    holds: handed to another node, or given back). ``handed_to``: empty, or as long
    as ``drop``: the node each dropped id was handed to ("" when it was not handed
    on: given back, run without a result, its copy moved to another backup). Ids and
    states travel next to the frames so that the backup stores them without decoding
    them. The backup journals all of it, then answers REPLICATE_ACK(batch) to
    ``source_addr``. When membership declares the holder dead, the backup runs the
    copies that have no result."""
    TYPE = MsgType.REPLICATE
    batch: str
    source: str
    source_addr: str
    task_ids: list[str] = field(default_factory=list)
    tasks: list[bytes] = field(default_factory=list)
    result_ids: list[str] = field(default_factory=list)
    result_states: list[str] = field(default_factory=list)
    results: list[bytes] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    handed_to: list[str] = field(default_factory=list)   # (appended: old peers send none)

    def validate(self) -> None:
        _short(self.batch, MAX_ID_LEN, "batch")
        _short(self.source, MAX_ID_LEN, "source")
        _check_address(self.source_addr, "source_addr")
        _check_batch("Replicate", self.tasks, self.results, self.drop)
        if self.handed_to:
            if len(self.handed_to) != len(self.drop):
                raise DecodeError("Replicate: handed_to must be empty or as long as drop")
            if max(map(len, self.handed_to)) > MAX_ID_LEN:
                raise DecodeError(f"Replicate: a handed_to name is longer than {MAX_ID_LEN} "
                                  "characters")
        if len(self.task_ids) != len(self.tasks):
            raise DecodeError("Replicate: task_ids and tasks must be as long as each other")
        if not len(self.result_ids) == len(self.result_states) == len(self.results):
            raise DecodeError("Replicate: result_ids, result_states and results must be as "
                              "long as each other")
        for ids in (self.task_ids, self.result_ids, self.drop):
            if ids and (not min(map(len, ids)) or max(map(len, ids)) > MAX_ID_LEN):
                for tid in ids:
                    _short(tid, MAX_ID_LEN, "task id")


@message
class ReplicateAck(Message):
    """The backup ``node`` journalled everything in REPLICATE ``batch``."""
    TYPE = MsgType.REPLICATE_ACK
    batch: str
    node: str

    def validate(self) -> None:
        _short(self.batch, MAX_ID_LEN, "batch")
        _short(self.node, MAX_ID_LEN, "node")


# ---- workflows (mesh/node/workflows.py) ------------------------------------------------

MAX_WF_ITEMS = 100_000    # ids or results in one workflow message


def _check_parallel(what: str, *lists: list[Any]) -> None:
    n = len(lists[0])
    if n > MAX_WF_ITEMS:
        raise DecodeError(f"{what} carries {n} items, more than {MAX_WF_ITEMS}")
    if any(len(x) != n for x in lists):
        raise DecodeError(f"{what}: its lists differ in length")


@message
class WfReport(Message):
    """Group members ended: ``results[k]`` is the RESULT frame of member ``indexes[k]``
    of group ``groups[k]`` (its last step's result). Sent to the group's coordinator."""
    TYPE = MsgType.WF_REPORT
    source: str
    groups: list[str]
    indexes: list[int]
    results: list[bytes]

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _check_parallel("WfReport", self.groups, self.indexes, self.results)


@message
class WfPull(Message):
    """A coordinator asks what a node knows of a group's member ids (after it took the
    group over, or when members went quiet). ``indexes[k]`` is the member index when
    ``ids[k]`` is a member's result id (the node then also reports it when it ends),
    else -1. The answer, WF_PULLED, goes to ``source_addr``."""
    TYPE = MsgType.WF_PULL
    source: str
    source_addr: str
    group: str
    round: int
    ids: list[str]
    indexes: list[int]

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _short(self.group, MAX_ID_LEN, "group")
        _check_address(self.source_addr, "source_addr")
        _check_parallel("WfPull", self.ids, self.indexes)


@message
class WfPulled(Message):
    """The answer to WF_PULL: the ids this node holds, and the stored results of
    members that ended here (``results[k]`` for member ``indexes[k]``)."""
    TYPE = MsgType.WF_PULLED
    source: str
    group: str
    round: int
    held: list[str]
    indexes: list[int]
    results: list[bytes]

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _short(self.group, MAX_ID_LEN, "group")
        _check_parallel("WfPulled", self.indexes, self.results)
        if len(self.held) > MAX_WF_ITEMS:
            raise DecodeError(f"WfPulled holds {len(self.held)} ids, more than {MAX_WF_ITEMS}")


@message
class Reclaim(Message):
    """A holder back after a crash (its journal recovered) asks a node which of these
    ids it took over, holds, or has the result of; the node also drops the copies of
    them it kept for a holder that is gone (the asker holds them again). The answer,
    RECLAIMED, goes to ``source_addr``."""
    TYPE = MsgType.RECLAIM
    source: str
    source_addr: str
    round: int
    ids: list[str]

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _check_address(self.source_addr, "source_addr")
        _check_parallel("Reclaim", self.ids)


@message
class Reclaimed(Message):
    """The answer to RECLAIM: the ids this node holds (or keeps a copy of for another
    live holder), and the stored RESULT frames of those that finished here
    (``results[k]`` for ``result_ids[k]``)."""
    TYPE = MsgType.RECLAIMED
    source: str
    round: int
    held: list[str]
    result_ids: list[str]
    results: list[bytes]

    def validate(self) -> None:
        _short(self.source, MAX_ID_LEN, "source")
        _check_parallel("Reclaimed", self.held)
        _check_parallel("Reclaimed", self.result_ids, self.results)


# ---- encode / decode ------------------------------------------------------------------

_pack = ThreadPacker(use_bin_type=True)


def encode(msg: Message) -> bytes:
    """Encode a message to one frame."""
    try:
        return _pack((PROTOCOL_VERSION, msg.TYPE.value, *type(msg)._values(msg)))
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"cannot encode {type(msg).__name__}: {e}") from e


_SUBMIT_FIELDS = ("task_id", "name", "payload", "priority", "eta", "expires", "time_limit",
                  "soft_time_limit", "retries", "headers", "max_message_size")
if tuple(name for name, _c, _d, _t in Submit._spec) != _SUBMIT_FIELDS:   # (at import)
    raise TypeError("encode_submit must list Submit's fields in their order")
_SUBMIT_TYPE = MsgType.SUBMIT.value


def encode_submit(task_id: str, name: str, payload: bytes, priority: int = 0,
                  eta: float | None = None, expires: float | None = None,
                  time_limit: float | None = None, soft_time_limit: float | None = None,
                  retries: int = 0, headers: dict[str, Any] | None = None,
                  max_message_size: int = 0) -> bytes:
    """``encode(Submit(...))`` after its ``validate()``, without building the message:
    the same checks, the same errors, the same bytes (a client's ``delay()`` makes one
    per task; the frozen dataclass's ``__init__`` cost more than the encoding)."""
    _check_submit(task_id, name, priority, time_limit, soft_time_limit, retries,
                  max_message_size)
    try:
        return _pack((PROTOCOL_VERSION, _SUBMIT_TYPE, task_id, name, payload, priority, eta,
                      expires, time_limit, soft_time_limit, retries,
                      headers if headers is not None else {}, max_message_size))
    except (TypeError, ValueError, OverflowError) as e:
        raise EncodeError(f"cannot encode Submit: {e}") from e



def decode(frame: bytes, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Message:
    """Decode one frame into a message; DecodeError on anything wrong."""
    if len(frame) > max_size:
        raise DecodeError(f"frame of {len(frame)} bytes is over the limit of {max_size}")
    try:
        if len(frame) <= COUNTED_FROM:
            raw = msgpack.unpackb(frame, raw=False, strict_map_key=False, timestamp=0,
                                  ext_hook=_no_ext)
        else:                   # (the hooks cost a call per array or map: big frames only)
            count = _Containers(len(frame) // BYTES_PER_CONTAINER)
            raw = msgpack.unpackb(frame, raw=False, strict_map_key=False, timestamp=0,
                                  ext_hook=_no_ext, list_hook=count, object_hook=count)
    except DecodeError:
        raise
    except Exception as e:
        raise DecodeError(f"frame is not msgpack: {type(e).__name__}: {e}") from e
    if type(raw) is not list or len(raw) < 2:
        raise DecodeError("frame must be a msgpack array [version, type, fields...]")
    try:
        version, mtype = raw[0], raw[1]
        if type(version) is not int or not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
            raise DecodeError(f"unsupported protocol version {version!r} "
                              f"(this side speaks {MIN_PROTOCOL_VERSION}..{PROTOCOL_VERSION})")
        cls = _REGISTRY.get(mtype) if type(mtype) is int else None
        if cls is None:
            raise DecodeError(f"unknown message type {mtype!r}")
        # the fields' checks, defaults and validate(): generated per type (_make_build);
        # fields past the ones this side knows (from a newer peer) are ignored
        return cls._build(raw[2:])
    except DecodeError as e:       # the id it names, for the ERROR (never unpacked again)
        ref = raw[2] if len(raw) > 2 else None
        e.ref = ref if type(ref) is str and len(ref) <= MAX_ID_LEN else None
        raise


class _Containers:
    """msgpack's list and map hook for a big frame: refuses it past ``left`` arrays
    and maps in all (unpacking stops there, before the rest is built)."""

    __slots__ = ("left", "budget")

    def __init__(self, budget: int):
        self.left = self.budget = budget

    def __call__(self, value: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise DecodeError(f"more than {self.budget} arrays and maps in a frame of that "
                              f"size (one per {BYTES_PER_CONTAINER} bytes at most)")
        return value


def _no_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed in a message envelope")


def peek_type(frame: bytes) -> int | None:
    """The message type of a frame without decoding it whole (None if unreadable)."""
    # fixarray header, then positive fixint version, then positive fixint type
    if len(frame) >= 3 and 0x92 <= frame[0] <= 0x9F and frame[1] < 0x80 and frame[2] < 0x80:
        return frame[2]
    return None
