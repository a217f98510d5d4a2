"""A real node fed random and mutated frames keeps serving a real client, with flat memory.

Several raw DEALERs (random routing ids; some connect, send a burst and vanish at
once) send the node a stream of zmq messages of one to hundreds of frames each:
real Submit, Control and membership frames (PING .. PUSH_PULL_REPLY, addressed to
this node by its name, about made-up members at made-up addresses), node-to-node
frames (HANDOFF .. WF_PULLED, from a made-up member or, in a second test, in the name
of a real member at its address) and frames only clients get (ACK, RESULT...), mutated by bit
flips, byte overwrites, truncation, extension, splicing two frames, and replacing
fields, or items of membership updates, with other msgpack values; plus plain
random bytes. Frames that still decode reach the node's intake, its control
handler and its membership (the "peer says nonsense" path); the rest are refused.
A few kinds of frame are left out, each for a reason given in Mutator._left_out
(two of them are faults of mesh/peers.py).

Meanwhile a real client (mesh.Mesh) keeps submitting tasks_app.add and checks every
result. After a warm-up the node's RSS (its own, and with its children) is sampled;
at the end it must not have grown by more than RSS_BOUND. The run lasts at least
its duration and at least until MIN_FRAMES frames were sent after the warm-up, so
the bound is real: a leak of RSS_BOUND / MIN_FRAMES bytes per frame (the test
prints the figure) fails it. At the end the node must answer a control ping, its
refused_frames counter must have grown and its log must hold no traceback.

The default run is short; ``-m slow`` runs a soak of MESH_HOSTILE_SECONDS (300).
"""
from __future__ import annotations

import collections
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from harness import wait_until

from mesh.exceptions import DecodeError
from mesh.wire import codec
from mesh.wire.protocol import (
    Ack,
    Control,
    ControlReply,
    Error,
    Gossip,
    Handoff,
    HandoffAck,
    Moved,
    Ping,
    PingAck,
    PingNack,
    PingReq,
    PushPull,
    PushPullReply,
    Reclaim,
    Reclaimed,
    Replicate,
    ReplicateAck,
    Result,
    Submit,
    WfPull,
    WfPulled,
    WfReport,
    decode,
    encode,
)

MIB = 1024 * 1024
RSS_BOUND = 20 * MIB            # growth allowed after the warm-up (node alone; with children 2x)
RESULT_TIMEOUT = 60.0
DEFAULT_SECONDS = 7.0           # hostile traffic after the warm-up, default run
WARMUP_SECONDS = 3.0
MIN_FRAMES = 40_000             # frames after the warm-up, at least (the run goes on until then)
SOAK_SECONDS = float(os.environ.get("MESH_HOSTILE_SECONDS", "300"))
PERSISTENT_DEALERS = 4
STRANGERS = 0.01                # the share of messages sent by a new dealer that then vanishes
SYNC_EVERY = 100                # messages a hostile dealer sends between waits for the node
SYNC_TIMEOUT = 60.0             # s the node may take to answer such a ping


# ---- what is sent -------------------------------------------------------------------------

def _junk_values(rng: random.Random) -> list[Any]:
    nested: Any = None
    for _ in range(rng.choice([2, 20, 99, 150])):
        nested = [nested]
    return [None, True, False, 0, -1, 1, 9, 10, 2**31, 2**63 - 1, 2**63, 2**64 - 1, -(2**63),
            0.0, -1.5, float("nan"), float("inf"), float("-inf"), 1e308,
            "", "x", "é" * 3, "x" * 201, "y" * 600, "tcp://", "tcp://127.0.0.1:1", "ping", "status",
            b"", b"\x00" * 17, rng.randbytes(8), [], [1, "a"], {}, {"a": 1}, {1: 2}, {"k": {"k": [None]}},
            nested, [[0, "n", 0, "mem://x"]], [["bad"]], rng.randbytes(3).hex()]


