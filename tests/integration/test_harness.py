"""The harness stops what a test started, and only that (tests/integration/harness.py)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import harness
import psutil
import pytest
from harness import NodeFactory, NodeProc, free_port, wait_until

from mesh.client.control import ControlClient


def _group(leader: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != leader and os.getpgid(p.pid) == leader:
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            continue
    return out


def test_the_leftovers_of_a_node_are_killed(tmp_path: Path, control: ControlClient) -> None:
    """The node is gone, a child it forked lives on in its process group: killed."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & echo started"], stdout=subprocess.PIPE,
                            start_new_session=True)
    node = NodeProc("gone", "tcp://127.0.0.1:1", proc, tmp_path / "err", tmp_path, control)
    assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
    proc.stdout.close()
    proc.wait(10)
    orphans = wait_until(lambda: _group(proc.pid), what="the orphan in the node's group")
    node.stop()
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                               for p in orphans), what="the orphan to be killed")


def test_a_process_that_has_a_gone_nodes_pid_now_is_spared(tmp_path: Path, control: ControlClient) -> None:
    """pids wrap (pid_max 32768 here): once a node and its children are gone, its pid
    may be a new session leader's, another test's node, with children in its own group
    of that id. Stopping the old node must not kill them. (The kernel cannot give the pid
    out again while the old group lives, so such a group is never the node's.) Here the
    other process is given to a NodeProc as its process, as if its pid had come round:
    the leftover scan that follows a node's exit is run on it."""
    other = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        members = wait_until(lambda: _group(other.pid), what="the other process's child")
        node = NodeProc("gone", "tcp://127.0.0.1:1", other, tmp_path / "err", tmp_path, control)
        node.started_at = time.time() - 5
        node._kill_leftovers([])
        assert other.poll() is None and all(p.is_running() for p in members)
    finally:
        other.kill()
        other.wait(10)
        for p in _group(other.pid):
            p.kill()


def test_a_port_another_node_took_first_is_not_taken_for_the_new_one(
        start_node: NodeFactory, tmp_path: Path, control: ControlClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port() gives a port free a moment ago; another test's node may bind it
    first. Its answer to the ping was taken for the new node's (ci18: the test talked
    to a node without its tasks). The harness starts the new one on another port."""
    first = start_node(concurrency=1)                  # (another test's node)
    ports = iter([int(first.endpoint.rsplit(":", 1)[1])])
    monkeypatch.setattr(harness, "free_port", lambda: next(ports, None) or free_port())
    (tmp_path / "another-test").mkdir()
    factory = NodeFactory(tmp_path / "another-test", control)
    try:
        second = factory(concurrency=1)
        assert second.endpoint != first.endpoint
        assert second.status()["pid"] == second.proc.pid
        assert len(factory.nodes) == 2 and "cannot bind" in factory.nodes[0].stderr()
    finally:
        factory.close()
