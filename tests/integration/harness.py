"""Harness for the integration suite: real ``meshnode`` processes on loopback.

A test starts nodes through :class:`NodeFactory` (the ``start_node`` fixture), which
runs the installed console script as a subprocess with its own data dir, waits until
the node answers a control ping (polling to a deadline, never sleeping a fixed time),
sends its stderr to a file, and at teardown always stops what it started: SIGTERM,
then SIGKILL, then any child process the node left behind.

Nodes import the test tasks as ``tasks_app`` (this directory is put on their
PYTHONPATH) and the tests import the same module under the same name, so exception
types defined there come back to the caller as themselves.

Keeping what a failed test leaves (``MESH_TEST_KEEP=DIR``): when a test using
``start_node`` fails, its whole temporary directory (each node's data dir with its
journal, each node's full stderr, the test's own files) is copied to
``DIR/<test>-<time>`` once its nodes are stopped, and the failure report names it.
A test that deletes a node's data dir to play "the machine is gone" calls
:func:`remove_data_dir`, which moves it aside (``<dir>.gone-N``, out of the node's
reach all the same) instead when ``MESH_TEST_KEEP`` is set. For chaos runs repeated
until a rare failure shows up, so that it can be traced from the journals.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, TypeVar

import psutil
import zmq

from mesh import Mesh
from mesh.cli.common import EXIT_START
from mesh.client.control import ControlClient
from mesh.wire.protocol import ControlReply, decode

INTEGRATION_DIR = Path(__file__).resolve().parent
ROOT = INTEGRATION_DIR.parents[1]
TASKS_MODULE = "tasks_app"

READY_TIMEOUT = 30.0     # s for a node to answer its first ping (2 shared cores: be generous)
STOP_GRACE = 10.0        # s for a node to exit after SIGTERM at teardown before SIGKILL

T = TypeVar("T")


def _program(name: str) -> str:
    """The console script installed next to this interpreter (the venv's bin)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (pip install -e .)")
    return found


MESHNODE = _program("meshnode")
MESHCTL = _program("meshctl")


# ---- small helpers --------------------------------------------------------------------

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "a condition",
               interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def occupy(node: Any, client: Any, gate: Path, timeout: float = 60.0) -> list[Any]:
    """Make ``node``'s one child busy with ``tasks_app.wait_for_file(gate)``, sent from
    ``client`` (whose seed it is). The client may place a task on another node it
    learnt of (as good a choice to it): send another until this node's child is busy.
    Every task sent waits for the same gate; their results are returned."""
    sent: list[Any] = []
    deadline = time.monotonic() + timeout
    while not node.status()["busy"]:
        assert time.monotonic() < deadline, f"{node.name}'s child never became busy"
        sent.append(client.tasks.wait_for_file.delay(str(gate)))
        end = time.monotonic() + 3.0
        while not node.status()["busy"] and time.monotonic() < end:
            time.sleep(0.02)
    return sent


def frames_until(sock: "zmq.Socket[bytes]", done: Callable[[list[Any]], bool],
                 timeout: float = 60.0) -> list[Any]:
    """Decoded frames from a raw link (a DEALER speaking the protocol) until
    ``done(messages)`` is true; fail after ``timeout``."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting; got {got!r}"[:2000]
        if sock.poll(int(min(left, 1.0) * 1000)):
            got += [decode(f) for f in sock.recv_multipart()]
    return got


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for programs under test: no MESH_* settings leaking in from
    the developer's shell, and the test tasks importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    paths = [str(INTEGRATION_DIR), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["MESH_MDNS_INTERFACES"] = "127.0.0.1"   # tests never multicast beyond loopback
    env.update(extra)
    return env


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """clean_env() plus ``extra``; a PYTHONPATH in ``extra`` goes before the usual one."""
    extra = dict(extra or {})
    env = clean_env()
    if "PYTHONPATH" in extra:
        env["PYTHONPATH"] = os.pathsep.join([extra.pop("PYTHONPATH"), env["PYTHONPATH"]])
    env.update(extra)
    return env


def run_program(program: str, *args: str, env: dict[str, str] | None = None,
                timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``meshnode``/``meshctl`` to completion and capture what it printed."""
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env=clean_env() if env is None else env, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def run_python(code: str, *args: str, timeout: float = 60.0,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a submitter process that exits), with the
    test tasks importable; ``sys.argv[1:]`` are ``args``. With ``check``, a non-zero
    exit fails the test with its output."""
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=timeout, check=False, env=clean_env(), cwd=ROOT,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"the script exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def _flag_args(flags: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in flags.items():
        opt = "-" + key if len(key) == 1 else "--" + key.replace("_", "-")   # O="fair": -O fair
        if value is True:
            out.append(opt)
        elif value is not None and value is not False:
            out += [opt, str(value)]
    return out


def keep_dir() -> Path | None:
    """Where failed tests' directories are copied (``MESH_TEST_KEEP``), or None."""
    value = os.environ.get("MESH_TEST_KEEP", "")
    return Path(value) if value else None


def remove_data_dir(path: Path) -> None:
    """A node's data dir gone (its machine lost): deleted, or with ``MESH_TEST_KEEP``
    renamed aside so that a failure can still be traced from its journal."""
    if keep_dir() is None:
        shutil.rmtree(path)
        return
    for i in range(1, 100):
        aside = path.with_name(f"{path.name}.gone-{i}")
        if not aside.exists():
            path.rename(aside)
            return
    raise AssertionError(f"{path} moved aside 99 times already")


def keep_failed(base_dir: Path, test_name: str) -> Path | None:
    """Copy ``base_dir`` (a failed test's nodes and files) to ``MESH_TEST_KEEP``; where."""
    keep = keep_dir()
    if keep is None:
        return None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in test_name)[-150:]
    dest = keep / f"{safe}-{time.strftime('%H%M%S')}-{os.getpid()}"
    shutil.copytree(base_dir, dest, symlinks=True, ignore_dangling_symlinks=True,
                    dirs_exist_ok=True)
    return dest