@dataclass
class Mutator:
    """Real frames for ``node`` and ways to break them."""
    node_name: str
    sink: str                       # an address where a socket reads (and drops) what comes
    rng: random.Random
    seeds: list[bytes] = field(default_factory=list)
    raws: list[list[Any]] = field(default_factory=list)
    skipped: int = 0
    member_ids: set[str] = field(default_factory=set)
    # a real member (name, address) that node-to-node frames claim to come from: the
    # node handles them as a member's (copies kept, reclaims and pulls answered, to
    # it); None: from hostile-a, a made-up member the node answers at the sink
    peer: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        r, me, sink = self.rng, self.node_name, self.sink
        src, src_addr = self.peer or ("hostile-a", sink)
        meta = {"busy": 0, "total": 2, "queued": 0, "rate": 0.0, "cpu": 1, "rss": 1, "tasks": "0" * 12}
        task = encode(Submit("hostile-handed", "tasks_app.add", codec.dump_call((2, 3), None)))
        done = encode(Result("hostile-done", "SUCCESS", codec.dumps(5), node="hostile-a"))
        # Made-up members live at addresses that are not tcp://: a member said to be
        # alive at a tcp:// address is somewhere clients send tasks (there is no
        # authentication yet), and a test of the node's robustness must not turn
        # into one of the client's trust. Reply addresses (source_addr, target_addr)
        # are the sink, so what the node answers goes somewhere real.
        updates = [[0, "hostile-a", 1, "mem://hostile-a", "", 1, meta], [1, me, 0, "", "hostile-a"],
                   [2, "hostile-b", 3, "", "hostile-a"], [3, "hostile-c", 0, ""],
                   [0, me, 0, "mem://elsewhere"]]
        msgs = [
            Submit("hostile-task", "tasks_app.add", codec.dump_call((1, 2), None)),
            Submit("hostile-eta", "tasks_app.echo", codec.dump_call(("x",), {}), priority=1,
                   eta=time.time() + 0.5, expires=time.time() + 60, time_limit=5.0, soft_time_limit=4.0,
                   headers={"parent_id": "p", "n": [1, 2]}),
            Control("hostile-req", "ping"), Control("hostile-req", "status"),
            Control("hostile-req", "members", {"verbose": True}),
            Ping(1, me, "hostile-a", sink, updates),
            PingReq(2, "hostile-b", sink, "hostile-a", sink),
            PingAck(1, "hostile-a", updates[:2]),
            PingNack(2, "hostile-a"),
            Gossip("hostile-a", updates),
            PushPull("hostile-a", sink, updates, join=True),
            PushPullReply("hostile-a", updates),
            # node to node, from a made-up member (hostile-a: a member at mem://, so
            # the node answers at the sink) and from strangers: handoffs, copies,
            # reclaims, workflow reports and pulls, and the answers to each
            Handoff("hostile-batch", src, src_addr, [task], "tasks shed", ""),
            Handoff("hostile-batch", "hostile-z", sink, [task, b"\x93junk"], "x", "an-earlier-boot"),
            HandoffAck("h1.2.0", src, ["hostile-task", "x"], {"y": "no room"}, src_addr),
            Replicate("hostile-copy", src, src_addr, task_ids=["hostile-kept"], tasks=[task],
                      result_ids=["hostile-done"], result_states=["SUCCESS"], results=[done],
                      drop=["hostile-kept", "x"]),
            ReplicateAck("hostile-copy", src),
            Reclaim(src, src_addr, 1, ["hostile-task", "hostile-kept", "x"]),
            Reclaimed(src, 1, ["hostile-task"], ["hostile-done"], [done]),
            WfReport(src, ["hostile-group"], [0], [done]),
            WfPull(src, src_addr, "hostile-group", 1, ["hostile-task"], [0]),
            WfPulled(src, "hostile-group", 1, ["hostile-task"], [0], [done]),
            # what nodes send clients, sent to a node (refused: "bad-request")
            Ack(["hostile-task"], "hostile-a", [1, 2]),
            Result("hostile-task", "SUCCESS", codec.dumps(3), node="hostile-a"),
            Error("hostile", "no such thing", "hostile-task"),
            Moved(["hostile-task"], "hostile-a", sink, "hostile-b", "why not"),
            ControlReply("hostile-req", True, "hostile-a", {"x": [1]}),
        ]
        self.seeds = [encode(m) for m in msgs]
        self.raws = [msgpack.unpackb(f, raw=False) for f in self.seeds]
        # Which seed a mutation starts from: Submits rarely. A mutated Submit that
        # still decodes is work the node accepts, runs and journals; too many and
        # the real client's tasks wait behind them (a flood of work is not the
        # nonsense this test is about).
        self.weights = [1 if isinstance(m, (Submit, Handoff, Replicate)) else 8 for m in msgs]
        self.member_ids = {me, "hostile-a", "hostile-b", "hostile-c", *(f"hostile-{i}" for i in range(50))}
        self.junk = _junk_values(r)

    def _seed(self) -> int:
        return self.rng.choices(range(len(self.seeds)), self.weights)[0]

    # -- single frames ----------------------------------------------------------------------
    def frame(self) -> bytes:
        while True:
            f = self._frame()
            if not self._left_out(f):
                return f
            self.skipped += 1

    def _left_out(self, frame: bytes) -> bool:
        """Whether this frame is left out (self.skipped counts them), because it
        names:

        * a member at a tcp:// address: one clients send tasks to (__post_init__);
        * a tcp:// reply address other than the sink, for two faults of the node's
          peer sockets (mesh/peers.py) that this test would otherwise only
          rediscover: a host name is resolved on ZeroMQ's one I/O thread, which
          blocks the whole front door while DNS answers; and a socket is kept per
          address until the next sweep of departed peers (up to 30 s), so many
          addresses at once use up ZeroMQ's sockets meanwhile
          (test_pings_from_many_reply_addresses_do_not_cut_a_node_off);
        * a new member (alive) outside a fixed set of ids. A node believes in every
          member it is told about until it has probed it dead and forgotten it
          (dead_node_reclaim, 60 s), so made-up ids minted faster than that fill
          its table up to max_members (tests/unit/test_membership_hostile.py): a
          bounded table filling, which this test would mistake for a leak."""
        try:
            msg = decode(frame)
        except DecodeError:
            return False
        replies = [getattr(msg, a) for a in ("source_addr", "target_addr") if hasattr(msg, a)]
        allowed = {self.sink, *([self.peer[1]] if self.peer else [])}
        updates = [u for ups in (getattr(msg, "updates", None), getattr(msg, "members", None))
                   for u in ups or ()]
        return (any(a.startswith("tcp") and a not in allowed for a in replies)
                or any(u[3].startswith("tcp") for u in updates)
                or any(u[0] == 0 and u[1] not in self.member_ids for u in updates))

    def _frame(self) -> bytes:
        r = self.rng
        k = r.randrange(100)
        if k < 8:
            return r.randbytes(r.randrange(0, 300))
        if k < 40:
            return self._field_mutation()
        base = bytearray(self.seeds[self._seed()])
        if k < 60:                                  # bit flips
            for _ in range(r.randrange(1, 5)):
                i = r.randrange(len(base))
                base[i] ^= 1 << r.randrange(8)
        elif k < 70:                                # bytes overwritten
            for _ in range(r.randrange(1, 4)):
                base[r.randrange(len(base))] = r.randrange(256)
        elif k < 78:                                # truncated
            del base[r.randrange(len(base)):]
        elif k < 84:                                # extended
            base += r.randbytes(r.randrange(1, 40))
        elif k < 92:                                # spliced with another frame
            other = self.seeds[self._seed()]
            base = base[:r.randrange(len(base) + 1)] + other[r.randrange(len(other) + 1):]
        else:                                       # bytes inserted / deleted
            i = r.randrange(len(base) + 1)
            if r.random() < 0.5:
                base[i:i] = r.randbytes(r.randrange(1, 6))
            else:
                del base[i:i + r.randrange(1, 6)]
        return bytes(base)

    def _field_mutation(self) -> bytes:
        """A real frame with fields (or items of its membership updates) replaced."""
        r = self.rng
        raw = list(self.raws[self._seed()])
        for _ in range(r.randrange(1, 3)):
            i = r.randrange(len(raw) + 2)
            if i >= len(raw):
                raw.append(self._value())                       # a field from the "future"
            elif isinstance(raw[i], list) and raw[i] and isinstance(raw[i][0], list) and r.random() < 0.7:
                ups = [list(u) for u in raw[i]]                  # membership updates
                u = r.choice(ups)
                j = r.randrange(len(u) + 1)
                if j == len(u):
                    u.append(self._update_item(j))
                elif r.random() < 0.3:
                    del u[j:]
                else:
                    u[j] = self._update_item(j)
                raw[i] = ups
            elif i == 0 and r.random() < 0.8:
                continue                                        # keep the version mostly
            else:
                raw[i] = self._value()
        if r.random() < 0.2:
            del raw[r.randrange(2, len(raw) + 1):]
        try:
            return bytes(msgpack.packb(raw, use_bin_type=True))
        except (ValueError, TypeError, OverflowError):
            return r.randbytes(16)

    def _value(self) -> Any:
        r = self.rng
        if r.random() < 0.3:
            return "".join(r.choice("abcxyz019:/.") for _ in range(r.randrange(1, 12)))
        return r.choice(self.junk)

    def _update_item(self, j: int) -> Any:
        """Item ``j`` of a membership update, plausible (it decodes) or not; never a
        tcp:// address (see __post_init__)."""
        r = self.rng
        if r.random() < 0.4:
            v = self._value()
            return "mem://junk" if isinstance(v, str) and v.startswith("tcp") else v
        if j == 0:
            return r.randrange(-1, 5)
        if j in (1, 4):
            return f"hostile-{r.randrange(50)}"                 # a small pool of made-up members
        if j in (2, 5):
            return r.choice([0, 1, 2, 2**62, 2**63 - 1, r.randrange(2**63)])
        if j == 3:
            return r.choice(["mem://hostile", "x", "", "udp://127.0.0.1:1", "ipc://"])
        return r.choice([{}, {"busy": "x", "total": float("inf"), "queued": -1, "tasks": "0" * 12},
                         {"rate": [1, 2]}, {f"k{n}": n for n in range(64)}])

    # -- zmq messages ---------------------------------------------------------------------
    def message(self) -> list[bytes]:
        r = self.rng
        k = r.random()
        n = 1 if k < 0.5 else r.randrange(2, 16) if k < 0.97 else r.randrange(100, 400)
        frames = [self.frame() for _ in range(n)]
        if r.random() < 0.03:
            frames += [frames[0]] * r.randrange(2, 50)          # the same frame again and again
        return frames


