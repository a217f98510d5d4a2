"""Signals sent to the node's whole process group (systemd's default
KillMode=control-group, ``timeout``, Ctrl-C in a terminal) drain the node exactly as
a signal to the node alone: running tasks finish and deliver their results, no child
dies or is respawned mid-shutdown, the node exits 0. The node runs the ExecStart line
of the systemd unit in docs/deploy.md."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import (
    MESHNODE,
    ROOT,
    NodeFactory,
    NodeProc,
    clean_env,
    free_port,
    wait_until,
)

from mesh.cli.common import EXIT_OK

CHILDREN = 12          # more deaths than the pool's CRASH_LIMIT if children died of it
RUNNING = 4


def unit_from_docs() -> dict[str, str]:
    """The [Service] settings of the unit in docs/deploy.md."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"```ini\n(.*?)```", text, re.S)
    assert block, "docs/deploy.md has no ```ini unit"
    settings: dict[str, str] = {}
    for line in block.group(1).splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


def start_from_unit(factory: NodeFactory, tmp_path: Path) -> NodeProc:
    """Run the unit's ExecStart, pointed at the test tasks, a free loopback port and a
    temporary data dir (later flags win), in a process group of its own, as systemd
    runs a service."""
    unit = unit_from_docs()
    argv = shlex.split(unit["ExecStart"])
    assert argv[0].endswith("/meshnode")
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    argv = [MESHNODE, *argv[1:], "--app", "tasks_app", "--bind", endpoint, "--no-mdns",
            "--data-dir", str(tmp_path / "data"), "--name", "unit", "--concurrency", str(CHILDREN)]
    stderr_path = tmp_path / "unit.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=ROOT,
                                env=clean_env(), start_new_session=True)
    node = NodeProc("unit", endpoint, proc, stderr_path, tmp_path / "data", factory.control, argv)
    factory.nodes.append(node)
    wait_until(lambda: node.proc.poll() is not None or node.ping(), what="the node to answer")
    assert node.proc.poll() is None, node.stderr_tail()
    return node


def test_the_unit_gives_the_node_time_to_drain() -> None:
    unit = unit_from_docs()
    assert unit.get("KillMode", "control-group") == "control-group"
    timeout = re.search(r"--shutdown-timeout (\d+)", unit["ExecStart"])
    assert timeout and float(unit["TimeoutStopSec"]) > float(timeout.group(1))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_drains_the_node(
        start_node: NodeFactory, make_client: Any, tmp_path: Path, sig: int) -> None:
    node = start_from_unit(start_node, tmp_path)
    t = make_client(node).tasks
    gate = tmp_path / "gate"
    running = [t.wait_for_file.delay(str(gate)) for _ in range(RUNNING)]
    wait_until(lambda: node.status()["busy"] == RUNNING, what="the tasks to run")
    children = psutil.Process(node.pid).children()
    assert len(children) == CHILDREN
    os.killpg(node.pid, sig)              # the whole group: the node and every child
    wait_until(lambda: "stopping" in node.stderr(), what="the node to begin its shutdown")
    # the children got the signal too, and carry on: the running tasks are not lost (the
    # idle ones may be stopped by the node's shutdown already)
    def alive(c: psutil.Process) -> bool:
        try:
            return c.is_running() and c.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    assert sum(map(alive, children)) >= RUNNING
    gate.touch()
    assert [r.get(timeout=60) for r in running] == ["opened"] * RUNNING
    assert node.wait(60) == EXIT_OK
    log = node.stderr()
    assert "dying fast" not in log and "WorkerLostError" not in log, log
    assert "while running task" not in log, log     # (idle children: the node stops them)
    assert "stopped" in log