# ---- nodes ----------------------------------------------------------------------------

class NodeProc:
    """One running ``meshnode`` process."""

    def __init__(self, name: str, endpoint: str, proc: subprocess.Popen[bytes], stderr_path: Path,
                 data_dir: Path, control: ControlClient, argv: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.argv = argv or []
        self.env = env or {}               # extra environment variables it was started with
        self.cwd: Path | None = None       # where it runs (None: the repository)
        self.name = name
        self.endpoint = endpoint
        self.proc = proc
        self.stderr_path = stderr_path
        self.data_dir = data_dir
        self.control = control
        self.started_at = time.time()

    def __repr__(self) -> str:
        return f"<NodeProc {self.name} {self.endpoint} pid={self.proc.pid} rc={self.proc.returncode}>"

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- talking to it ------------------------------------------------------------------
    def request(self, command: str, timeout: float = 5.0) -> ControlReply | str:
        return self.control.broadcast([self.endpoint], command, timeout=timeout)[self.endpoint]

    def ping(self, timeout: float = 0.25) -> bool:
        reply = self.request("ping", timeout)
        return isinstance(reply, ControlReply) and reply.ok

    def status(self) -> dict[str, Any]:
        reply = self.request("status", timeout=10.0)
        if not isinstance(reply, ControlReply) or not reply.ok:
            raise AssertionError(f"node {self.name} did not answer status: {reply!r}; "
                                 f"{self.why_silent()}")
        payload: dict[str, Any] = reply.payload
        return payload

    def alive_members(self) -> set[str]:
        """The names of the members this node counts alive (itself too)."""
        reply = self.request("members")
        assert isinstance(reply, ControlReply) and reply.ok, reply
        return {m["node"] for m in reply.payload if m["state"] == "alive"}

    def why_silent(self) -> str:
        """What the node's process is doing, for a node that did not answer: its exit
        code (a signal: killed), or its state (``stopped``: SIGSTOP) and, where py-spy
        is installed, where its threads are (a blocked loop shows there)."""
        rc = self.proc.poll()
        if rc is not None:
            how = f" ({signal.Signals(-rc).name})" if rc < 0 and -rc in signal.valid_signals() else ""
            return f"it exited with code {rc}{how}"
        try:
            proc = psutil.Process(self.pid)
            parts = [f"its process is {proc.status()}, cpu {proc.cpu_times()}"]
            pids = [self.pid] + [c.pid for c in proc.children(recursive=True)]
        except psutil.Error as e:
            return f"its process cannot be read: {e}"
        spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        for pid in pids if spy else ():
            try:
                dump = subprocess.run([spy, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True,
                                      text=True, timeout=30, check=False)
                parts.append(f"py-spy dump --pid {pid}:\n{dump.stdout}{dump.stderr}")
            except (OSError, subprocess.SubprocessError) as e:
                parts.append(f"py-spy dump --pid {pid}: {e}")
        return "\n".join(parts)

    # -- its process --------------------------------------------------------------------
    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the node to exit; its exit code."""
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(self.stderr().splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE) -> int:
        """Stop the node however it takes, and everything it started."""
        return self.end_stop(self.begin_stop(), time.monotonic() + grace)

    def begin_stop(self) -> list[psutil.Process]:
        """SIGTERM the node if it runs; its children then (for :meth:`end_stop`)."""
        leftovers: list[psutil.Process] = []
        if self.proc.poll() is None:
            try:
                leftovers = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                pass
            self.proc.send_signal(signal.SIGTERM)
        return leftovers

    def end_stop(self, leftovers: list[psutil.Process], deadline: float) -> int:
        """Wait for the node to exit until ``deadline`` (then SIGKILL it), and kill
        what it started that is left."""
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._kill_leftovers(leftovers)
        return self.proc.returncode

    def _kill_leftovers(self, known: list[psutil.Process]) -> None:
        """SIGKILL child processes still alive after the node is gone: the ones seen
        before stopping it, and any others in the process group it leads (children
        it forked are in its group; it was started in a new session).

        Not the group when a process has the node's pid again: the kernel gives a pid
        out again only once no process group has it as id, so that group is another
        process's, a new session leader's (a node of another test on a machine whose
        pids wrap: pid_max is 32768 here, and a suite starts thousands of processes).
        Killed as "leftovers", that test's node died at once, its log stopping after
        "ready" and its test waiting for results (seen once, 2026-12-01: the thousand
        async tasks test "hung" with no line after ready; not proven to be this)."""
        pgid = self.proc.pid
        if psutil.pid_exists(pgid):
            known = [p for p in known if p.pid != pgid]
            pgid = -1                      # (its group is not this node's: no scan)
        # (the group of each pid first, one system call, and a Process only for the
        # group's: psutil.process_iter read every process's /proc stat file, 20 ms of
        # the test process's CPU per node stopped with ~120 processes on the machine)
        for pid in psutil.pids() if pgid > 0 else ():
            try:
                if pid == os.getpid() or os.getpgid(pid) != pgid:
                    continue
                p = psutil.Process(pid)
                if p.create_time() >= self.started_at - 1.0:
                    known.append(p)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
        for p in known:
            try:
                if p.is_running():
                    p.kill()
                    p.wait(5)
            except psutil.Error:
                pass


def _answers_for(node: "NodeProc") -> bool:
    """Is the node answering on ``node.endpoint`` the process the harness started (or
    one of its descendants: a ``program`` may wrap meshnode), not another one that took
    the port first? (True when its status does not say a pid.)"""
    reply = node.request("status", 5.0)
    pid = reply.payload.get("pid") if isinstance(reply, ControlReply) and reply.ok \
        and isinstance(reply.payload, dict) else None
    if not isinstance(pid, int):
        return True
    try:
        ours = {node.proc.pid, *(c.pid for c in psutil.Process(node.proc.pid).children(recursive=True))}
    except psutil.Error:            # (ours has exited: the port is another's)
        return False
    return pid in ours


class NodeFactory:
    """``start_node(**flags)``: start a node on a free loopback port and return it once
    it answers a ping. Keyword arguments become meshnode flags (``time_limit=1`` is
    ``--time-limit 1``, ``True`` is a bare flag); ``env`` adds environment variables."""

    def __init__(self, base_dir: Path, control: ControlClient):
        self.base_dir = base_dir
        self.control = control
        self.nodes: list[NodeProc] = []
        self._keyed: dict[str, ControlClient] = {}    # key dir -> a control client with its admin key

    def control_for(self, keys: str | None) -> ControlClient:
        """The control client for nodes started with ``keys`` (an admin key of that dir)."""
        if not keys:
            return self.control
        cc = self._keyed.get(str(keys))
        if cc is None:
            from mesh.security.curve import Security
            from mesh.security.keys import ADMIN
            cc = self._keyed[str(keys)] = ControlClient(security=Security.load(str(keys), ADMIN))
        return cc

    def __call__(self, *, app: str = TASKS_MODULE, concurrency: int | None = 2, name: str | None = None,
                 ready_timeout: float = READY_TIMEOUT, mdns: bool = False,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 program: list[str] | None = None, **flags: Any) -> NodeProc:
        """``env``: extra environment variables (a PYTHONPATH given is put first);
        ``cwd``: where the node runs (default: the repository); ``program``: how to
        run meshnode (default: the venv's script)."""
        for _attempt in range(3):
            port = free_port()
            node_name = name or f"it-{port}"
            endpoint = f"tcp://127.0.0.1:{port}"
            stem = node_name if len(node_name.encode()) <= 100 else "long-name"   # (a file name
            data_dir = self.base_dir / f"{stem}-{port}.data"                     # is 255 bytes)
            stderr_path = self.base_dir / f"{stem}-{port}.stderr"
            argv = [*(program or [MESHNODE]), "--app", app, "--bind", endpoint, *([] if mdns else ["--no-mdns"]),
                    *(["--concurrency", str(concurrency)] if concurrency is not None else []),
                    "--data-dir", str(data_dir),
                    "--name", node_name, *_flag_args(flags)]
            with open(stderr_path, "wb") as err:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                        cwd=cwd or ROOT, env=node_env(env), start_new_session=True)
            node = NodeProc(node_name, endpoint, proc, stderr_path, data_dir,
                            self.control_for(flags.get("keys")), argv, env)
            node.cwd = cwd
            self.nodes.append(node)
            if self._wait_ready(node, ready_timeout):
                return node
            # the port was taken between free_port() and the node's bind: another one
        raise AssertionError("meshnode could not bind a free port in 3 attempts")

    def restart(self, old: NodeProc, ready_timeout: float = READY_TIMEOUT,
                name: str | None = None) -> NodeProc:
        """Start ``old`` again (it must have exited): same port and data dir, so it
        finds its journal, and the same name unless ``name`` gives a new one (what a
        restart does when the name is the default, host-pid). Its stderr is appended
        to the same file."""
        assert old.proc.poll() is not None, f"{old!r} is still running"
        argv = list(old.argv)
        if name is not None:
            argv[argv.index("--name") + 1] = name
        with open(old.stderr_path, "ab") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    cwd=old.cwd or ROOT, env=node_env(old.env), start_new_session=True)
        node = NodeProc(name or old.name, old.endpoint, proc, old.stderr_path, old.data_dir,
                        old.control, argv, old.env)
        node.cwd = old.cwd
        self.nodes.append(node)
        if not self._wait_ready(node, ready_timeout):
            raise AssertionError(f"{old.name} could not bind {old.endpoint} again")
        return node

    def _wait_ready(self, node: NodeProc, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            rc = node.proc.poll()
            if rc is not None:
                if rc == EXIT_START and "cannot bind" in node.stderr():
                    return False
                raise AssertionError(f"meshnode {node.name} exited with code {rc} before it was "
                                     f"ready; its stderr:\n{node.stderr_tail()}")
            if node.ping(timeout=0.25):
                if _answers_for(node):
                    return True
                # another test's node bound this port between free_port() and ours (ci18:
                # the test then talked to it); ours exits with "cannot bind"
                try:
                    node.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.stop()
                    raise AssertionError(f"another process answers on {node.endpoint}, and "
                                         f"meshnode {node.name} did not exit") from None
                continue
            if time.monotonic() >= deadline:
                node.stop()
                raise AssertionError(f"meshnode {node.name} did not answer a ping within {timeout:g} s;"
                                     f" its stderr:\n{node.stderr_tail()}")

    def close(self) -> None:
        """Stop every node: all SIGTERMed first, then each waited for (its STOP_GRACE
        from its signal), as the machines of a mesh stop. One after another, each
        waited its exit before the next was signalled: ~7 % of the test time of the
        files with three nodes (docs/testing.md)."""
        errors = []
        stopping: list[tuple[NodeProc, list[psutil.Process]]] = []
        for node in reversed(self.nodes):
            try:
                stopping.append((node, node.begin_stop()))
            except (OSError, psutil.Error, subprocess.SubprocessError) as e:   # stop the others too
                errors.append(f"{node!r}: {type(e).__name__}: {e}")
        deadline = time.monotonic() + STOP_GRACE
        for node, leftovers in stopping:
            try:
                node.end_stop(leftovers, deadline)
            except (OSError, psutil.Error, subprocess.SubprocessError) as e:
                errors.append(f"{node!r}: {type(e).__name__}: {e}")
        for cc in self._keyed.values():
            cc.close()
        self._keyed.clear()
        if errors:
            raise RuntimeError("could not stop every node: " + "; ".join(errors))


# ---- clients --------------------------------------------------------------------------

@dataclasses.dataclass
class ClientHandle:
    """A client app pointed at some nodes, with the test tasks registered on it under
    their node-side names: ``c.tasks.add.delay(2, 3)``."""
    app: Mesh
    tasks: SimpleNamespace

    def close(self) -> None:
        self.app.close()


def make_client_app(endpoints: list[str], tasks_module: ModuleType, **options: Any) -> ClientHandle:
    app = Mesh("mesh-it-client", peers=endpoints, mdns=False, **options)
    ns = SimpleNamespace()
    for task in tasks_module.app.tasks.values():
        if getattr(task.fun, "__module__", None) != tasks_module.__name__:
            continue    # a @shared_task of another module, registered with every app
        options = dataclasses.asdict(task.options)
        setattr(ns, task.fun.__name__, app.task(**options)(task.fun))
    return ClientHandle(app, ns)


class StreamingClient:
    """A real client app submitting ``add(j, 1)`` in batches and checking every result,
    in a thread until stopped: ``ok`` counts the right results, ``errors`` says what
    went wrong (a wrong result, an exception). For "clients are served all along"."""

    def __init__(self, endpoints: list[str], keys: str | None = None, key_name: str = "",
                 batch: int = 10, pause: float = 0.02):
        import tasks_app
        self.handle = make_client_app(endpoints, tasks_app, keys=keys, key_name=key_name)
        self.batch, self.pause = batch, pause
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                rs = [(j, self.handle.tasks.add.delay(j, 1)) for j in range(i, i + self.batch)]
                for j, r in rs:
                    got = r.get(timeout=60)
                    if got != j + 1:
                        self.errors.append(f"add({j}, 1) = {got!r}")
                    else:
                        self.ok += 1
            except Exception as e:               # noqa: BLE001 -- the tests assert it empty
                self.errors.append(f"{type(e).__name__}: {e}")
            i += self.batch
            time.sleep(self.pause)

    def more(self, n: int = 30) -> None:
        """Wait until ``n`` more tasks succeeded."""
        target = self.ok + n
        wait_until(lambda: self.ok >= target or self.errors, timeout=60, what=f"{n} more tasks")
        assert not self.errors, self.errors

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(90)
        self.handle.close()
