"""Celery worker flags that do something on a node: -X/--exclude-queues (every queue
but those), --purge (the journal's unfinished tasks revoked at start) and --uid/--gid
(the node drops root before it opens anything). Real nodes; bad values are usage
errors of one line."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import MESHNODE, clean_env, free_port, run_program, wait_until

from mesh import Mesh
from mesh.cli.common import EXIT_START, EXIT_USAGE
from mesh.exceptions import MeshError, TaskRevokedError

RESULT_TIMEOUT = 60.0


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("meshnode: error: "), lines[0]
    return lines[0]


def test_exclude_queues_takes_every_queue_but_those(start_node: Any, make_client: Any) -> None:
    a = start_node(concurrency=1, exclude_queues="bulk,reports")
    c = make_client(a)
    assert c.tasks.request_info.apply_async(queue="other").get(timeout=RESULT_TIMEOUT)[
        "hostname"] == a.name
    with pytest.raises(MeshError, match="serving queue 'bulk'"):
        c.tasks.request_info.apply_async(queue="bulk").get(timeout=RESULT_TIMEOUT)
    assert a.status()["excluded_queues"] == ["bulk", "reports"]
    assert "queues: every queue but bulk, reports" in a.stderr()
    b = start_node(concurrency=1, peers=a.endpoint)          # a node that takes them
    wait_until(lambda: c.tasks.request_info.apply_async(queue="bulk").get(
        timeout=RESULT_TIMEOUT)["hostname"] == b.name, what="bulk to go to b")
    # with -Q, Celery's -X takes from those
    q = start_node(concurrency=1, queues="x,y", exclude_queues="y")
    assert q.status()["queues"] == ["x"]


@pytest.mark.parametrize("args, says", [
    pytest.param(["-X", ""], "names no queue", id="-X naming no queue"),
    pytest.param(["-X", "ok,bad\tname"], "queue name", id="-X a bad name"),
    pytest.param(["-Q", "a", "-X", "a"], "would take no task", id="-X every -Q queue"),
    pytest.param(["--uid", "no-such-user-x"], "--uid no-such-user-x: no such user", id="--uid unknown"),
    pytest.param(["--gid", "no-such-group-x"], "--gid no-such-group-x: no such group",
                 id="--gid unknown"),
    pytest.param(["--umask", "0989"], "--umask '0989': not a mask", id="--umask not octal"),
    pytest.param(["--umask", "01000"], "--umask '01000': out of range", id="--umask too large"),
    pytest.param(["--workdir", "/no/such/dir-x"], "--workdir /no/such/dir-x: No such file",
                 id="--workdir missing"),
])
def test_bad_worker_flags_exit_2_with_one_line(args: list[str], says: str, tmp_path: Path) -> None:
    p = run_program(MESHNODE, "--app", "tasks_app", *args, "--data-dir", str(tmp_path / "data"),
                    "--no-mdns", "--bind", "tcp://127.0.0.1:1")
    assert p.returncode == EXIT_USAGE, p
    assert says in _one_error_line(p.stderr)


def test_purge_at_start_revokes_what_the_journal_held(start_node: Any, make_client: Any,
                                                      tmp_path: Path) -> None:
    node = start_node(concurrency=1)
    c = make_client(node)
    gate = tmp_path / "gate"
    running = c.tasks.wait_for_file.delay(str(gate))
    wait_until(lambda: node.status()["busy"] == 1, what="the gated task to start")
    queued = [c.tasks.add.delay(i, i) for i in range(3)]
    wait_until(lambda: node.status()["queued"] == 3, what="3 queued tasks")
    node.proc.send_signal(signal.SIGKILL)                     # the journal keeps them
    node.proc.wait(10)
    node.argv.append("--purge")
    node = start_node.restart(node)
    wait_until(lambda: "--purge: 4 task(s)" in node.stderr(), what="the purge's log line")
    for r in [running, *queued]:
        with pytest.raises(TaskRevokedError):
            r.get(timeout=RESULT_TIMEOUT)
    # the reclaim's summary agrees: none of them runs here (it said '4 run here' right
    # after the purge's line)
    assert "not run here; 0 run here, 4 purged (--purge)" in node.stderr(), node.stderr()
    assert node.status()["reclaim_run_here"] == 0
    gate.touch()
    assert c.tasks.add.delay(2, 2).get(timeout=RESULT_TIMEOUT) == 4     # it serves on
    assert node.status()["succeeded"] == 1


WORKDIR_APP = """
import os
from mesh import Mesh
app = Mesh("mesh-it-workdir", mdns=False)

@app.task(name="workdir.write")
def write(name):
    with open(name, "w") as f:
        f.write("x")
    return [os.getcwd(), os.stat(name).st_mode & 0o777]
