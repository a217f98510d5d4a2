"""Hostile clients against real meshes, with keys and without (issue 15's attacks).

Two meshes of two real ``meshnode`` processes each: one keyed (``--keys``), one open.
Every attack of the issue is tried against both, from this process with nothing but
zmq sockets and mesh's wire encoding (no app code): without any key, with a key the
attacker made up (it knows the mesh's *public* key: that is public), and with a
stolen *client* key. Against the keyed mesh each is refused; against the open mesh
the table below says which ones the mesh stops anyway and which only keys stop:

    attack                                              open mesh   keyed mesh
    run a registered task                               works       refused (no key)
    read a result by id                                 works       refused (no key)
    read every task's args on the events socket          works       refused (no/client key)
    shutdown / revoke-terminate / rate, time, pool      works       refused (client key)
    forged GOSSIP: a live node dead at 2**63-1          ignored     refused
    forged GOSSIP: a live node suspect (small inc.)     works       refused
    forged member by push-pull gets a victim's tasks    works       refused
    a RESULT from a node the task was not sent to       ignored     ignored (and no handshake)
    16 MiB args beyond a sender's quota; eta 10 years   refused     refused
    journal and data dir readable by others             no          no
    control characters in a member id reach the log     escaped     (refused)

Meanwhile a real keyed client keeps submitting and checking results: it is served
throughout (the last test checks it).
"""
from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from harness import NodeFactory, NodeProc, StreamingClient, make_client_app, wait_until

from mesh.security.curve import Security
from mesh.security.keys import ADMIN, CLIENT, KeyRing, export, init
from mesh.wire import codec
from mesh.wire.protocol import (
    MAX_INCARNATION,
    Ack,
    Control,
    ControlReply,
    Error,
    Gossip,
    Handoff,
    PushPull,
    Replicate,
    Result,
    Submit,
    decode,
    encode,
)

MIB = 1024 * 1024
QUOTA = 40 * MIB                  # --quota-bytes of these nodes: two 16 MiB tasks, not three
QUIET = 2.0                       # s an attack waits for an answer that must not come
MODES = ["open", "keyed"]


# ---- the two meshes ---------------------------------------------------------------------

class Mesh2:
    """Two nodes (a, b) of one mesh, and what a test needs to reach them."""

    def __init__(self, mode: str, a: NodeProc, b: NodeProc, keys: Path | None):
        self.mode, self.a, self.b, self.keys = mode, a, b, keys
        self.admin = Security.load(str(keys), ADMIN) if keys else Security(None)

    @property
    def keyed(self) -> bool:
        return self.keys is not None

    def ask(self, node: NodeProc, command: str, args: dict[str, Any] | None = None) -> Any:
        """As the operator (the admin key on the keyed mesh)."""
        reply = node.control.broadcast([node.endpoint], command, args, timeout=10)[node.endpoint]
        assert isinstance(reply, ControlReply) and reply.ok, reply
        return reply.payload

    def members(self, node: NodeProc) -> dict[str, str]:
        return {m["node"]: m["state"] for m in self.ask(node, "members")}


@pytest.fixture(scope="module")
def key_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    init(str(base / "mesh"))
    export(str(base / "mesh"), str(base / "stolen-client"), CLIENT, "default")
    return {"mesh": base / "mesh", "client": base / "stolen-client"}


@pytest.fixture(scope="module")
def meshes(start_module_node: NodeFactory, key_dirs: dict[str, Path]) -> dict[str, Mesh2]:
    out = {}
    for mode in MODES:
        keys = key_dirs["mesh"] if mode == "keyed" else None
        flags: dict[str, Any] = {"profile": "test", "quota_bytes": QUOTA, "concurrency": 2,
                                 "keys": keys}
        a = start_module_node(name=f"sec-{mode}-a", **flags)
        b = start_module_node(name=f"sec-{mode}-b", peers=a.endpoint, **flags)
        m = Mesh2(mode, a, b, keys)
        wait_until(lambda m=m: m.members(m.a) == {m.a.name: "alive", m.b.name: "alive"},  # type: ignore[misc]
                   what=f"the {mode} mesh to form")
        out[mode] = m
    return out


