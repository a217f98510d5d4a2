"""Several hosts on one machine: a cluster of Linux network namespaces for the cluster tests.

A :class:`Cluster` of n hosts is a bridge namespace (``br0``) plus one namespace per host,
each joined to the bridge by a veth pair (``veth0`` in the host, ``v-<host>`` on the
bridge), with an address in a /24 picked for this cluster (``10.200-255.x.0/24``, checked
against every address already in use on the machine), ``lo`` up and a multicast route
(224.0.0.0/4 on veth0) so that mDNS crosses the bridge. See ../shared/NETNS.md.

Everything is named ``meshc-<pid>-<token>-<k>-<host>``: unique per test run and per
cluster, and recognisable later, so a namespace left behind by a run that was SIGKILLed
is swept by the next run (:func:`sweep_stale`). ``MESH_TEST_NETNS_PREFIX=NAME-`` puts
NAME- in front of every name (several people sharing one machine: each run sweeps only
the stale namespaces under its own prefix).

Each host has an *agent*: a long-lived Python process inside its namespace that executes
snippets sent over a pipe and answers in JSON (``host.run_python(code)``; about 1 ms a
call). The root namespace cannot reach the hosts' addresses, so every probe (ping,
status, clients submitting tasks) runs through an agent.

Example::

    with Cluster(3) as cl:
        a, b, c = cl.hosts
        cl.start_nodes(peers=True)                 # a real meshnode on each host, --peers the others
        a.meshctl_json("--peers", cl.peers(), "status")
        a.run_tasks(cl.endpoints(), [("tasks_app.add", [2, 3], {})])
        c.cut(); ...; c.restore()
        cl.partition(a, b); ...; cl.heal(a, b)

Teardown (``close``) always runs everything it can and only then reports errors: agents
closed, nodes stopped (SIGTERM, then SIGKILL, then their leftover children), every
process still inside a namespace killed, the namespaces deleted. An atexit hook sweeps
this run's namespaces once more; processes started here also get SIGKILL from the
kernel if the test process dies (PR_SET_PDEATHSIG), so even ``kill -9`` of pytest leaves
nothing running, and only stale namespace names that the next run removes.
"""
from __future__ import annotations

import atexit
import ipaddress
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psutil
from harness import MESHCTL, MESHNODE, ROOT, NodeProc, _flag_args, clean_env, wait_until

from mesh.wire.protocol import ControlReply

CLUSTER_DIR = Path(__file__).resolve().parent
PREFIX = os.environ.get("MESH_TEST_NETNS_PREFIX", "") + "meshc-"   # every cluster namespace starts so
RUN_PREFIX = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}-"   # ... and this run's like this
_STALE_RE = re.compile(rf"^{re.escape(PREFIX)}(\d+)-[0-9a-f]+-")

DEFAULT_PORT = 7700
READY_TIMEOUT = 30.0      # s for a node to answer its first ping (2 shared cores: be generous)
STOP_GRACE = 5.0          # s for a node to exit after SIGTERM at teardown before SIGKILL
AGENT_TIMEOUT = 30.0      # s for one agent call unless told otherwise


def _which(name: str) -> str | None:
    """A system program, also where PATH lacks the sbin directories."""
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}")
                                       if os.access(p, os.X_OK)), None)


IP = _which("ip") or "/usr/sbin/ip"
IPTABLES = _which("iptables")
SETPRIV = _which("setpriv")      # util-linux: --pdeathsig for the nodes

_HOST_NAMES = "abcdefghijklmnopqrstuvwxyz"


class ClusterError(RuntimeError):
    """A namespace command failed, or teardown could not clean everything."""


# ---- running commands -----------------------------------------------------------------

