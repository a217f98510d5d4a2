"""Keys as users run them: meshnode's exposure rule, meshctl keys, roles, and rotation.

Real programs with named exit codes, and real nodes. The rotation test follows the
steps of docs/security.md with running nodes and a client that submits throughout:
a client key replaced, then the mesh key rotated (begin, commit, finish), and not
one task of that client fails."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from harness import (
    MESHCTL,
    MESHNODE,
    NodeFactory,
    StreamingClient,
    clean_env,
    free_port,
    make_client_app,
    run_program,
    wait_until,
)

from mesh.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from mesh.client.control import ControlClient
from mesh.exceptions import MeshError
from mesh.security import keys
from mesh.security.curve import Security
from mesh.wire.protocol import ControlReply

# ---- meshnode without keys ---------------------------------------------------------------


def test_meshnode_without_keys_refuses_to_bind_beyond_loopback(tmp_path: Path) -> None:
    p = run_program(MESHNODE, "--app", "tasks_app", "--bind", f"tcp://0.0.0.0:{free_port()}",
                    "--no-mdns", "--data-dir", str(tmp_path / "d"))
    assert p.returncode == EXIT_USAGE, p
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("meshnode: error: refusing binding tcp://0.0.0.0:")
    assert "meshctl keys init DIR" in line and "--insecure" in line
    p = run_program(MESHNODE, "--app", "tasks_app", "--bind", f"tcp://127.0.0.1:{free_port()}",
                    "--advertise", "tcp://10.1.2.3:7700", "--no-mdns", "--data-dir", str(tmp_path / "d"))
    assert p.returncode == EXIT_USAGE and "advertising tcp://10.1.2.3:7700" in p.stderr, p
    p = run_program(MESHNODE, "--app", "tasks_app", "--bind", f"tcp://127.0.0.1:{free_port()}",
                    "--data-dir", str(tmp_path / "d"),
                    env=clean_env(MESH_MDNS_INTERFACES="10.1.2.3"))
    assert p.returncode == EXIT_USAGE and "mDNS on 10.1.2.3" in p.stderr, p


def test_insecure_serves_beyond_loopback_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([MESHNODE, "--app", "tasks_app", "--bind", f"tcp://0.0.0.0:{port}",
                                 "--insecure", "--no-mdns", "--concurrency", "1",
                                 "--data-dir", str(tmp_path / "d")],
                                stdout=f, stderr=f, env=clean_env(), stdin=subprocess.DEVNULL)
    try:
        with ControlClient(security=Security(None)) as cc:
            wait_until(lambda: isinstance(cc.broadcast([f"tcp://127.0.0.1:{port}"], "ping",
                                                       timeout=0.5)[f"tcp://127.0.0.1:{port}"],
                                          ControlReply), what="the node on every interface")
        assert "no keys and --insecure" in err.read_text()
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_loopback_node_without_keys_says_how_to_serve_others(start_node: NodeFactory) -> None:
    node = start_node()
    assert "no keys: serving on loopback only" in node.stderr()
    assert "meshctl keys init DIR" in node.stderr()


# ---- meshctl keys ------------------------------------------------------------------------

def test_meshctl_keys_init_list_add_remove_export(tmp_path: Path) -> None:
    d = str(tmp_path / "k")
    p = run_program(MESHCTL, "keys", "init", d)
    assert p.returncode == EXIT_OK, p
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert run_program(MESHCTL, "keys", "init", d).returncode == EXIT_USAGE
    p = run_program(MESHCTL, "keys", "add", d, "client", "billing")
    assert p.returncode == EXIT_OK, p
    p = run_program(MESHCTL, "--keys", d, "keys", "list", "--json")     # DIR from --keys
    rows = {(r["role"], r["name"]): r for r in json.loads(p.stdout)}
    assert set(rows) == {("node", "mesh"), ("client", "default"), ("client", "billing"),
                         ("admin", "operator")}
    assert all(r["has_secret"] for r in rows.values())
    assert not any(k.secret.decode() in p.stdout for k in keys.scan(d) if k.secret)  # never shown
    out = str(tmp_path / "billing")
    assert run_program(MESHCTL, "keys", "export", d, out, "--client", "billing").returncode == EXIT_OK
    got = {(k.role, k.name, k.secret is not None) for k in keys.scan(out)}
    assert got == {("node", "mesh", False), ("client", "billing", True)}
    assert run_program(MESHCTL, "keys", "remove", d, "client", "billing").returncode == EXIT_OK
    p = run_program(MESHCTL, "keys", "remove", d, "client", "billing")
    assert p.returncode == EXIT_USAGE and "no client key named 'billing'" in p.stderr
    p = run_program(MESHCTL, "keys", "add", d, "node", "x")
    assert p.returncode == EXIT_USAGE and "rotate" in p.stderr


def test_meshctl_keys_takes_a_key_as_words_or_options_in_add_remove_and_export(
        tmp_path: Path) -> None:
    """``keys add DIR client NAME`` and ``keys export DIR OUT --client NAME`` spelt the
    same key two ways, each command one of them (a new user, session 16): each takes
    both now, and the contract's spellings still work."""
    d = str(tmp_path / "k")
    assert run_program(MESHCTL, "keys", "init", d).returncode == EXIT_OK
    for argv in (("add", d, "--client", "billing"), ("add", d, "client", "reports"),
                 ("add", d, "--admin", "ops")):
        p = run_program(MESHCTL, "keys", *argv)
        assert p.returncode == EXIT_OK, p
    for out, role in (("words", ("client", "billing")), ("options", ("--client", "billing")),
                      ("node-word", ("node",)), ("node-option", ("--node",)),
                      ("admin", ("admin", "ops"))):
        p = run_program(MESHCTL, "keys", "export", d, str(tmp_path / out), *role)
        assert p.returncode == EXIT_OK, p
    assert {(k.role, k.name, k.secret is not None) for k in keys.scan(str(tmp_path / "words"))} \
        == {(k.role, k.name, k.secret is not None) for k in keys.scan(str(tmp_path / "options"))} \
        == {("node", "mesh", False), ("client", "billing", True)}
    assert ("node", "mesh", True) in {(k.role, k.name, k.secret is not None)
                                      for k in keys.scan(str(tmp_path / "node-word"))}
    assert run_program(MESHCTL, "keys", "remove", d, "--client", "billing").returncode == EXIT_OK
    assert run_program(MESHCTL, "keys", "remove", d, "admin", "ops").returncode == EXIT_OK
    assert {(k.role, k.name) for k in keys.scan(d)} == {
        ("node", "mesh"), ("client", "default"), ("client", "reports"), ("admin", "operator")}
    p = run_program(MESHCTL, "keys", "add", d, "--client", "a", "--admin", "b")
    assert p.returncode == EXIT_USAGE and "give one role" in p.stderr, p
    p = run_program(MESHCTL, "keys", "add", "--help")
    assert "--client NAME" in p.stdout and "client|admin NAME" in p.stdout, p