@pytest.fixture(scope="module")
def served(meshes: dict[str, Mesh2]) -> Iterator[StreamingClient]:
    m = meshes["keyed"]
    s = StreamingClient([m.a.endpoint, m.b.endpoint], keys=str(m.keys), batch=20, pause=0.05)
    yield s
    s.stop()


# ---- the attacker's sockets -------------------------------------------------------------

class Raw:
    """A bare DEALER to one node: no key, a made-up key, or a stolen client key."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, how: str, mesh: Mesh2,
                 key_dirs: dict[str, Path]):
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if how == "made-up key" and mesh.keyed:
            pub, sec = zmq.curve_keypair()
            self.sock.setsockopt(zmq.CURVE_PUBLICKEY, pub)
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, sec)
            self.sock.setsockopt(zmq.CURVE_SERVERKEY, mesh.admin.server_keys()[0] or b"")
        elif how == "client key" and mesh.keyed:
            sec_ = Security(KeyRing(str(key_dirs["client"]), CLIENT))
            sec_.client(self.sock, sec_.server_keys()[0])
        # a DEALER blocks in send while it has no connection: one the node's CURVE
        # handshake refused has none between its reconnects (a fresh-clone CI run hung
        # 120 s in send so, session 14); what cannot be sent is counted, not waited for
        self.sock.setsockopt(zmq.SNDTIMEO, 2000)
        self.unsent = 0
        self.sock.connect(endpoint)

    def send(self, *msgs: Any) -> None:
        try:
            self.sock.send_multipart([m if isinstance(m, bytes) else encode(m) for m in msgs])
        except zmq.Again:
            self.unsent += 1          # (refused at the handshake: nothing reached the node)

    def replies(self, timeout: float = QUIET, until: Any = None) -> list[Any]:
        """What came back within ``timeout`` (or until ``until(msg)`` is true)."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                break
            batch = [decode(f) for f in self.sock.recv_multipart()]
            out += batch
            if until is not None and any(until(msg) for msg in batch):
                return out
        return out


@pytest.fixture
def attacker(key_dirs: dict[str, Path]) -> Iterator[Any]:
    ctx: zmq.Context[Any] = zmq.Context()
    socks: list[Raw] = []

    def make(mesh: Mesh2, node: NodeProc, how: str = "no key") -> Raw:
        r = Raw(ctx, node.endpoint, how, mesh, key_dirs)
        socks.append(r)
        return r

    yield make
    for r in socks:
        r.sock.close(linger=0)
    ctx.term()


def _submit(name: str, *args: Any, task_id: str | None = None, **kw: Any) -> Submit:
    return Submit(task_id or f"evil-{uuid.uuid4().hex}", name, codec.dump_call(args, None), **kw)


def _after_barrier(raw: Raw) -> list[Any]:
    """Replies until the node answered a ping sent last: a node reads one peer's
    frames in order, so everything sent before it has been handled."""
    req = f"barrier-{uuid.uuid4().hex}"
    raw.send(Control(req, "ping"))
    got = raw.replies(10, lambda x: isinstance(x, ControlReply) and x.req_id == req)
    assert any(isinstance(x, ControlReply) and x.req_id == req for x in got), got
    return got


def _unauthorized(replies: list[Any]) -> bool:
    return any(isinstance(m, Error) and m.code == "unauthorized" for m in replies)


WAYS_IN = ["no key", "made-up key"]          # on the keyed mesh: no handshake at all


# ---- running tasks and reading what others run ------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_running_a_task_needs_a_key(meshes: dict[str, Mesh2], attacker: Any, served: StreamingClient,
                                    mode: str) -> None:
    m = meshes[mode]
    for how in WAYS_IN:
        raw = attacker(m, m.a, how)
        sub = _submit("tasks_app.add", 40, 2)
        raw.send(sub)
        got = raw.replies(until=lambda msg: isinstance(msg, Result))
        results = [x for x in got if isinstance(x, Result)]
        if m.keyed:               # no handshake: not even an answer, and it never ran
            assert got == [], got
            assert m.ask(m.a, "result", {"task_id": sub.task_id})["state"] == "UNKNOWN"
        else:                     # only keys stop it
            assert results and codec.loads(results[0].result) == 42
    if m.keyed:                   # a stolen client key may run tasks: that is what it is for
        raw = attacker(m, m.a, "client key")
        raw.send(_submit("tasks_app.add", 1, 2))
        assert any(isinstance(x, Result) for x in raw.replies(10, lambda x: isinstance(x, Result)))