# ---- the real client ----------------------------------------------------------------------

class RealClient(threading.Thread):
    """Submits tasks_app.add in batches and checks every result, until stopped."""

    def __init__(self, tasks: Any) -> None:
        super().__init__(name="real-client", daemon=True)
        self.tasks = tasks
        self.stop = threading.Event()
        self.completed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        k = 0
        try:
            while not self.stop.is_set():
                k += 1
                batch = [(i, k, self.tasks.add.delay(i, k)) for i in range(10)]
                for i, j, r in batch:
                    value = r.get(timeout=RESULT_TIMEOUT)
                    assert value == i + j, f"add({i}, {j}) returned {value!r}"
                    self.completed += 1
        except BaseException as e:  # noqa: BLE001  (reported by the test)
            self.error = e


# ---- the run ------------------------------------------------------------------------------

def _rss(pid: int) -> tuple[int, int]:
    """RSS of the node alone and with its children."""
    p = psutil.Process(pid)
    own = p.memory_info().rss
    total = own
    for c in p.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return own, total


@dataclass
class Figures:
    frames: int = 0
    messages: int = 0
    frames_after_warmup: int = 0
    replies: int = 0
    vanished: int = 0
    skipped: int = 0
    rss_before: tuple[int, int] = (0, 0)
    rss_after: tuple[int, int] = (0, 0)
    rss_peak: tuple[int, int] = (0, 0)
    fds_before: int = 0
    fds_after: int = 0
    children_before: list[int] = field(default_factory=list)
    children_after: list[int] = field(default_factory=list)