# ---- roles --------------------------------------------------------------------------------

def test_roles_through_meshctl(start_node: NodeFactory, tmp_path: Path) -> None:
    d = str(tmp_path / "k")
    keys.init(d)
    client_only = str(tmp_path / "client-only")
    keys.export(d, client_only, "client", "default")
    node = start_node(keys=d)
    ep = node.endpoint
    p = run_program(MESHCTL, "--keys", d, "--peers", ep, "--json", "status")   # the admin key
    assert p.returncode == EXIT_OK, p
    assert json.loads(p.stdout)[0]["keys"] == keys.KeyRing(d, "node").identity.fingerprint
    p = run_program(MESHCTL, "--keys", client_only, "--peers", ep, "inspect", "active")
    assert p.returncode == EXIT_FAILURE and "needs an admin" in p.stdout + p.stderr, p
    p = run_program(MESHCTL, "--keys", client_only, "--peers", ep, "call", "tasks_app.add",
                    "--args", "[2, 3]", "--wait")                               # a client may run tasks
    assert p.returncode == EXIT_OK and p.stdout.strip() == "5", p
    p = run_program(MESHCTL, "--peers", ep, "ping")                             # no keys at all
    assert p.returncode == EXIT_FAILURE and "requires keys" in p.stderr, p
    p = run_program(MESHCTL, "--peers", ep, "status")                           # says why, too
    assert p.returncode == EXIT_FAILURE and "refused" in p.stdout, p
    assert f"the node at {ep} requires keys" in p.stderr, p
    p = run_program(MESHCTL, "--keys", str(tmp_path / "nowhere"), "--peers", ep, "ping")
    assert p.returncode == EXIT_USAGE and "meshctl keys init" in p.stderr, p