@pytest.mark.parametrize("mode", MODES)
def test_reading_someone_elses_result_needs_a_key(meshes: dict[str, Mesh2], attacker: Any,
                                                  make_client: Any, served: StreamingClient,
                                                  mode: str) -> None:
    m = meshes[mode]
    victim = make_client(m.a, keys=str(m.keys) if m.keys else None)
    r = victim.tasks.echo.delay("the victim's secret")
    assert r.get(timeout=30) == "the victim's secret"
    for how in WAYS_IN:
        got: list[ControlReply] = []
        for node in (m.a, m.b):                  # whichever node ran it
            raw = attacker(m, node, how)
            raw.send(Control("peek", "result", {"task_id": r.id}))
            got += [x for x in raw.replies() if isinstance(x, ControlReply)]
        if m.keyed:
            assert got == []
        else:
            done = [x for x in got if x.payload["state"] == "SUCCESS"]
            assert done and b"the victim's secret" in done[0].payload["result"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["no key", "client key"])
def test_the_events_stream_is_for_operators(meshes: dict[str, Mesh2], make_client: Any,
                                            key_dirs: dict[str, Path], served: StreamingClient,
                                            mode: str, how: str) -> None:
    m = meshes[mode]
    if not m.keyed and how == "client key":
        pytest.skip("an open mesh has no keys to steal")
    events = m.ask(m.a, "ping")["events"]
    ctx: zmq.Context[Any] = zmq.Context()
    sub: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    if how == "client key":
        sec = Security(KeyRing(str(key_dirs["client"]), CLIENT))
        sec.client(sub, sec.server_keys()[0])
    sub.setsockopt(zmq.SUBSCRIBE, b"task-received")
    sub.connect(events)
    try:
        victim = make_client(m.a, keys=str(m.keys) if m.keys else None)
        marker = f"private-{uuid.uuid4().hex}"
        seen: list[bytes] = []
        deadline = time.monotonic() + (QUIET * 2 if m.keyed else 30)
        while time.monotonic() < deadline and not seen:
            victim.tasks.echo.delay(marker).get(timeout=30)
            while sub.poll(200):
                body = sub.recv_multipart()[-1]
                if marker.encode() in body:
                    seen.append(body)
        assert bool(seen) is (not m.keyed)
    finally:
        sub.close(linger=0)
        ctx.term()


# ---- control ------------------------------------------------------------------------------

CONTROLS = [("pool_grow", {"n": 1000}), ("rate_limit", {"task": "tasks_app.add", "rate": "1/h"}),
            ("time_limit", {"task": "tasks_app.add", "soft": 0.001, "hard": 0.001}),
            ("status", {}), ("active", {}), ("shutdown", {})]


def test_a_client_key_cannot_control_or_inspect(meshes: dict[str, Mesh2], attacker: Any,
                                                served: StreamingClient) -> None:
    m = meshes["keyed"]
    for how in ["client key", *WAYS_IN]:
        raw = attacker(m, m.a, how)
        for command, args in CONTROLS:
            raw.send(Control(f"evil-{command}", command, args))
        got = raw.replies(QUIET if how != "client key" else 10,
                          until=lambda x: isinstance(x, Error) and x.ref == "evil-shutdown")
        if how == "client key":   # refused one by one, with the reason
            refused = {x.ref for x in got if isinstance(x, Error) and x.code == "unauthorized"}
            assert refused == {f"evil-{c}" for c, _ in CONTROLS}, got
            assert "admin" in next(x.message for x in got if isinstance(x, Error))
        else:
            assert got == []
    st = m.ask(m.a, "status")
    assert st["total"] == 2 and st["unauthorized_frames"] >= len(CONTROLS)
    reg = {t["name"]: t for t in m.ask(m.a, "registered")}
    assert reg["tasks_app.add"]["rate_limit"] is None and reg["tasks_app.add"]["time_limit"] is None
    assert m.a.proc.poll() is None