"""


def test_workdir_and_umask_apply_to_the_node_and_its_children(start_node: Any,
                                                              tmp_path: Path) -> None:
    # Celery's --workdir (the app is looked for there) and --umask (octal with a leading
    # 0); a systemd unit moved from Celery passes them
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "workdir_app.py").write_text(WORKDIR_APP)     # importable only from there
    node = start_node(app="workdir_app", concurrency=1, workdir=str(proj), umask="0027")
    client = Mesh("mesh-it-workdir-client", peers=[node.endpoint], mdns=False)
    try:
        cwd, mode = client.send_task("workdir.write", args=["out.txt"]).get(timeout=RESULT_TIMEOUT)
    finally:
        client.close()
    assert (cwd, oct(mode)) == (str(proj), oct(0o640))
    files = [f for f in node.data_dir.rglob("*") if f.is_file()]
    assert files and all(f.stat().st_mode & 0o027 == 0 for f in files), \
        [(f.name, oct(f.stat().st_mode)) for f in files]


def _python_for_everyone() -> tuple[str, str]:
    """A Python of this version that any user may run, and the venv's packages."""
    import sys
    import sysconfig
    site = sysconfig.get_paths()["purelib"]
    for python in (sys.executable, f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"):
        real = Path(os.path.realpath(python))
        if os.path.exists(real) and all(p.stat().st_mode & 0o001 for p in real.parents):
            return str(real), site
    pytest.skip("no Python that user nobody may run")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_uid_and_gid_drop_root_before_the_node_opens_anything(
        start_node: Any, make_client: Any) -> None:
    nobody = pwd.getpwnam("nobody")
    data = Path(tempfile.mkdtemp(prefix="mesh-uid-"))
    data.chmod(0o777)                                         # (the test's tmp_path is root's)
    # the node's Python must be readable by nobody once it is nobody: the test's may
    # live under /root (pyenv); the system's, with the venv's packages, is
    python, site = _python_for_everyone()
    try:
        node = start_node(concurrency=1, uid="nobody", gid=str(nobody.pw_gid),
                          data_dir=str(data / "node"), env={"PYTHONPATH": site},
                          program=[python, "-c", "from mesh.cli.meshnode import main; main()"])
        proc = psutil.Process(node.pid)
        assert proc.uids().real == proc.uids().effective == nobody.pw_uid
        assert proc.gids().real == nobody.pw_gid
        c = make_client(node)
        child = c.tasks.pid.delay().get(timeout=RESULT_TIMEOUT)
        assert psutil.Process(child).uids().effective == nobody.pw_uid
        journal = next((data / "node").iterdir())
        assert journal.stat().st_uid == nobody.pw_uid        # its files are the user's
        c.close()
        node.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_uid_without_data_dir_uses_the_users_home_not_roots(tmp_path: Path) -> None:
    """The default data dir is under ~: once the node is that user, ~ is the user's
    home (as su sets HOME), not root's, which the user may not write: `meshnode --uid
    nobody` said 'cannot create data dir /root/.local/share/mesh/...'. The error names
    the user's home, and says to give --data-dir."""
    nobody = pwd.getpwnam("nobody")
    python, site = _python_for_everyone()
    env = clean_env(PYTHONPATH=os.pathsep.join([clean_env()["PYTHONPATH"], site]),
                    HOME="/root")
    env.pop("XDG_DATA_HOME", None)
    p = run_program(python, "-c", "from mesh.cli.meshnode import main; main()", "--app",
                    "tasks_app", "--uid", "nobody", "--no-mdns", "--name", "uid-home",
                    "--bind", f"tcp://127.0.0.1:{free_port()}", env=env)
    if Path(nobody.pw_dir).exists():
        pytest.skip(f"nobody's home {nobody.pw_dir} exists: the node would start")
    assert p.returncode == EXIT_START, p
    error = p.stderr.strip().splitlines()[-1]
    assert f"cannot create data dir {nobody.pw_dir}/.local/share/mesh/uid-home" in error
    assert "--data-dir" in error and "nobody" in error


def test_purge_leaves_what_another_node_took_over(start_node: Any, make_client: Any,
                                                  tmp_path: Path) -> None:
    """A node killed with tasks queued: its backup runs them (takeover). Restarted with
    --purge, it asks the mesh first (reclaim) and purges only what would run here."""
    a = start_node(concurrency=1)
    b = start_node(concurrency=1, peers=a.endpoint)
    c = make_client(a, b)
    gate = tmp_path / "gate"
    blockers = [c.tasks.wait_for_file.delay(str(gate)) for _ in range(2)]
    wait_until(lambda: a.status()["busy"] == 1 and b.status()["busy"] == 1, what="both busy")
    queued = [c.tasks.add.delay(i, 1) for i in range(6)]
    wait_until(lambda: a.status()["queued"] + b.status()["queued"] == 6, what="6 queued")
    on_a = a.status()["queued"]
    assert on_a > 0
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    gate.touch()
    assert sorted(r.get(timeout=RESULT_TIMEOUT) for r in queued) == [1, 2, 3, 4, 5, 6]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in blockers] == ["opened", "opened"]
    a.argv.append("--purge")
    a = start_node.restart(a)
    wait_until(lambda: "--purge: 0 task(s)" in a.stderr(), what="the purge's log line")
    assert "finished or taken over on other nodes while this one was down were left" \
        in a.stderr()
    assert sorted(r.get(timeout=RESULT_TIMEOUT) for r in queued) == [1, 2, 3, 4, 5, 6]


def test_purge_with_nothing_to_purge_says_so(start_node: Any) -> None:
    node = start_node(concurrency=1, purge=True)
    wait_until(lambda: "--purge: this node held no unfinished task" in node.stderr(),
               what="the purge's log line")