def test_status_says_a_keyed_node_refused_us_and_why(start_node: NodeFactory,
                                                     tmp_path: Path) -> None:
    """A node that turned meshctl down (no keys, another mesh's keys, a client key
    asking what only an admin may) is there: status says "refused" and why, not
    "unreachable" (a new user's report, session 16); a silent address stays
    unreachable."""
    d, other, client_only = str(tmp_path / "k"), str(tmp_path / "other"), str(tmp_path / "c")
    keys.init(d)
    keys.init(other)
    keys.export(d, client_only, "client", "default")
    node = start_node(keys=d)
    ep, silent = node.endpoint, f"tcp://127.0.0.1:{free_port()}"

    def says_refused(flags: tuple[str, ...], why: str) -> None:
        p = run_program(MESHCTL, *flags, "--peers", f"{ep},{silent}", "--timeout", "1", "status")
        assert p.returncode == EXIT_FAILURE, p
        states = {line.split()[1]: line.split()[2] for line in p.stdout.splitlines()[1:3]}
        assert states == {ep: "refused", silent: "unreachable"}, p
        assert "0 of 2 node(s) answered; 1 refused us" in p.stdout, p
        assert f"{ep} refused us: " in p.stderr and why in p.stderr, p
        p = run_program(MESHCTL, *flags, "--peers", ep, "--timeout", "1", "--json", "status")
        rows = json.loads(p.stdout)
        assert [(r["address"], r["state"], r["answered"]) for r in rows] == [(ep, "refused", False)]
        assert why in rows[0]["error"], rows

    # a node that refused our handshake takes no message of ours: `result` and `call`
    # stop there, at once and saying why (exit 4, nothing was asked)
    def stops_there(flags: tuple[str, ...]) -> None:
        p = run_program(MESHCTL, *flags, "--peers", ep, "--timeout", "1", "result", "some-id")
        assert p.returncode == EXIT_UNREACHABLE, p
        assert "no mesh node could be reached or would take our keys" in p.stderr, p

    # each meshctl waits out its 1 s timeout: the five cases run side by side
    with ThreadPoolExecutor(5) as pool:
        runs = [pool.submit(says_refused, flags, why) for flags, why in (
                    ((), f"the node at {ep} requires keys"),
                    (("--keys", other), f"the node at {ep} does not hold a mesh key"),
                    (("--keys", client_only), "needs an admin key"))]
        runs += [pool.submit(stops_there, flags) for flags in ((), ("--keys", other))]
        for run in runs:
            run.result()