def _identity(rng: random.Random) -> bytes:
    """A routing id for a stranger: 1 to 32 random bytes (not starting with 0, which
    zmq reserves, nor with P). Short ones repeat, so strangers take over each
    other's ids now and then (ROUTER_HANDOVER)."""
    return bytes([rng.choice([b for b in range(1, 256) if b != ord("P")])]) + rng.randbytes(rng.randrange(0, 32))


class Link:
    """A persistent hostile DEALER. It is paced: after SYNC_EVERY messages it sends a
    control ping and sends no more until that ping's answer came back (which, on one
    connection, means the node has read everything before it), so the node's queue
    stays short and the test measures the node, not a backlog."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, rng: random.Random) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, b"P" + rng.randbytes(16))    # no stranger takes it over
        self.sock.connect(endpoint)
        self.rng = rng
        self.since_sync = 0
        self.waiting: bytes | None = None     # the token of the sync ping in flight
        self.waiting_since = 0.0

    @property
    def blocked(self) -> bool:
        return self.waiting is not None and self.since_sync >= SYNC_EVERY

    def sent(self) -> None:
        self.since_sync += 1
        if self.since_sync >= SYNC_EVERY and self.waiting is None:
            token = f"sync-{self.rng.randbytes(8).hex()}"
            self.sock.send(encode(Control(token, "ping")))
            self.waiting, self.waiting_since, self.since_sync = token.encode(), time.monotonic(), 0

    def drain(self) -> int:
        n = 0
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            n += len(frames)
            token = self.waiting
            if token is not None and any(token in f and isinstance(decode(f), ControlReply) for f in frames):
                self.waiting = None


def hostile_run(node: Any, seconds: float, warmup: float, seed: int,
                peer: tuple[str, str] | None = None) -> Figures:
    rng = random.Random(seed)
    ctx: zmq.Context[Any] = zmq.Context()
    sink = ctx.socket(zmq.ROUTER)             # where made-up members "live": it reads, drops
    sink.setsockopt(zmq.LINGER, 0)
    sink_port = sink.bind_to_random_port("tcp://127.0.0.1")
    mutator = Mutator(node.name, f"tcp://127.0.0.1:{sink_port}", rng, peer=peer)
    links = [Link(ctx, node.endpoint, rng) for _ in range(PERSISTENT_DEALERS)]
    poller = zmq.Poller()
    for link in links:
        poller.register(link.sock, zmq.POLLIN)
    fig = Figures()
    proc = psutil.Process(node.pid)
    warm_end = time.monotonic() + warmup
    warmed = False
    next_sample = 0.0

    def drain() -> None:
        for link in links:
            fig.replies += link.drain()
        while True:
            try:
                sink.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break

    try:
        while True:
            now = time.monotonic()
            if not warmed and now >= warm_end:
                drain()
                warmed = True
                fig.rss_before = fig.rss_peak = _rss(node.pid)
                fig.fds_before = proc.num_fds()
                fig.children_before = sorted(c.pid for c in proc.children())
                fig.frames_after_warmup = 0
            if warmed and now >= warm_end + seconds and fig.frames_after_warmup >= MIN_FRAMES:
                break
            if warmed and now >= next_sample:
                next_sample = now + 1.0
                sample = _rss(node.pid)
                fig.rss_peak = (max(fig.rss_peak[0], sample[0]), max(fig.rss_peak[1], sample[1]))
            if rng.random() < STRANGERS:      # a stranger: connects, says a few things, vanishes
                v = ctx.socket(zmq.DEALER)
                v.setsockopt(zmq.LINGER, rng.choice([0, 0, 50]))
                v.setsockopt(zmq.ROUTING_ID, _identity(rng))
                v.connect(node.endpoint)
                for _ in range(rng.randrange(1, 5)):
                    frames = mutator.message()
                    try:
                        v.send_multipart(frames, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    fig.frames += len(frames)
                    fig.frames_after_warmup += len(frames)
                    fig.messages += 1
                v.close()
                fig.vanished += 1
                continue
            ready = [link for link in links if not link.blocked]
            if not ready:
                poller.poll(100)
                drain()
                late = min(link.waiting_since for link in links)
                assert time.monotonic() - late < SYNC_TIMEOUT, \
                    f"the node did not answer a ping within {SYNC_TIMEOUT:g} s"
                continue
            link = rng.choice(ready)
            frames = mutator.message()
            try:
                link.sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                drain()
                continue
            link.sent()
            fig.frames += len(frames)
            fig.frames_after_warmup += len(frames)
            fig.messages += 1
            if fig.messages % 20 == 0:
                drain()
        drain()
        fig.rss_after = _rss(node.pid)
        fig.rss_peak = (max(fig.rss_peak[0], fig.rss_after[0]), max(fig.rss_peak[1], fig.rss_after[1]))
        fig.fds_after = proc.num_fds()
        fig.children_after = sorted(c.pid for c in proc.children())
        fig.skipped = mutator.skipped
    finally:
        for link in links:
            link.sock.close(linger=0)
        sink.close(linger=0)
        ctx.term()
    return fig


def _hostile_test(start_node: Any, make_client: Any, seconds: float, warmup: float, seed: int,
                  with_peer: bool = False) -> None:
    node = start_node(concurrency=2)
    peer = start_node(concurrency=1, peers=node.endpoint) if with_peer else None
    if peer is not None:
        wait_until(lambda: _members(node).get(peer.name) == "alive"
                   and _members(peer).get(node.name) == "alive", what="the two to meet")
    client = RealClient(make_client(node).tasks)
    refused_before = node.status()["refused_frames"]
    client.start()
    try:
        fig = hostile_run(node, seconds, warmup, seed,
                          (peer.name, peer.endpoint) if peer is not None else None)
    finally:
        client.stop.set()
        client.join(RESULT_TIMEOUT + 10)
    status = node.status()
    members = collections.Counter(m["state"] for m in node.request("members", 10.0).payload)
    grown = fig.rss_after[0] - fig.rss_before[0], fig.rss_after[1] - fig.rss_before[1]
    print(f"\nhostile run: {fig.frames} frames in {fig.messages} messages "
          f"({fig.frames_after_warmup} after the warm-up), {fig.vanished} vanishing dealers, "
          f"{fig.skipped} frames left out (see Mutator._left_out), "
          f"{fig.replies} reply frames read; real client: {client.completed} tasks completed; "
          f"refused_frames {refused_before} -> {status['refused_frames']}; node holds {status['held']} "
          f"task(s) and knows {sum(members.values())} member(s) {dict(members)}")
    print(f"node RSS {fig.rss_before[0] / MIB:.1f} -> {fig.rss_after[0] / MIB:.1f} MiB "
          f"(peak {fig.rss_peak[0] / MIB:.1f}); with children {fig.rss_before[1] / MIB:.1f} -> "
          f"{fig.rss_after[1] / MIB:.1f} MiB (peak {fig.rss_peak[1] / MIB:.1f}); "
          f"fds {fig.fds_before} -> {fig.fds_after}; children {fig.children_before} -> {fig.children_after}; "
          f"a leak of {RSS_BOUND / fig.frames_after_warmup:.0f} bytes per frame would fail the bound")
    assert client.error is None, f"the real client failed: {client.error!r}"
    assert client.completed >= 10
    assert node.proc.poll() is None, "the node died"
    assert node.ping(timeout=5.0)
    assert status["refused_frames"] > refused_before
    assert status["state"] == "alive"
    assert fig.frames_after_warmup >= MIN_FRAMES
    assert grown[0] < RSS_BOUND, f"node RSS grew by {grown[0] / MIB:.1f} MiB after the warm-up"
    assert grown[1] < 2 * RSS_BOUND, f"node + children RSS grew by {grown[1] / MIB:.1f} MiB"
    # a task's own failure is logged with its traceback, as Celery's worker logs it (a
    # mutated frame can give a real task a soft time limit of a microsecond: the soak
    # saw SoftTimeLimitExceeded raised at once); any other traceback is the node's
    for n in (node, *([peer] if peer is not None else [])):
        assert n.proc.poll() is None and n.ping(timeout=5.0), f"{n.name} died"
        records = re.split(r"\n(?=\[\d{4}-\d\d-\d\d )", n.stderr())
        own = [r for r in records if "Traceback" in r and not re.match(
            r"\[[^\]]* ERROR \S+ mesh\.task\] Task .*? raised unexpected: ", r, re.S)]
        assert not own, f"{n.name} logged a traceback:\n" + "\n".join(own[:3])


def test_random_and_mutated_frames_do_not_hurt_a_node_or_its_clients(
        start_node: Any, make_client: Any) -> None:
    _hostile_test(start_node, make_client, DEFAULT_SECONDS, WARMUP_SECONDS, seed=20240601)


def test_node_to_node_frames_in_a_members_name_do_not_hurt_either_node(
        start_node: Any, make_client: Any) -> None:
    """The node-to-node frames (handoffs and their answers, copies, reclaims, workflow
    reports and pulls) claim to come from a real member, b, at its address (both are
    public): the node handles them as b's (copies kept, reclaims and pulls answered to
    b), and b gets answers to what it never sent. Neither logs a traceback."""
    _hostile_test(start_node, make_client, DEFAULT_SECONDS / 2, WARMUP_SECONDS, seed=20261201,
                  with_peer=True)


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_SECONDS) + 600)
def test_hostile_soak(start_node: Any, make_client: Any) -> None:
    _hostile_test(start_node, make_client, SOAK_SECONDS, min(30.0, SOAK_SECONDS / 5), seed=int(time.time()))


# ---- reply addresses -----------------------------------------------------------------------

def _members(node: Any) -> dict[str, str]:
    reply = node.request("members")
    assert isinstance(reply, ControlReply) and reply.ok, reply
    return {m["node"]: m["state"] for m in reply.payload}


def test_pings_from_many_reply_addresses_do_not_cut_a_node_off(start_node: Any, raw_dealer: Any) -> None:
    """A node answers each PING at the address it names, through a socket of its
    own: 1,100 made-up reply addresses use up ZeroMQ's 1,023 sockets, after which
    the node can reach no new peer. Since the node closes the sockets of
    addresses membership does not know (Node.close_departed_peers, every
    dead_node_reclaim / 2, at most 30 s) it recovers: a node that joins right
    after such a burst is seen, and sees it, once that sweep ran. (On the lan
    profile that is up to 30 s during which the node reaches no new peer.)"""
    a = start_node(profile="test", concurrency=1)
    fds = psutil.Process(a.pid).num_fds()
    raw = raw_dealer(a.endpoint)
    for i in range(1100):             # ports nothing listens on: each answer opens a socket
        raw.send(encode(Ping(i, a.name, f"hostile-{i}", f"tcp://127.0.0.1:{1024 + i}")))
    assert a.ping(timeout=10.0)
    b = start_node(profile="test", concurrency=1, peers=a.endpoint)
    wait_until(lambda: _members(a).get(b.name) == "alive" and _members(b).get(a.name) == "alive",
               timeout=30.0, what="a and b to see each other alive", interval=0.1)
    # ... and the descriptors of the sockets it closed are given back. ZeroMQ closes a
    # socket in its own threads (the reaper, the I/O thread), after zmq_close returns:
    # b can be seen a moment after the sweep while most are still open (a CI run under
    # load counted 946 descriptors then, of 1,021 sockets closed; the node's log said it
    # had closed them all). Locally they are gone within 0.2 s.
    counts: list[int] = []

    def given_back() -> bool:
        counts.append(psutil.Process(a.pid).num_fds())
        return counts[-1] < fds + 200
    try:
        wait_until(given_back, timeout=30.0, interval=0.1,
                   what=f"a's descriptors to be fewer than {fds} + 200")
    except AssertionError as e:
        raise AssertionError(f"{e}: counted {counts[:3]} ... {counts[-3:]}") from None
