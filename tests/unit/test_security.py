"""mesh/security's pure parts: the key directory, the gate's allow-list, the exposure
rule, log escaping, and unguessable task ids."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import zmq

from mesh.app import new_task_id
from mesh.config import Config
from mesh.exceptions import ConfigError
from mesh.membership.swim import MESSAGE_TYPES
from mesh.node.commands import registry
from mesh.security import gate, keys
from mesh.security.curve import Security
from mesh.security.exposure import is_loopback, refusal
from mesh.security.keys import ADMIN, CLIENT, NODE, KeyRing
from mesh.security.text import printable
from mesh.wire import protocol
from mesh.wire.protocol import Control, Gossip, Submit


@pytest.fixture
def kdir(tmp_path: Path) -> str:
    d = str(tmp_path / "keys")
    keys.init(d)
    return d


# ---- the key directory ------------------------------------------------------------------

def test_init_makes_private_pairs_for_each_role(kdir: str) -> None:
    assert stat.S_IMODE(os.stat(kdir).st_mode) == 0o700
    for root, dirs, files in os.walk(kdir):
        for d in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o700
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600
    found = {(k.role, k.name, k.secret is not None) for k in keys.scan(kdir)}
    assert found == {(NODE, "mesh", True), (CLIENT, "default", True), (ADMIN, "operator", True)}
    with pytest.raises(ConfigError, match="already holds a mesh key"):
        keys.init(kdir)


def test_a_process_uses_the_pair_of_what_it_is(kdir: str) -> None:
    assert KeyRing(kdir, NODE).identity.role == NODE
    assert KeyRing(kdir, CLIENT).identity.name == "default"
    assert KeyRing(kdir, ADMIN).identity.name == "operator"
    assert KeyRing(kdir, CLIENT, "operator").identity.role == ADMIN
    assert KeyRing(kdir, CLIENT, "mesh").identity.role == NODE      # the node's own client
    ring = KeyRing(kdir, CLIENT)
    assert ring.server is not None and ring.server_keys == (ring.server.public,)
    assert {ring.role_of(k.public.decode()) for k in keys.scan(kdir)} == {NODE, CLIENT, ADMIN}
    assert ring.role_of(zmq.curve_keypair()[0].decode()) is None


def test_several_pairs_of_a_role_need_a_name(kdir: str) -> None:
    keys.add(kdir, CLIENT, "billing")
    assert KeyRing(kdir, CLIENT).identity.name == "default"        # the default is preferred
    assert KeyRing(kdir, CLIENT, "billing").identity.name == "billing"
    keys.remove(kdir, CLIENT, "default")
    keys.add(kdir, CLIENT, "other")
    with pytest.raises(ConfigError, match="several client key pairs"):
        KeyRing(kdir, CLIENT)


def test_clear_errors_for_what_is_not_a_key_directory(tmp_path: Path, kdir: str) -> None:
    with pytest.raises(ConfigError, match="meshctl keys init"):
        KeyRing(str(tmp_path / "nowhere"), CLIENT)
    out = str(tmp_path / "app-keys")
    keys.export(kdir, out, CLIENT, "default")
    with pytest.raises(ConfigError, match="no mesh secret"):
        KeyRing(out, NODE)                               # a client's copy cannot be a node
    secret = os.path.join(kdir, "client", "default.key_secret")
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyRing(kdir, CLIENT)
    with pytest.raises(ConfigError, match="client or admin"):
        keys.add(kdir, NODE, "x")
    with pytest.raises(ConfigError, match="key name"):
        keys.add(kdir, CLIENT, "../x")


def test_export_gives_a_client_no_secret_but_its_own(kdir: str, tmp_path: Path) -> None:
    out = str(tmp_path / "app-keys")
    got = keys.export(kdir, out, CLIENT, "default")
    assert {(k.role, k.name, k.secret is not None) for k in got} == {
        (NODE, "mesh", False), (CLIENT, "default", True)}
    node = str(tmp_path / "node-keys")
    got = keys.export(kdir, node, NODE)
    assert {(k.role, k.name, k.secret is not None) for k in got} == {
        (NODE, "mesh", True), (CLIENT, "default", False), (ADMIN, "operator", False)}


def test_reload_sees_keys_added_and_removed(kdir: str) -> None:
    ring = KeyRing(kdir, NODE)
    assert ring.reload() is False
    k = keys.add(kdir, CLIENT, "billing")
    assert ring.reload() is True and ring.role_of(k.public.decode()) == CLIENT
    keys.remove(kdir, CLIENT, "billing")
    assert ring.reload() is True and ring.role_of(k.public.decode()) is None


def test_rotation_steps(kdir: str) -> None:
    ring = KeyRing(kdir, NODE)
    first = ring.identity.public
    keys.rotate(kdir, "begin")
    ring.reload()
    nxt = ring.server_keys[1]
    assert ring.server_keys[0] == first and ring.identity.public == first
    assert ring.role_of(nxt.decode()) == NODE                  # accepted before it is used
    with pytest.raises(ConfigError, match="under way"):
        keys.rotate(kdir, "begin")
    keys.rotate(kdir, "commit")
    ring.reload()
    assert ring.identity.public == nxt and ring.server_keys == (nxt, first)
    assert ring.role_of(first.decode()) == NODE                # the old one still accepted
    assert not os.path.exists(os.path.join(kdir, "mesh-old.key_secret"))
    keys.rotate(kdir, "finish")
    ring.reload()
    assert ring.server_keys == (nxt,) and ring.role_of(first.decode()) is None
    with pytest.raises(ConfigError, match="no rotation"):
        keys.rotate(kdir, "finish")


def test_a_node_looks_for_the_commit_often_while_a_rotation_is_begun(kdir: str) -> None:
    # the node's reload loop waits reload_interval(ring) between looks: on the 2 s clock
    # two nodes switched to the committed key up to 2 s apart and one declared the other
    # dead (test_e2e_keys.py's rotation test, seen in CI)
    from mesh.node.keys import RELOAD_INTERVAL, ROTATING_INTERVAL, reload_interval
    ring = KeyRing(kdir, NODE)
    assert not ring.rotating and reload_interval(ring) == RELOAD_INTERVAL
    keys.rotate(kdir, "begin")
    ring.reload()
    assert ring.rotating and reload_interval(ring) == ROTATING_INTERVAL < 0.5
    keys.rotate(kdir, "commit")
    ring.reload()
    assert not ring.rotating and reload_interval(ring) == RELOAD_INTERVAL


def test_security_without_keys_changes_no_socket() -> None:
    sec = Security(None)
    assert not sec.enabled and sec.server_keys() == [None] and sec.role("x") is None
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    sec.client(s, None)
    sec.server(s)
    assert s.getsockopt(zmq.MECHANISM) == zmq.NULL
    s.close(0)
    ctx.term()


# ---- the gate -----------------------------------------------------------------------------

def _kind(name: str) -> str | None:
    cmd = registry.get(name)
    return cmd.kind if cmd is not None else None


@pytest.mark.parametrize("role,msg,allowed", [
    (CLIENT, Submit("t", "x", b"\x92\x90\x80"), True),
    (CLIENT, Control("r", "members"), True),
    (CLIENT, Control("r", "result", {"task_id": "t"}), True),
    (CLIENT, Control("r", "ping"), True),
    (CLIENT, Control("r", "duplicate", {"task_id": "t"}), True),
    (CLIENT, Control("r", "status"), False),
    (CLIENT, Control("r", "active"), False),
    (CLIENT, Control("r", "revoke", {"task_ids": ["t"]}), False),
    (CLIENT, Control("r", "shutdown"), False),
    (CLIENT, Control("r", "purge"), False),             # (Celery's purge: an admin's)
    (ADMIN, Control("r", "purge", {"queues": ["q"]}), True),
    (CLIENT, Control("r", "pool_grow", {"n": 1}), False),
    (CLIENT, Control("r", "no-such-command"), False),
    (CLIENT, Gossip("n", []), False),
    (ADMIN, Control("r", "shutdown"), True),
    (ADMIN, Control("r", "status"), True),
    (ADMIN, Gossip("n", []), False),
    (NODE, Gossip("n", []), True),
    (NODE, Control("r", "revoke", {"task_ids": ["t"]}), True),
    (NODE, Submit("t", "x", b"\x92\x90\x80"), True),
    (None, Submit("t", "x", b"\x92\x90\x80"), False),     # a key removed meanwhile
])
def test_the_gate(role: str | None, msg: object, allowed: bool) -> None:
    assert (gate.refusal(role, msg, _kind) is None) is allowed


def test_the_commands_that_change_a_node_are_not_a_clients() -> None:
    import mesh.node.remote  # noqa: F401  (registers mesh's commands, purge among them)
    for name in ("revoke", "purge", "shutdown", "forget"):
        assert _kind(name) == "control", name


def test_every_message_type_is_node_only_unless_listed() -> None:
    # a type added later (handoff, replicas...) is for nodes unless someone says otherwise
    listed = set(gate.MESSAGES)
    assert listed == {Submit, Control}
    for cls in MESSAGE_TYPES:
        assert gate.MESSAGES.get(cls, gate.NODES) == gate.NODES
    node_to_client = [c for c in vars(protocol).values() if isinstance(c, type)
                      and c.__module__ == protocol.__name__ and c.__name__ in ("Ack", "Result", "Release")]
    for cls in node_to_client:
        assert gate.MESSAGES.get(cls, gate.NODES) == gate.NODES


# ---- exposure without keys ---------------------------------------------------------------

@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.9.9.9", True), ("localhost", True),
                                       ("[::1]", True), ("0.0.0.0", False), ("*", False),
                                       ("10.0.0.5", False), ("example.com", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_a_node_without_keys_stays_on_loopback() -> None:
    env: dict[str, str] = {}
    assert refusal(Config.build(env)) is None                       # the default: loopback
    why = refusal(Config.build(env, bind="tcp://0.0.0.0:7700"))
    assert why is not None and "meshctl keys init" in why and "--insecure" in why
    assert refusal(Config.build(env, bind="tcp://0.0.0.0:7700", insecure=True)) is None
    assert refusal(Config.build(env, bind="tcp://0.0.0.0:7700", keys="/k")) is None
    assert refusal(Config.build(env, advertise="tcp://10.0.0.5:7700")) is not None
    assert refusal(Config.build(env, mdns_interfaces="10.0.0.5")) is not None
    assert refusal(Config.build(env, mdns_interfaces="10.0.0.5", mdns=False)) is None


# ---- text from peers, task ids -----------------------------------------------------------

def test_printable() -> None:
    assert printable("node-a") == "node-a"
    assert printable("evil\n[ERROR] forged") == "evil\\n[ERROR] forged"
    assert "\x1b" not in printable("\x1b[2Jcleared")
    assert len(printable("x" * 1000)) == 120


def test_task_ids_are_80_random_bits_after_the_time_and_unrelated() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_task_id() for _ in range(20_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for tid in ids[:100]:
        parts = tid.split("-")
        assert [len(p) for p in parts] == [8, 4, 4, 4, 12]
        int(tid.replace("-", ""), 16)
    # the first 12 digits are the time in ms: ids sort in the order they were made
    stamps = [int(t.replace("-", "")[:12], 16) for t in ids]
    assert before <= stamps[0] and stamps[-1] <= after
    assert stamps == sorted(stamps)
    # the other 80 bits share nothing beyond chance: no per-process prefix, no counter
    tails = [t.replace("-", "")[12:] for t in ids]
    assert sum(a[:8] == b[:8] for a, b in zip(tails, tails[1:])) == 0
    digits = [int(t[i], 16) for t in tails[:4000] for i in (0, 4, 19)]
    assert len(set(digits)) == 16                       # no fixed version/variant nibble


def test_a_forked_child_never_hands_out_its_parents_ids() -> None:
    new_task_id()                                       # the parent has a batch in hand
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, new_task_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 100).decode()
    os.close(r)
    os.close(w)
    assert child not in {new_task_id() for _ in range(300)}