def test_an_app_with_a_key_the_mesh_does_not_know_fails_clearly(start_node: NodeFactory,
                                                                tmp_path: Path) -> None:
    import tasks_app
    d, other = str(tmp_path / "k"), str(tmp_path / "other")
    keys.init(d)
    keys.init(other)
    node = start_node(keys=d)
    for where, words in ((other, "does not hold a mesh key"), (None, "requires keys")):
        c = make_client_app([node.endpoint], tasks_app, keys=where)
        try:
            with pytest.raises(MeshError, match=words):
                c.tasks.add.delay(1, 2).get(timeout=30)
        finally:
            c.close()
    # a made-up client key with the right mesh key: the node refuses it (ZAP)
    stranger = str(tmp_path / "stranger")
    keys.export(d, stranger, "client", "default")
    keys.remove(stranger, "client", "default")
    keys.add(stranger, "client", "default")                  # a pair the mesh never saw
    c = make_client_app([node.endpoint], tasks_app, keys=stranger)
    try:
        with pytest.raises(MeshError, match="refused this process's key"):
            c.tasks.add.delay(1, 2).get(timeout=30)
    finally:
        c.close()


# ---- rotation with no downtime -----------------------------------------------------------

def test_rotation_needs_no_downtime(start_node: NodeFactory, tmp_path: Path) -> None:
    d = str(tmp_path / "k")                  # one directory for both nodes: "copied" at once
    keys.init(d)
    # the default (LAN) membership profile, as users run it: the two nodes read the key
    # directory each on its own clock (RELOAD_INTERVAL, 2 s; ROTATING_INTERVAL, 0.25 s,
    # while a rotation is begun), so for up to that long one serves the new mesh key and
    # the other the old, and their probes fail; the test profile declares a member dead
    # after ~1 s of that, and so did the default profile on the 2 s clock (CI, stop 30)
    a = start_node(keys=d, profile="lan")
    b = start_node(keys=d, profile="lan", peers=a.endpoint)
    eps = [a.endpoint, b.endpoint]

    def status(n: Any) -> dict[str, Any]:
        reply = n.request("status", timeout=5.0)     # a node rebinding may miss one
        return reply.payload if isinstance(reply, ControlReply) and reply.ok else {}

    def reloaded(before: dict[str, int]) -> bool:
        return all(status(n).get("key_reloads", -1) > before[n.name] for n in (a, b))

    def reloads() -> dict[str, int]:
        return {n.name: n.status()["key_reloads"] for n in (a, b)}

    old_copy = str(tmp_path / "before")      # what a machine that never got the new keys holds
    keys.copy_tree(d, old_copy)
    first = StreamingClient(eps, d)
    first.more()

    # 1. a client key replaced: add the new one, move the app, remove the old one
    r = reloads()
    keys.add(d, "client", "v2")
    wait_until(lambda: reloaded(r), what="nodes to read the new client key")
    second = StreamingClient(eps, d, key_name="v2")
    second.more()
    first.stop()
    assert not first.errors, first.errors
    r = reloads()
    keys.remove(d, "client", "default")
    wait_until(lambda: reloaded(r), what="nodes to drop the old client key")
    second.more()

    # 2. the mesh key: begin, commit, finish -- the client and meshctl work throughout
    first_key = a.status()["keys"]
    r = reloads()
    keys.rotate(d, "begin")
    wait_until(lambda: reloaded(r), what="nodes to accept the next mesh key")
    second.more()
    r = reloads()
    keys.rotate(d, "commit")
    wait_until(lambda: all(status(n).get("keys") not in (None, first_key) for n in (a, b)),
               what="both nodes to serve with the new mesh key")
    second.more()
    p = run_program(MESHCTL, "--keys", d, "--peers", ",".join(eps), "--json", "status")
    assert p.returncode == EXIT_OK and len(json.loads(p.stdout)) == 2, p
    r = reloads()
    keys.rotate(d, "finish")
    wait_until(lambda: reloaded(r), what="nodes to drop the old mesh key")
    second.more()
    second.stop()
    assert not second.errors, second.errors
    assert second.ok > 0

    # the old keys are refused now; the mesh never lost a member
    p = run_program(MESHCTL, "--keys", old_copy, "--peers", a.endpoint, "ping")
    assert p.returncode == EXIT_FAILURE and "does not hold a mesh key" in p.stderr, p
    members = a.request("members")
    assert {m["node"]: m["state"] for m in members.payload} == {a.name: "alive", b.name: "alive"}  # type: ignore[union-attr]
    for n in (a, b):
        assert "-> dead" not in n.stderr() and "Traceback" not in n.stderr()
    shutil.rmtree(old_copy)