def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise ClusterError(f"command failed ({proc.returncode}): {' '.join(argv)}\n"
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def list_namespaces() -> list[str]:
    """Names from ``ip netns list`` (all of them, not only ours)."""
    out = _run([IP, "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    out = _run([IP, "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _kill_pids(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL these processes and wait for them; the ones still there after ``timeout``."""
    procs = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            p = psutil.Process(pid)
            p.kill()
            procs.append(p)
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive]


def destroy_namespaces(names: Iterable[str]) -> list[str]:
    """Kill every process inside each namespace, then delete it. Errors, as text."""
    errors = []
    names = list(names)
    stuck = _kill_pids([pid for ns in names for pid in namespace_pids(ns)])
    if stuck:
        errors.append(f"processes would not die: {stuck}")
    for ns in names:
        proc = _run([IP, "netns", "del", ns], check=False)
        if proc.returncode != 0 and ns in list_namespaces():
            errors.append(f"ip netns del {ns}: {proc.stderr.strip()}")
    return errors


_made_any: list[bool] = []      # set once this process has created a namespace


def sweep_run(prefix: str = RUN_PREFIX) -> list[str]:
    """Destroy every namespace whose name starts with ``prefix`` (default: this run's)."""
    if prefix == RUN_PREFIX and not _made_any:
        return []
    return destroy_namespaces(ns for ns in list_namespaces() if ns.startswith(prefix))


def sweep_stale() -> list[str]:
    """Destroy cluster namespaces left by test runs whose process is gone (a pytest that
    was SIGKILLed could not clean up). Namespaces of runs still alive are left alone."""
    stale = []
    for ns in list_namespaces():
        m = _STALE_RE.match(ns)
        if m and not psutil.pid_exists(int(m.group(1))):
            stale.append(ns)
    return destroy_namespaces(stale) if stale else []


def _atexit_sweep() -> None:
    try:
        sweep_run()
    except Exception:     # noqa: BLE001, S110  (never let an exit hook raise)
        pass


atexit.register(_atexit_sweep)


# ---- can we? ---------------------------------------------------------------------------

_unavailable: list[str | None] = []


def unavailable_reason() -> str | None:
    """Why cluster tests cannot run here (None when they can). Tries once to create a
    namespace, since root alone does not guarantee CAP_SYS_ADMIN (containers)."""
    if _unavailable:
        return _unavailable[0]
    reason: str | None = None
    if not sys.platform.startswith("linux"):
        reason = "cluster tests need Linux network namespaces"
    elif os.geteuid() != 0:
        reason = f"cluster tests need root for network namespaces (running as uid {os.geteuid()})"
    elif not os.path.exists(IP):
        reason = "cluster tests need iproute2's 'ip' (scripts/setup.sh installs it as root)"
    else:
        probe = f"{RUN_PREFIX}probe"
        _made_any.append(True)
        proc = _run([IP, "netns", "add", probe], check=False)
        if proc.returncode != 0:
            reason = f"cannot create a network namespace (no CAP_SYS_ADMIN?): {proc.stderr.strip()}"
        else:
            check = _run([IP, "netns", "exec", probe, IP, "link", "set", "lo", "up"], check=False)
            if check.returncode != 0:
                reason = f"cannot run commands in a network namespace: {check.stderr.strip()}"
            _run([IP, "netns", "del", probe], check=False)
    _unavailable.append(reason)
    return reason


def iptables_missing_reason() -> str | None:
    if IPTABLES is None:
        return "iptables is not installed (scripts/setup.sh installs it when run as root)"
    return None


def _skip_without_iptables() -> None:
    reason = iptables_missing_reason()
    if reason:
        import pytest
        pytest.skip(reason)


# ---- addresses --------------------------------------------------------------------------

def _addresses_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network configured in the root namespace and in every named namespace."""
    nets = []
    outs = [_run([IP, "-4", "-o", "addr"], check=False).stdout]
    outs += [_run([IP, "-n", ns, "-4", "-o", "addr"], check=False).stdout for ns in list_namespaces()]
    for out in outs:
        for m in re.finditer(r"\binet (\d+\.\d+\.\d+\.\d+/\d+)", out):
            nets.append(ipaddress.IPv4Interface(m.group(1)).network)
    return nets


def pick_subnet(rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0-10.255.255.0 overlapping nothing configured on this machine."""
    rng = rng or random.Random(os.getpid() ^ secrets.randbits(32))
    used = _addresses_in_use()
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randrange(200, 256)}.{rng.randrange(0, 256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise ClusterError("no free /24 in 10.200.0.0/8..10.255.255.0/24")


# ---- the agent: a Python process inside a namespace -----------------------------------

AGENT_SOURCE = r'''
import ast, ctypes, json, os, signal, sys, time, traceback
try:     # die with the test process, even when it is SIGKILLed
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
_proto = os.fdopen(os.dup(1), "w", buffering=1)   # replies go here; prints go to stderr
os.dup2(2, 1)

from mesh.client.control import ControlClient
from mesh.wire.protocol import ControlReply
_cc = ControlClient()
_clients = {}

def client(peers, fresh=False):
    """A client app (mdns off) with these seeds, kept for later calls (a new one if fresh)."""
    key = tuple(peers)
    if fresh and key in _clients:
        _clients.pop(key).close()
    if key not in _clients:
        from mesh import Mesh
        _clients[key] = Mesh("cluster-client", peers=list(peers), mdns=False)
    return _clients[key]

def control(endpoints, command, timeout=2.0, args=None):
    out = {}
    for ep, r in _cc.broadcast(endpoints, command, args, timeout).items():
        if isinstance(r, ControlReply):
            out[ep] = {"ok": r.ok, "node": r.node, "payload": r.payload, "error": r.error}
        else:
            out[ep] = {"ok": False, "node": None, "payload": None, "error": r}
    return out

def ping(endpoint, timeout=0.25):
    return control([endpoint], "ping", timeout)[endpoint]["ok"]

def run_tasks(peers, calls, timeout=30.0, fresh=False):
    c = client(peers, fresh)
    rs = [c.send_task(name, args=args, kwargs=kwargs) for name, args, kwargs in calls]
    deadline = time.monotonic() + timeout
    out = []
    for r in rs:
        try:
            value = r.get(timeout=max(0.01, deadline - time.monotonic()))
            out.append({"ok": True, "value": value, "id": r.id, "state": r.state, "node": r.node})
        except Exception as e:
            out.append({"ok": False, "error": f"{type(e).__name__}: {e}", "id": r.id,
                        "state": r.state, "node": r.node})
    return out

def _close():
    for c in _clients.values():
        try:
            c.close()
        except Exception:
            pass
    _cc.close()

_env = {"__name__": "__agent__", "client": client, "control": control, "ping": ping,
        "run_tasks": run_tasks}

def _answer(req):
    tree = ast.parse(req["code"], "<run_python>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<run_python>", "exec"), _env)
    return eval(compile(last, "<run_python>", "eval"), _env) if last is not None else None

_proto.write(json.dumps({"id": 0, "ok": True, "value": "ready"}) + "\n")
while True:
    line = sys.stdin.readline()
    if not line:
        break
    req = json.loads(line)
    try:
        reply = {"id": req["id"], "ok": True, "value": _answer(req)}
        text = json.dumps(reply, default=repr)
    except BaseException as e:
        text = json.dumps({"id": req["id"], "ok": False, "type": type(e).__name__,
                           "error": traceback.format_exc()})
    _proto.write(text + "\n")
_close()
_proto.close()
os._exit(0)
'''


class AgentError(ClusterError):
    """The snippet raised (``.type`` is its exception type), or the agent died."""

    def __init__(self, message: str, type_name: str = ""):
        super().__init__(message)
        self.type = type_name


class Agent:
    """One Python process inside a host's namespace, executing snippets sent over a pipe."""

    def __init__(self, host: Host):
        self.host = host
        self.stderr_path = host.cluster.base_dir / f"agent-{host.name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._ready = False
        self._next_id = 1
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the process (without waiting for it to be ready)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self._discard()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [IP, "netns", "exec", self.host.ns, sys.executable, "-c", AGENT_SOURCE, str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
                env=self.host.cluster.env, start_new_session=True)
        self._buf, self._ready = b"", False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _readline(self, deadline: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise AgentError(f"agent on host {self.host.name} died (rc={self.proc.poll()}); "
                                     f"its stderr:\n{self.stderr_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, code: str, timeout: float = AGENT_TIMEOUT) -> Any:
        """Run ``code`` in the agent; the value of its last line if that is an expression.
        On a timeout the agent is killed (it is stuck) and restarted by the next call."""
        with self._lock:
            deadline = time.monotonic() + timeout
            self.start()
            assert self.proc is not None and self.proc.stdin is not None
            try:
                if not self._ready:
                    self._readline(deadline)
                    self._ready = True
                req_id = self._next_id
                self._next_id += 1
                self.proc.stdin.write(json.dumps({"id": req_id, "code": code}).encode() + b"\n")
                self.proc.stdin.flush()
                while True:
                    reply = self._readline(deadline)
                    if reply.get("id") == req_id:
                        break
            except TimeoutError:
                self.kill()
                raise TimeoutError(f"agent on host {self.host.name}: no answer within {timeout:g} s "
                                   f"(agent killed); code:\n{code}") from None
            except (BrokenPipeError, OSError) as e:
                self.kill()
                raise AgentError(f"agent on host {self.host.name} is gone ({e}); its stderr:\n"
                                 f"{self.stderr_tail()}") from None
        if not reply["ok"]:
            raise AgentError(f"on host {self.host.name}:\n{reply['error']}", reply.get("type", ""))
        return reply["value"]

    def close(self, timeout: float = 5.0) -> None:
        """Ask the agent to exit (it closes its clients first), SIGKILL it if it does not."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.close()
                self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._discard()

    def _discard(self) -> None:
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    if f is not None:
                        f.close()
                except OSError:
                    pass
        self._ready = False


# ---- nodes --------------------------------------------------------------------------------

class ClusterNode(NodeProc):
    """A ``meshnode`` running in a host's namespace. Control requests go through an agent:
    the node's own host by default (which reaches it over lo even when the host is cut),
    or ``via=`` another host to test the network between them."""

    def __init__(self, host: Host, name: str, endpoint: str, proc: subprocess.Popen[bytes],
                 stderr_path: Path, data_dir: Path):
        super().__init__(name, endpoint, proc, stderr_path, data_dir, None)  # type: ignore[arg-type]
        self.host = host

    def __repr__(self) -> str:
        return (f"<ClusterNode {self.name} on {self.host.name} {self.endpoint} pid={self.proc.pid} "
                f"rc={self.proc.returncode}>")

    def request(self, command: str, timeout: float = 5.0, via: Host | None = None) -> ControlReply | str:
        r = (via or self.host).control([self.endpoint], command, timeout)[self.endpoint]
        if r["node"] is None:
            return str(r["error"])
        return ControlReply("", r["ok"], r["node"], r["payload"], r["error"])

    def ping(self, timeout: float = 0.25, via: Host | None = None) -> bool:
        return (via or self.host).ping(self.endpoint, timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) to the node, without waiting."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> ClusterNode:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"meshnode {self.name} on host {self.host.name} exited with code {rc} "
                                     f"before it was ready; its stderr:\n{self.stderr_tail()}")
            if self.ping(timeout=0.25):
                return self
            if time.monotonic() >= deadline:
                raise AssertionError(f"meshnode {self.name} on host {self.host.name} did not answer a ping "
                                     f"within {timeout:g} s; its stderr:\n{self.stderr_tail()}")


# ---- hosts --------------------------------------------------------------------------------

class Host:
    """One host: a namespace with an address on the cluster's bridge."""

    def __init__(self, cluster: Cluster, index: int):
        self.cluster = cluster
        self.index = index
        self.name = _HOST_NAMES[index] if index < len(_HOST_NAMES) else f"h{index}"
        self.ns = f"{cluster.prefix}{self.name}"
        self.ip = str(cluster.subnet.network_address + index + 1)
        self.port = DEFAULT_PORT
        self.endpoint = f"tcp://{self.ip}:{self.port}"    # where start_node binds by default
        self.bridge_port = f"v-{self.name}"               # the veth end on the bridge
        self.nodes: list[ClusterNode] = []
        self.agent = Agent(self)
        self._rules: set[tuple[str, ...]] = set()         # iptables rules we inserted here
        self._link_down = False

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ns} {self.ip}>"

    # -- commands in the namespace ---------------------------------------------------------
    def exec(self, *argv: str, check: bool = False, timeout: float = 30.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a program in this host's namespace to completion (output captured)."""
        return _run([IP, "netns", "exec", self.ns, *argv], check=check, timeout=timeout,
                    env=self.cluster.env if env is None else env)

    def meshctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """``meshctl ARGS`` run on this host."""
        return self.exec(MESHCTL, *args, timeout=timeout)

    def meshctl_json(self, *args: str, timeout: float = 30.0) -> Any:
        """``meshctl --json ARGS`` on this host; its output parsed (fails on a non-zero exit)."""
        proc = self.meshctl("--json", *args, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"meshctl {' '.join(args)} on host {self.name} exited {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return json.loads(proc.stdout)

    def run_python(self, code: str, timeout: float = AGENT_TIMEOUT) -> Any:
        """Execute ``code`` in this host's agent (state persists between calls); the value of
        the last line when it is an expression, JSON-converted. Predefined: ``client(peers)``,
        ``control(endpoints, command, timeout)``, ``ping(endpoint, timeout)``,
        ``run_tasks(peers, calls, timeout)``."""
        return self.agent.call(code, timeout)

    def control(self, endpoints: Sequence[str], command: str, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
        """A control command from this host: endpoint -> {ok, node, payload, error}."""
        value: dict[str, dict[str, Any]] = self.run_python(
            f"control({list(endpoints)!r}, {command!r}, {timeout!r})", timeout=timeout + 10)
        return value

    def ping(self, target: str | ClusterNode | Host, timeout: float = 0.25) -> bool:
        """Whether a control ping from this host to ``target`` (endpoint, node or host) is answered."""
        ep = target if isinstance(target, str) else target.endpoint
        return bool(self.run_python(f"ping({ep!r}, {timeout!r})", timeout=timeout + 10))

    def run_tasks(self, peers: Sequence[str], calls: Sequence[tuple[str, Sequence[Any], dict[str, Any]]],
                  timeout: float = 30.0, fresh: bool = False) -> list[dict[str, Any]]:
        """Submit ``(task_name, args, kwargs)`` calls from a client on this host whose seeds
        are ``peers`` (the same client as last time for the same peers, unless ``fresh``),
        and wait for them; one dict per call: {ok, value or error, id, state, node}, where
        node is the node that ran it."""
        calls_arg = [[n, list(a), dict(k)] for n, a, k in calls]
        value: list[dict[str, Any]] = self.run_python(
            f"run_tasks({list(peers)!r}, {calls_arg!r}, {timeout!r}, {fresh!r})", timeout=timeout + 15)
        return value

    # -- nodes -------------------------------------------------------------------------------
    def spawn_node(self, *, port: int | None = None, name: str | None = None, app: str = "tasks_app",
                   concurrency: int = 1, peers: Sequence[str] | str | None = None, mdns: bool = False,
                   data_dir: Path | str | None = None, **flags: Any) -> ClusterNode:
        """Start ``meshnode`` here without waiting for it to answer (see :meth:`start_node`)."""
        port = self.port if port is None else port
        name = name or self.name
        endpoint = f"tcp://{self.ip}:{port}"
        # a node restarted with the same name and port gets the same data dir (its journal)
        # and a new stderr file (the old one stays for the report)
        stderr_path = self.cluster.base_dir / f"{self.name}-{name}-{port}-{len(self.nodes)}.stderr"
        data_dir = Path(data_dir) if data_dir is not None else self.cluster.base_dir / f"{self.name}-{name}-{port}.data"
        if peers is not None and not isinstance(peers, str):
            peers = ",".join(peers)
        argv = [MESHNODE, "--app", app, "--bind", endpoint, "--name", name,
                "--concurrency", str(concurrency), "--data-dir", str(data_dir)]
        if peers:
            argv += ["--peers", peers]
        if not mdns:
            argv.append("--no-mdns")
        if "keys" not in flags and not self.cluster.env.get("MESH_KEYS"):
            # a real address beyond loopback: without keys a node needs --insecure
            # (docs/security.md); keyed clusters set MESH_KEYS in the cluster's env
            flags = {**flags, "insecure": True}
        argv += _flag_args(flags)
        # setpriv: the node gets SIGKILL if the test process dies (this thread, in fact:
        # start nodes from the thread that lives as long as they should)
        prefix = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen([IP, "netns", "exec", self.ns, *prefix, *argv],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=ROOT,
                                    env=self.cluster.env, start_new_session=True)
        node = ClusterNode(self, name, endpoint, proc, stderr_path, data_dir)
        self.nodes.append(node)
        return node

    def start_node(self, *, ready_timeout: float = READY_TIMEOUT, **flags: Any) -> ClusterNode:
        """Start the real ``meshnode`` in this namespace, bound to this host's address (port
        7700 unless ``port=``), and return it once it answers a ping from this host.
        ``name`` defaults to the host's name, ``concurrency`` to 1; mDNS is off unless
        ``mdns=True``; ``peers`` is a list of endpoints; the data dir is the same for the
        same name and port (so a restart finds its journal) unless ``data_dir=``; other
        keywords become flags (``time_limit=1`` is ``--time-limit 1``).

        The node gets SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG, so
        that nothing outlives a killed test run): start nodes from the test's own thread."""
        return self.spawn_node(**flags).wait_ready(ready_timeout)

    @property
    def node(self) -> ClusterNode:
        """The node started last on this host."""
        if not self.nodes:
            raise AssertionError(f"no node was started on host {self.name}")
        return self.nodes[-1]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to this host's node (the one started last)."""
        self.node.kill(sig)

    # -- network faults ----------------------------------------------------------------------
    def iptables(self, *args: str) -> None:
        _skip_without_iptables()
        assert IPTABLES is not None
        _run([IP, "netns", "exec", self.ns, IPTABLES, "-w", *args])

    def _insert(self, rule: tuple[str, ...]) -> None:
        if rule not in self._rules:
            self.iptables("-I", *rule)
            self._rules.add(rule)

    def _delete(self, rule: tuple[str, ...]) -> None:
        if rule in self._rules:
            self.iptables("-D", *rule)
            self._rules.discard(rule)

    _CUT_RULES = (("INPUT", "!", "-i", "lo", "-j", "DROP"), ("OUTPUT", "!", "-o", "lo", "-j", "DROP"))

    def cut(self, method: str = "iptables") -> None:
        """Cut this host off the network. ``iptables``: DROP everything not on lo, in and
        out (as a host firewall would; local sends may fail with EPERM); ``link``: the
        bridge side of its veth down (the host sees no carrier); ``bridge``: the bridge
        drops its frames both ways (the host notices nothing: a silent black hole)."""
        if method == "iptables":
            for rule in self._CUT_RULES:
                self._insert(rule)
        elif method == "link":
            _run([IP, "-n", self.cluster.bridge_ns, "link", "set", self.bridge_port, "down"])
            self._link_down = True
        elif method == "bridge":
            for direction in ("--physdev-in", "--physdev-out"):
                self.cluster._bridge_insert(("FORWARD", "-m", "physdev", direction, self.bridge_port,
                                             "-j", "DROP"))
        else:
            raise ValueError(f"unknown cut method {method!r} (iptables, link, bridge)")

    def restore(self) -> None:
        """Undo :meth:`cut`, whichever way it was made (loss rules stay)."""
        for rule in self._CUT_RULES:
            self._delete(rule)
        if self._link_down:
            _run([IP, "-n", self.cluster.bridge_ns, "link", "set", self.bridge_port, "up"])
            self._link_down = False
        for direction in ("--physdev-in", "--physdev-out"):
            self.cluster._bridge_delete(("FORWARD", "-m", "physdev", direction, self.bridge_port,
                                         "-j", "DROP"))

    def loss(self, probability: float, direction: str = "in") -> None:
        """Drop each packet on veth0 at random with ``probability`` (``in``, ``out`` or ``both``)."""
        self.clear_loss()
        p = f"{probability:.4f}"
        if direction in ("in", "both"):
            self._insert(("INPUT", "-i", "veth0", "-m", "statistic", "--mode", "random",
                          "--probability", p, "-j", "DROP"))
        if direction in ("out", "both"):
            self._insert(("OUTPUT", "-o", "veth0", "-m", "statistic", "--mode", "random",
                          "--probability", p, "-j", "DROP"))
        if direction not in ("in", "out", "both"):
            raise ValueError(f"direction must be in, out or both, not {direction!r}")

    def clear_loss(self) -> None:
        for rule in [r for r in self._rules if "statistic" in r]:
            self._delete(rule)


# ---- the cluster ------------------------------------------------------------------------

_cluster_counter = iter(range(1, 1 << 30))
_open_clusters: list[Cluster] = []
_saved_sigterm: list[Any] = []


def _sigterm_to_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")      # so that finalizers run and namespaces go


class Cluster:
    """n hosts on one bridge. Use as a context manager (or call open/close)."""

    def __init__(self, n: int = 3, *, base_dir: Path | str | None = None, start_agents: bool = True):
        if not 1 <= n <= 250:
            raise ValueError("a cluster has 1 to 250 hosts")
        self.n = n
        self.prefix = f"{RUN_PREFIX}{next(_cluster_counter)}-"
        self.bridge_ns = f"{self.prefix}br"
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="meshc-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.start_agents = start_agents
        self.env = clean_env()
        # the loopback suite pins mDNS to 127.0.0.1; here each host has its own isolated
        # network, so nodes use mDNS on their bind address (and clients on all interfaces)
        self.env.pop("MESH_MDNS_INTERFACES", None)
        self.env["PYTHONPATH"] = os.pathsep.join([str(CLUSTER_DIR), self.env["PYTHONPATH"]])
        self.subnet = ipaddress.IPv4Network("10.200.0.0/24")      # picked in open()
        self.hosts: list[Host] = []
        self.timings: dict[str, float] = {}
        self._bridge_rules: set[tuple[str, ...]] = set()
        self._created: list[str] = []     # namespaces made, in order
        self._opened = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<Cluster {self.prefix}* {self.subnet} hosts={[h.name for h in self.hosts]}>"

    def __enter__(self) -> Cluster:  # noqa: PYI034
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    # -- setup -------------------------------------------------------------------------------
    def open(self) -> Cluster:
        if self._opened:
            return self
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        self._opened = True
        _open_clusters.append(self)
        if (threading.current_thread() is threading.main_thread() and not _saved_sigterm
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            _saved_sigterm.append(signal.signal(signal.SIGTERM, _sigterm_to_interrupt))
        try:
            t0 = time.monotonic()
            existing = set(list_namespaces())
            self.subnet = pick_subnet()
            self.hosts = [Host(self, i) for i in range(self.n)]
            clash = existing & {self.bridge_ns, *(h.ns for h in self.hosts)}
            if clash:
                raise ClusterError(f"namespaces already exist: {sorted(clash)}")
            self._setup_network()
            self.timings["netns_setup"] = time.monotonic() - t0
            if self.start_agents:
                t0 = time.monotonic()
                for h in self.hosts:
                    h.agent.start()
                for h in self.hosts:
                    h.run_python("None")
                self.timings["agents_start"] = time.monotonic() - t0
        except BaseException:
            self.close()
            raise
        return self

    def _ns_add(self, ns: str) -> None:
        _made_any.append(True)
        _run([IP, "netns", "add", ns])
        self._created.append(ns)

    def _setup_network(self) -> None:
        br = self.bridge_ns
        self._ns_add(br)
        _run([IP, "-n", br, "link", "add", "br0", "type", "bridge"])
        _run([IP, "-n", br, "link", "set", "lo", "up"])
        _run([IP, "-n", br, "link", "set", "br0", "up"])
        # bridged frames go through iptables (physdev rules for partitions); 1 by default
        # where br_netfilter is loaded, set it anyway
        _run([IP, "netns", "exec", br, "sh", "-c",
              "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables"], check=False)
        prefix = self.subnet.prefixlen
        for h in self.hosts:
            self._ns_add(h.ns)
            _run([IP, "link", "add", "veth0", "netns", h.ns, "type", "veth", "peer", "name",
                  h.bridge_port, "netns", br])
            _run([IP, "-n", br, "link", "set", h.bridge_port, "master", "br0", "up"])
            _run([IP, "-n", h.ns, "link", "set", "lo", "up"])
            _run([IP, "-n", h.ns, "addr", "add", f"{h.ip}/{prefix}", "dev", "veth0"])
            _run([IP, "-n", h.ns, "link", "set", "veth0", "up"])
            _run([IP, "-n", h.ns, "route", "add", "224.0.0.0/4", "dev", "veth0"])

    # -- nodes -------------------------------------------------------------------------------
    def endpoints(self, port: int = DEFAULT_PORT) -> list[str]:
        """The default endpoint of every host (where start_node binds unless told otherwise)."""
        return [f"tcp://{h.ip}:{port}" for h in self.hosts]

    def peers(self, *hosts: Host, port: int = DEFAULT_PORT) -> str:
        """Comma-separated endpoints of these hosts (all by default), for ``--peers``."""
        return ",".join(f"tcp://{h.ip}:{port}" for h in (hosts or tuple(self.hosts)))

    def start_nodes(self, *, peers: bool | Sequence[str] = True, hosts: Sequence[Host] | None = None,
                    ready_timeout: float = READY_TIMEOUT, **flags: Any) -> list[ClusterNode]:
        """Start a node on each host (all by default) at once, and wait until every one
        answers a ping. ``peers=True`` gives each ``--peers`` with the others' endpoints."""
        t0 = time.monotonic()
        targets = list(hosts or self.hosts)
        port = flags.get("port", DEFAULT_PORT)
        nodes = []
        for h in targets:
            if peers is True:
                node_peers: Sequence[str] | None = [f"tcp://{o.ip}:{port}" for o in targets if o is not h]
            elif peers is False:
                node_peers = None
            else:
                node_peers = peers
            nodes.append(h.spawn_node(peers=node_peers, **flags))
        for node in nodes:
            node.wait_ready(max(1.0, ready_timeout - (time.monotonic() - t0)))
        self.timings["nodes_start"] = time.monotonic() - t0
        return nodes

    @property
    def nodes(self) -> list[ClusterNode]:
        return [n for h in self.hosts for n in h.nodes]

    # -- faults between hosts ----------------------------------------------------------------
    def _bridge_iptables(self, *args: str) -> None:
        _skip_without_iptables()
        assert IPTABLES is not None
        _run([IP, "netns", "exec", self.bridge_ns, IPTABLES, "-w", *args])

    def _bridge_insert(self, rule: tuple[str, ...]) -> None:
        if rule not in self._bridge_rules:
            self._bridge_iptables("-I", *rule)
            self._bridge_rules.add(rule)

    def _bridge_delete(self, rule: tuple[str, ...]) -> None:
        if rule in self._bridge_rules:
            self._bridge_iptables("-D", *rule)
            self._bridge_rules.discard(rule)

    @staticmethod
    def _pair_rules(a: Host, b: Host) -> list[tuple[str, ...]]:
        return [("FORWARD", "-m", "physdev", "--physdev-in", x.bridge_port, "--physdev-out",
                 y.bridge_port, "-j", "DROP") for x, y in ((a, b), (b, a))]

    def partition(self, a: Host, b: Host) -> None:
        """Drop all traffic between hosts ``a`` and ``b`` (unicast and multicast, both ways),
        at the bridge; each still reaches every other host."""
        if not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
            import pytest
            pytest.skip("partitions need br_netfilter (bridged traffic through iptables)")
        for rule in self._pair_rules(a, b):
            self._bridge_insert(rule)

    def heal(self, a: Host, b: Host) -> None:
        for rule in self._pair_rules(a, b):
            self._bridge_delete(rule)

    def heal_all(self) -> None:
        """Undo every cut, partition and loss."""
        for rule in list(self._bridge_rules):
            self._bridge_delete(rule)
        for h in self.hosts:
            h.restore()
            h.clear_loss()

    # -- teardown ----------------------------------------------------------------------------
    def namespaces(self) -> list[str]:
        """This cluster's namespaces that exist now."""
        return [ns for ns in list_namespaces() if ns.startswith(self.prefix)]

    def pids(self) -> list[int]:
        """Processes running inside this cluster's namespaces now."""
        return [pid for ns in self.namespaces() for pid in namespace_pids(ns)]

    def close(self) -> None:
        """Tear everything down, whatever state it is in; raise at the end if something
        could not be cleaned."""
        if self._closed:
            return
        self._closed = True
        t0 = time.monotonic()
        errors: list[str] = []
        for h in self.hosts:      # clients first, while their nodes still answer
            try:
                h.agent.close(timeout=3.0)
            except Exception as e:  # noqa: BLE001  (teardown goes on, errors raised at the end)
                errors.append(f"agent {h.name}: {type(e).__name__}: {e}")
        nodes = [n for n in self.nodes if n.proc.poll() is None]
        for node in nodes:       # SIGTERM all at once, then wait
            try:
                node.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_GRACE
        for node in self.nodes:
            try:
                node.stop(grace=max(0.1, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001
                errors.append(f"{node!r}: {type(e).__name__}: {e}")
        try:
            errors += destroy_namespaces(self._created + [ns for ns in list_namespaces()
                                                          if ns.startswith(self.prefix)
                                                          and ns not in self._created])
        except Exception as e:  # noqa: BLE001
            errors.append(f"destroying namespaces: {type(e).__name__}: {e}")
        if self in _open_clusters:
            _open_clusters.remove(self)
        if not _open_clusters and _saved_sigterm:
            if signal.getsignal(signal.SIGTERM) is _sigterm_to_interrupt:
                signal.signal(signal.SIGTERM, _saved_sigterm[0])
            _saved_sigterm.clear()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        self.timings["teardown"] = time.monotonic() - t0
        if errors:
            raise ClusterError(f"cluster {self.prefix}* teardown: " + "; ".join(errors))


class ClusterFactory:
    """``cluster(n, **kw)`` makes an open Cluster; ``close()`` closes them all."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.clusters: list[Cluster] = []

    def __call__(self, n: int = 3, **kw: Any) -> Cluster:
        c = Cluster(n, base_dir=self.base_dir / f"cluster{len(self.clusters)}", **kw)
        self.clusters.append(c)
        return c.open()

    def close(self) -> None:
        errors = []
        for c in reversed(self.clusters):
            try:
                c.close()
            except Exception as e:  # noqa: BLE001  (close the others too)
                errors.append(str(e))
        if errors:
            raise ClusterError("; ".join(errors))


__all__ = [
    "DEFAULT_PORT",
    "Agent",
    "AgentError",
    "Cluster",
    "ClusterError",
    "ClusterFactory",
    "ClusterNode",
    "Host",
    "iptables_missing_reason",
    "list_namespaces",
    "namespace_pids",
    "pick_subnet",
    "sweep_run",
    "sweep_stale",
    "unavailable_reason",
    "wait_until",
]