def test_without_keys_one_frame_shuts_a_node_down(start_node: NodeFactory, attacker: Any) -> None:
    node = start_node(profile="test", concurrency=1)
    raw = attacker(Mesh2("open", node, node, None), node)
    raw.send(Control("evil", "shutdown"))
    assert node.wait(30) == 0                    # only keys stop this


@pytest.mark.parametrize("mode", MODES)
def test_revoke_terminate_of_someone_elses_task(meshes: dict[str, Mesh2], attacker: Any,
                                                make_client: Any, served: StreamingClient,
                                                mode: str) -> None:
    m = meshes[mode]
    victim = make_client(m.b, keys=str(m.keys) if m.keys else None)
    r = victim.tasks.sleep.delay(1.5)
    wait_until(lambda: any(t["id"] == r.id for n in (m.a, m.b) for t in m.ask(n, "active")),
               what="the victim's task to start")
    raw = attacker(m, m.b, "client key")
    raw.send(Control("evil", "revoke", {"task_ids": [r.id], "terminate": True}))
    got = raw.replies(5, lambda x: isinstance(x, (Error, ControlReply)))
    if m.keyed:
        assert _unauthorized(got)
        assert r.get(timeout=30) == 1.5
    else:                                        # only keys stop it
        with pytest.raises(Exception, match="revoked"):
            r.get(timeout=30)


# ---- membership ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_forged_death_at_the_highest_incarnation(meshes: dict[str, Mesh2], attacker: Any,
                                                   served: StreamingClient, mode: str) -> None:
    m = meshes[mode]
    raw = attacker(m, m.a, "client key")
    for _ in range(3):
        raw.send(Gossip("evil", [[2, m.b.name, MAX_INCARNATION, "", "evil"]]))
    got = _after_barrier(raw)
    assert _unauthorized(got) is m.keyed
    assert m.members(m.a)[m.b.name] == "alive"   # ignored: the incarnation bound, whatever the keys
    incs = {x["node"]: x["incarnation"] for x in m.ask(m.a, "members")}
    assert incs[m.b.name] < 1000


@pytest.mark.parametrize("mode", MODES)
def test_a_forged_suspicion(meshes: dict[str, Mesh2], attacker: Any, served: StreamingClient,
                            mode: str) -> None:
    m = meshes[mode]
    inc = {x["node"]: x["incarnation"] for x in m.ask(m.a, "members")}[m.b.name]
    raw = attacker(m, m.a, "client key")
    denied = m.ask(m.a, "status").get("unauthorized_frames", 0)
    seen: set[str] = set()
    sent = 0
    deadline = time.monotonic() + (QUIET if m.keyed else 30)
    while time.monotonic() < deadline and "suspect" not in seen:
        raw.send(Gossip("evil", [[1, m.b.name, inc, "", "evil"]]))
        sent += 1
        seen.add(m.members(m.a)[m.b.name])
        inc = max(inc, {x["node"]: x["incarnation"] for x in m.ask(m.a, "members")}[m.b.name])
    if m.keyed:
        assert _unauthorized(_after_barrier(raw))
        # every forged frame was refused by the gate, none reached membership (a real
        # suspicion, from a probe slowed by a loaded machine, may still show in ``seen``)
        assert m.ask(m.a, "status")["unauthorized_frames"] - denied >= sent, (sent, seen)
    else:
        assert "suspect" in seen                 # only keys stop it (b refutes it, then)
    wait_until(lambda: m.members(m.a)[m.b.name] == "alive", what="b alive again")