def test_a_removed_key_is_refused_on_its_next_message(start_node: NodeFactory, tmp_path: Path) -> None:
    import zmq

    from mesh.wire import codec
    from mesh.wire.protocol import Error, Result, Submit, decode, encode
    d = str(tmp_path / "k")
    keys.init(d)
    keys.add(d, "client", "leaked")
    node = start_node(keys=d)
    sec = Security.load(d, "client", "leaked")
    ctx: zmq.Context[Any] = zmq.Context()
    s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    sec.client(s, sec.server_keys()[0])
    s.connect(node.endpoint)

    def submit(tid: str) -> Any:
        s.send(encode(Submit(tid, "tasks_app.add", codec.dump_call((1, 2), None))))
        while s.poll(10_000):
            for f in s.recv_multipart():
                msg = decode(f)
                if isinstance(msg, (Result, Error)):
                    return msg
        raise AssertionError("no answer")
    try:
        assert isinstance(submit("before"), Result)              # the connection is made
        before = node.status()["key_reloads"]
        keys.remove(d, "client", "leaked")
        wait_until(lambda: node.status()["key_reloads"] > before, what="the node to reload")
        refused = submit("after")                                # same connection, next message
        assert isinstance(refused, Error) and refused.code == "unauthorized", refused
    finally:
        s.close(0)
        ctx.term()


def test_events_and_the_dashboard_of_a_keyed_mesh(start_node: NodeFactory, make_client: Any,
                                                  tmp_path: Path) -> None:
    from webclient import Web, all_tasks, wait_for

    from mesh.monitor.receiver import EventReceiver
    d = str(tmp_path / "k")
    keys.init(d)
    http = f"127.0.0.1:{free_port()}"
    a = start_node(keys=d, name="ka", http=http, profile="test")
    b = start_node(keys=d, name="kb", peers=a.endpoint, profile="test")
    client = make_client(a, b, keys=d)
    admin = Security.load(d, "admin")
    with EventReceiver([a.endpoint], topics=("task-",), security=admin) as recv:
        wait_until(lambda: set(recv.nodes) == {"ka", "kb"}, what="subscribed to both nodes")
        seen: set[str] = set()
        ids: set[str] = set()
        deadline = time.monotonic() + 30            # until a task of each node was seen
        while time.monotonic() < deadline and not {"ka", "kb"} <= seen:
            rs = [client.tasks.add.delay(i, i) for i in range(20)]
            assert [r.get(timeout=30) for r in rs] == [2 * i for i in range(20)]
            ids |= {r.id for r in rs}
            while (ev := recv.next_event(0.2)) is not None:
                if ev["type"] == "task-succeeded" and ev.get("uuid") in ids:
                    seen.add(ev["node"])
        assert {"ka", "kb"} <= seen                  # the admin key reads every node's events
    web = Web("http://" + http)                     # the dashboard asks kb with ka's node key
    wait_for(lambda: len(web.get("/api/workers?status=true")) == 2, what="both nodes listed")
    wait_for(lambda: ids <= {t["uuid"] for t in all_tasks(web)}, what="the mesh's history")


def test_meshnode_with_a_key_directory_that_is_not_one(tmp_path: Path) -> None:
    d, client_copy = str(tmp_path / "k"), str(tmp_path / "client-copy")
    keys.init(d)
    keys.export(d, client_copy, "client", "default")
    for where, words in ((str(tmp_path / "nowhere"), "meshctl keys init"),
                         (client_copy, "no mesh secret")):
        p = run_program(MESHNODE, "--app", "tasks_app", "--keys", where, "--no-mdns",
                        "--bind", f"tcp://127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"))
        assert p.returncode == EXIT_USAGE and words in p.stderr, p


