"""A node stalled past the suspicion timeout (SIGSTOP: a GC pause, a loaded machine)
is declared dead while alive; its backup takes its tasks over and runs them. Back, it
runs none of its queued tasks the backup took (mesh/node/fence.py): it asks first.

Every task records each run (a line in a file): the tests count them. The task that
was running on the stalled node when it stopped runs on both nodes (it had started:
nothing calls it back); the queued ones run once.
"""
from __future__ import annotations

import collections
import platform
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness import NodeFactory, NodeProc, wait_until
from test_e2e_handoff import form_mesh, submit_and_exit
from test_e2e_reclaim import runs

RUN_TIMEOUT = 90.0


def _steps(log: Path, xs: range, gate: Path) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """The first waits for ``gate`` (it occupies the node's one child), the others
    queue behind it."""
    return [("tasks_app.step", [str(log), x, *([str(gate)] if x == xs[0] else [])], {})
            for x in xs]


# recvfrom(2): a child waiting for its next task (mesh/node/channel.py, Channel.recv)
RECVFROM = {"x86_64": 45, "aarch64": 207}.get(platform.machine())


def _waits_for_work(pid: int) -> bool:
    """Is process ``pid`` blocked in a recv() with no flags (a child that reported its
    task and waits for the next: not its MSG_DONTWAIT look for skips)?"""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 4 and fields[0] == str(RECVFROM) and int(fields[4], 16) == 0


def _busy(*nodes: NodeProc) -> bool:
    return all(n.status()["busy"] == 1 for n in nodes)


@pytest.mark.skipif(RECVFROM is None, reason="reads /proc/PID/syscall (Linux, x86_64 or aarch64)")
def test_a_node_stalled_past_its_death_runs_none_of_the_queued_tasks_its_backup_took(
        start_node: NodeFactory, tmp_path: Path) -> None:
    log, gate_a, gate_b = tmp_path / "runs", tmp_path / "gate-a", tmp_path / "gate-b"
    # each node, alone, gets one running task (gated) and five queued behind it. (a's
    # seed, b, is stopped while a starts and takes its tasks: a submitter that knew b
    # would place some there.)
    b = start_node(name="b", concurrency=1)
    submit_and_exit([b], _steps(log, range(100, 106), gate_b))
    wait_until(lambda: _busy(b), what="b's first task to start")
    b.send_signal(signal.SIGSTOP)
    try:
        a = start_node(name="a", concurrency=1, peers=b.endpoint)
        submit_and_exit([a], _steps(log, range(0, 6), gate_a))
    finally:
        b.send_signal(signal.SIGCONT)
    wait_until(lambda: _busy(a), what="a's first task to start")
    form_mesh(a, b)
    # (b may shed a few of its queued tasks to a as they meet, a's load not gossiped yet)
    def copied() -> int | None:
        sa, sb = a.status(), b.status()
        held = sa["held"]
        ok = held + sb["held"] == 12 and sb["copies_kept_for"].get("a", 0) == held \
            and sa["copies_kept_for"].get("b", 0) == sb["held"]
        return held if ok else None
    held = wait_until(copied, what="each node's tasks copied to the other")
    a.send_signal(signal.SIGSTOP)
    try:
        # b declares a dead and takes every task of a over (queued behind its own gate)
        wait_until(lambda: f"node a is dead: running {held} of its task(s)" in b.stderr(),
                   timeout=RUN_TIMEOUT, what="b to take a's tasks over")
        # a's child ends step 0 while a is stopped: its report waits in the socket, read
        # as a goes on (it would start the next task at once, but the fence is up first)
        gate_a.touch()
        child = psutil.Process(a.pid).children()[0].pid
        wait_until(lambda: runs(log) == [0] and _waits_for_work(child),
                   what="a's child to run step 0 and report it")
    finally:
        a.send_signal(signal.SIGCONT)
    # a asks b, which holds them: a drops them (without the fence, a runs them now)
    wait_until(lambda: a.status()["held"] == 0, timeout=RUN_TIMEOUT,
               what="a to be done with its queued tasks")
    gate_b.touch()
    wait_until(lambda: len(runs(log)) >= 13 and a.status()["held"] + b.status()["held"] == 0,
               timeout=RUN_TIMEOUT, what="every task to end")
    counts = collections.Counter(runs(log))
    # step 0 was running on a when it stopped: b ran its copy too (at least once)
    assert counts == {0: 2, **{x: 1 for x in [*range(1, 6), *range(100, 106)]}}, counts
    st = a.status()
    assert st["fence_held_elsewhere"] == held - 1, st