@pytest.mark.parametrize("mode", MODES)
def test_a_forged_member_gets_no_tasks(meshes: dict[str, Mesh2], attacker: Any, served: StreamingClient,
                                       mode: str) -> None:
    m = meshes[mode]
    ctx: zmq.Context[Any] = zmq.Context()
    sink: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)   # where the forged member "lives"
    sink.setsockopt(zmq.LINGER, 0)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    fake = f"tcp://127.0.0.1:{port}"
    # what a real member says of itself (its mesh's name, queues, tasks: public), and idle
    real = next(x["meta"] for x in m.ask(m.a, "members") if x["node"] == m.a.name)
    meta = {**real, "busy": 0, "total": 1024, "queued": 0, "events": ""}
    try:
        raw = attacker(m, m.a, "client key")
        raw.send(PushPull("forged", fake, [[0, "forged", 1, fake, "", 1, meta]], join=True))
        got = _after_barrier(raw)
        joined = "forged" in m.members(m.a)
        assert joined is (not m.keyed) and _unauthorized(got) is m.keyed
        if m.keyed:
            return
        victim = make_client_app([m.a.endpoint], __import__("tasks_app"))   # only keys stop this
        try:
            wait_until(lambda: any(n["node"] == "forged" for n in victim.app.client.nodes()),
                       what="the victim to learn the forged member")
            for i in range(32):
                victim.tasks.add.delay(i, i)
            stolen = 0
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not stolen:
                if sink.poll(200):
                    stolen += sum(isinstance(decode(f), Submit) for f in sink.recv_multipart()[1:])
            assert stolen > 0
        finally:
            victim.close()
    finally:
        sink.close(linger=0)
        ctx.term()


@pytest.mark.parametrize("mode", MODES)
def test_a_forged_handoff_or_copy(meshes: dict[str, Mesh2], attacker: Any, served: StreamingClient,
                                  mode: str) -> None:
    """Node-to-node messages (handoff, copies) are for node keys only: a client key
    cannot make a node hold (and run) tasks as if a peer had handed them over, nor plant
    a result as a copy. Without keys the node takes them (only keys stop it)."""
    m = meshes[mode]
    task = _submit("tasks_app.add", 20, 22)
    planted = f"evil-{uuid.uuid4().hex}"
    raw = attacker(m, m.a, "client key")
    peer = m.b.name                              # a member's name is public: claim to be it
    raw.send(Handoff("evil-batch", peer, "tcp://127.0.0.1:1", [encode(task)]),
             Replicate("evil-copy", peer, "tcp://127.0.0.1:1", result_ids=[planted],
                       result_states=["SUCCESS"],
                       results=[encode(Result(task_id=planted, state="SUCCESS",
                                              result=codec.dumps("forged"), node="evil"))]))
    got = _after_barrier(raw)
    if m.keyed:
        assert sum(_unauthorized([x]) for x in got) == 2, got
        assert m.ask(m.a, "result", {"task_id": task.task_id})["state"] == "UNKNOWN"
        assert m.ask(m.a, "result", {"task_id": planted})["state"] == "UNKNOWN"
    else:                                        # only keys stop it: the node runs it
        wait_until(lambda: m.ask(m.a, "result", {"task_id": task.task_id})["state"] == "SUCCESS",
                   what="the handed task to run")


# ---- what the client believes -------------------------------------------------------------

def test_a_result_from_a_node_the_task_was_not_sent_to_is_dropped(start_node: NodeFactory) -> None:
    """Whatever the keys: the client takes an ACK, RESULT or RELEASE for a task only
    from the node holding it for it. Here a fake node among the client's seeds answers
    for a task the client sent to the real one."""
    import tasks_app
    node = start_node(profile="test", concurrency=1)
    ctx: zmq.Context[Any] = zmq.Context()
    fake: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    fake.setsockopt(zmq.LINGER, 0)
    fake_ep = f"tcp://127.0.0.1:{fake.bind_to_random_port('tcp://127.0.0.1')}"
    client = make_client_app([node.endpoint, fake_ep], tasks_app)
    try:
        rs = [client.tasks.sleep.delay(0.5) for _ in range(8)]
        io = client.app.client
        # the client speaks to every seed (a members request, or tasks placed there)
        assert fake.poll(30_000), "the client never spoke to the fake node"
        ident = fake.recv_multipart()[0]
        wait_until(lambda: all(io.lookup(r.id) is not None and io.lookup(r.id).node for r in rs),
                   what="tasks placed")
        on_real = [r for r in rs if io.lookup(r.id).node == node.endpoint]
        assert on_real
        forged = [encode(Result(task_id=r.id, state="SUCCESS", result=codec.dumps("forged"),
                                node="fake")) for r in on_real]
        fake.send_multipart([ident, *forged, encode(Ack([r.id for r in on_real], "fake", [0, 1, 0]))])
        for r in on_real:
            assert r.get(timeout=30) == 0.5          # the real node's result, not "forged"
        assert io.foreign >= len(on_real)
    finally:
        client.close()
        fake.close(linger=0)
        ctx.term()