def test_copies_and_takeover_in_a_keyed_mesh(start_node: NodeFactory, make_client: Any,
                                             tmp_path: Path) -> None:
    """The node-to-node data plane (copies to the backup, handoff) speaks CurveZMQ too:
    a keyed holder killed for good, its backup runs what it held and serves every
    result."""
    d = str(tmp_path / "k")
    keys.init(d)
    a = start_node(keys=d, name="ka", concurrency=2, profile="test")
    owner = make_client(a, keys=d)
    gate = tmp_path / "gate"
    # sent while a is alone, so that a holds them all (a client spreads its tasks over
    # the nodes it knows): its two children gated, ten queued
    held = [owner.tasks.wait_for_file.delay(str(gate)) for _ in range(2)]
    held += [owner.tasks.add.delay(i, 100) for i in range(10)]
    wait_until(lambda: a.status()["busy"] == 2, what="a running the gated tasks")
    b = start_node(keys=d, name="kb", concurrency=2, profile="test", peers=a.endpoint)
    wait_until(lambda: {m["node"] for m in a.request("members").payload  # type: ignore[union-attr]
                        if m["state"] == "alive"} == {"ka", "kb"}, what="the keyed mesh")
    # once b joins, it keeps a copy of each task a holds, or holds it itself: a sheds
    # queued tasks to b while b has room (its children are idle), over CurveZMQ too (CI)
    def on_b() -> bool:
        st = b.status()
        return st["copies_kept"] + st["taken_from_peers"] >= len(held)
    wait_until(lambda: a.status()["busy"] >= 1 and on_b(),
               what="a running the gated tasks, b keeping their copies (or holding them)")
    owner.close()                                # the submitter is gone, as in handoff tests
    a.proc.kill()                                # -9, never restarted
    a.proc.wait(10)
    gate.touch()
    reader = make_client(b, keys=d)              # another client, which submitted nothing
    got = [reader.app.AsyncResult(r.id).get(timeout=60) for r in held]
    assert got == ["opened"] * 2 + [i + 100 for i in range(10)]
    assert b.status()["taken_over"] >= 2


def test_workflows_across_a_keyed_mesh(start_node: NodeFactory, tmp_path: Path) -> None:
    """A chord's members on one node report to its coordinator on the other over the
    node-to-node plane, which speaks CurveZMQ in a keyed mesh; a client key may read a
    group's states (wf.states) from every node."""
    from mesh import Mesh, chain, chord, group, signature
    d = str(tmp_path / "k")
    keys.init(d)
    a = start_node(app="wf_app", keys=d, name="wa", concurrency=1, profile="test")
    b = start_node(app="wf_app", keys=d, name="wb", concurrency=1, profile="test",
                   peers=a.endpoint)
    wait_until(lambda: {m["node"] for m in a.request("members").payload  # type: ignore[union-attr]
                        if m["state"] == "alive"} == {"wa", "wb"}, what="the keyed mesh")
    with Mesh("wf-keyed", peers=[a.endpoint, b.endpoint], mdns=False, keys=d) as app:
        def s(*args: Any) -> Any:
            return signature("wf.add", args, app=app)
        c = chord((s(i, i) for i in range(60)), signature("wf.tsum", app=app)).apply_async()
        g = group(s(i, 1) for i in range(20)).apply_async()
        r = chain(s(1, 1), s(10), s(100)).apply_async()
        assert c.get(timeout=90) == 2 * sum(range(60))
        assert r.get(timeout=90) == 112
        assert g.get(timeout=90) == [i + 1 for i in range(20)]
        assert g.ready() and g.completed_count() == 20        # wf.states, as a client key
    assert a.status()["succeeded"] > 0 and b.status()["succeeded"] > 0   # both ran members
    # every member's report reached its coordinator: it never had to ask where they were
    assert a.status()["workflow_pull_rounds"] == b.status()["workflow_pull_rounds"] == 0
