"""A plain ``pip install .`` works: the wheel holds only the ``mesh`` package, and the
``meshnode``/``meshctl`` it installs into a clean venv (nothing but the declared
dependencies, no source tree on sys.path) run a real two-node mesh."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import venv
import zipfile
from pathlib import Path
from typing import IO

import pytest
from harness import free_port

# a wheel build and pip installing it with its dependencies from the registry: ~40-60 s on
# a quiet machine, past the default 120 s timeout under load (a 6-worker run timed out)
pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]

TASKS = '''
from mesh import Mesh
app = Mesh("smoke")

@app.task
def add(x, y):
    return x + y
'''

CLIENT = '''
import os, sys
import mesh
assert "site-packages" in mesh.__file__, mesh.__file__
from smoketasks import add, app
rs = [add.delay(i, i) for i in range(50)]
got = [r.get(timeout=30) for r in rs]
assert got == [2 * i for i in range(50)], got
nodes = {n["node"] for n in app.client.nodes() if n["state"] == "alive"}
print("ok", len(got), "nodes", len(nodes))
'''


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert p.returncode == 0, f"{cmd}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps",
          "--disable-pip-version-check", "-q", "-w", str(out), str(ROOT)])
    (whl,) = out.glob("mesh_tasks-*.whl")
    return whl


def test_the_wheel_holds_only_the_mesh_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mesh"}
    for sub in ("wire", "client", "node", "membership", "discovery", "monitor", "cli"):
        assert f"mesh/{sub}/__init__.py" in names, sub


def test_a_plain_install_runs_a_two_node_mesh(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    # a venv without pip, installed into by this pip (--python): the same install as its
    # own pip's, without the ~30 s ensurepip takes here; and nothing at all in it but
    # mesh and what mesh declares (not even pip or setuptools)
    venv.create(env_dir, with_pip=False)
    bin_ = env_dir / "bin"
    _run([sys.executable, "-m", "pip", "--python", str(bin_ / "python"), "install",
          "--disable-pip-version-check", "-q", str(wheel)])
    site = _run([str(bin_ / "python"), "-c", "import importlib.util as u; "
                 "print(u.find_spec('pip'), u.find_spec('setuptools'))"]).stdout
    assert site.split() == ["None", "None"], site
    work = tmp_path / "work"
    work.mkdir()
    (work / "smoketasks.py").write_text(TASKS)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MESH_PEERS")}
    ports = [free_port(), free_port()]
    eps = [f"tcp://127.0.0.1:{p}" for p in ports]
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[str]] = []
    try:
        for i, ep in enumerate(eps):
            logs.append((tmp_path / f"node{i}.log").open("w"))
            procs.append(subprocess.Popen(
                [str(bin_ / "meshnode"), "--app", "smoketasks", "--bind", ep, "--name", f"smoke{i}",
                 "--concurrency", "1", "--no-mdns", "--profile", "test",
                 "--data-dir", str(tmp_path / f"d{i}"), *(["--peers", eps[0]] if i else [])],
                cwd=work, env=env, stdout=subprocess.DEVNULL,
                stderr=logs[i]))
        deadline = time.monotonic() + 60
        while True:
            p = subprocess.run([str(bin_ / "meshctl"), "--peers", eps[1], "--json", "status"],
                               cwd=work, env=env, capture_output=True, text=True, timeout=60)
            if p.returncode == 0 and p.stdout.count('"alive"') >= 2:
                break
            for proc in procs:
                assert proc.poll() is None, (tmp_path / "node0.log").read_text() + (tmp_path / "node1.log").read_text()
            assert time.monotonic() < deadline, p.stdout + p.stderr
            time.sleep(0.2)
        out = _run([str(bin_ / "python"), "-c", textwrap.dedent(CLIENT)], cwd=work,
                   env={**env, "MESH_PEERS": eps[0]}).stdout
        assert out.split() == ["ok", "50", "nodes", "2"], out
        table = _run([str(bin_ / "meshctl"), "--peers", eps[0], "status"], cwd=work, env=env).stdout
        assert "smoke0" in table and "smoke1" in table, table
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