# ---- storage: quotas, eta, journal, files -------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_big_tasks_beyond_the_quota_and_far_etas_are_refused(meshes: dict[str, Mesh2],
                                                             attacker: Any, served: StreamingClient,
                                                             mode: str) -> None:
    m = meshes[mode]
    raw = attacker(m, m.b, "client key")
    far = _submit("tasks_app.add", 1, 2, eta=time.time() + 10 * 365 * 86400)
    raw.send(far)
    got = raw.replies(10, lambda x: isinstance(x, Result))
    res = [x for x in got if isinstance(x, Result)]
    assert res and res[0].state == "FAILURE" and "max_eta" in res[0].exc["message"]
    raw.send(_submit("tasks_app.add", 1, 2, eta=1e300))   # (its error said 300 digits)
    got = raw.replies(10, lambda x: isinstance(x, Result))
    res = [x for x in got if isinstance(x, Result)]
    assert res and "is due in 1e+300 s, beyond" in res[0].exc["message"], res
    big = "x" * (16 * MIB - 4096)
    ids = []
    for _ in range(3):
        sub = _submit("tasks_app.echo", big, eta=time.time() + 86400)
        ids.append(sub.task_id)
        raw.send(sub)
    got: list[Any] = []                          # (an ACK may wait for the task's copy)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got += raw.replies(1.0)
        acked = {t for x in got if isinstance(x, Ack) for t in x.task_ids}
        refused = [x for x in got if isinstance(x, Error) and x.code == "quota"]
        if refused and len(acked) >= 2:
            break
    assert acked == set(ids[:2]) and refused and refused[0].ref == ids[2], got
    assert "quota_bytes" in refused[0].message
    m.ask(m.b, "revoke", {"task_ids": ids[:2]})       # the operator cleans up
    wait_until(lambda: m.ask(m.b, "status")["scheduled"] == 0, what="the big tasks gone")


@pytest.mark.parametrize("mode", MODES)
def test_data_dirs_and_journals_are_private(meshes: dict[str, Mesh2], served: StreamingClient,
                                            mode: str) -> None:
    m = meshes[mode]
    node = m.a
    assert stat.S_IMODE(os.stat(node.data_dir).st_mode) == 0o700
    files = [p for p in Path(node.data_dir).iterdir() if p.is_file()]
    assert any(p.name == "journal.sqlite3-wal" for p in files), files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_member_ids_are_escaped_in_logs(start_node: NodeFactory, attacker: Any) -> None:
    node = start_node(profile="test", concurrency=1)
    raw = attacker(Mesh2("open", node, node, None), node)
    forged = "evil\n[2026-01-01 00:00:00,000 ERROR forged] the node is compromised"
    meta = {"mesh": next(x["meta"] for x in Mesh2("open", node, node, None).ask(node, "members")
                         if x["node"] == node.name).get("mesh")}    # of this mesh (public)
    raw.send(Gossip("evil", [[0, forged, 1, "mem://nowhere", "", 1, meta]]))
    wait_until(lambda: "evil\\n[2026" in node.stderr(), what="the forged member in the log")
    assert "\n[2026-01-01 00:00:00,000 ERROR forged]" not in node.stderr()


def test_keys_never_travel(meshes: dict[str, Mesh2], key_dirs: dict[str, Path],
                           served: StreamingClient) -> None:
    """Not in gossip (members' meta), not in any reply: neither secrets nor public keys
    (the fingerprint in ``status`` is 8 characters of the public key, to compare nodes)."""
    import json
    m = meshes["keyed"]
    said = json.dumps([m.ask(n, c) for n in (m.a, m.b) for c in ("members", "status", "ping")],
                      default=repr)
    ring = KeyRing(str(key_dirs["mesh"]), ADMIN)
    for k in ring.keys:
        assert k.public.decode() not in said
        if k.secret is not None:
            assert k.secret.decode() not in said


# ---- and through all of it -----------------------------------------------------------------

def test_real_clients_were_served_throughout(served: StreamingClient) -> None:
    wait_until(lambda: served.ok >= 100, timeout=60, what="100 tasks of the real client")
    served.stop()
    assert served.errors == []
