"""A node that joins ranks first, by rendezvous hashing, as the backup of some of the
tasks already held (mesh/node/copy_back.py): it is given their copies, and the old
backup drops its own once the joiner confirmed. An owner whose holder dies sends each
task where rendezvous hashing over the alive nodes says its copy is (mesh/client/
members.py): with the copy left on the old backup, that one ran the task at the takeover
and the joiner ran it again from the owner's failover.

Real nodes on loopback; every task records each run (a line in a file).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from harness import NodeFactory, occupy, wait_until
from test_e2e_handoff import alive_members, form_mesh
from test_e2e_reclaim import runs

from mesh.rendezvous import backup_for

N = 24
N_DISK = 60
RUN_TIMEOUT = 90.0


def test_a_joiner_gets_the_copies_it_ranks_first_for_and_a_holders_death_runs_each_once(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    a = start_node(name="a", concurrency=1)
    owner = make_client(a)               # it stays: its failover follows the copies
    # all held by a (sent while it is alone), not due before a is killed
    rs = [owner.tasks.step.apply_async((str(log), x), countdown=25.0) for x in range(N)]
    assert owner.app.client.flush(30) == 0
    b = start_node(name="b", concurrency=2, peers=a.endpoint)
    form_mesh(a, b)
    wait_until(lambda: b.status()["copies_kept_for"].get("a", 0) == N, what="a's copies on b")
    c = start_node(name="c", concurrency=2, peers=a.endpoint)
    form_mesh(a, b, c)
    to_c = sum(backup_for(r.id, ["b", "c"], "a") == "c" for r in rs)
    assert 0 < to_c < N, to_c            # (fixed ids would make this fixed; random: rare)
    wait_until(lambda: len(owner.app.client._placeable) == 3, what="the owner to see all three")
    # the copies follow the ranking: c keeps those it ranks first for, b the others
    kept = None

    def moved() -> bool:
        nonlocal kept
        kept = (b.status()["copies_kept_for"].get("a", 0), c.status()["copies_kept_for"].get("a", 0))
        return kept == (N - to_c, to_c)
    wait_until(moved, timeout=15, what="the copies to follow the ranking (b, c)",
               interval=0.1)
    a.proc.kill()                        # -9 while it holds all N
    a.proc.wait(10)
    # b and c declare a dead and take its tasks over; the owner sends them to the node
    # rendezvous hashing over {b, c} picks; each runs at its eta
    wait_until(lambda: len(runs(log)) >= N and b.status()["held"] + c.status()["held"] == 0,
               timeout=RUN_TIMEOUT, what="every task to run")
    assert [r.get(timeout=30) for r in rs] == list(range(N))
    # (a second run of a task would come within moments of the first: both are due)
    wait_until(lambda: b.status()["held"] + c.status()["held"] == 0, what="b and c to be idle")
    got = runs(log)
    assert sorted(got) == list(range(N)), f"ran more than once: {sorted(x for x in set(got) if got.count(x) > 1)}"
    assert kept == (N - to_c, to_c), f"copies of a's tasks kept on (b, c) before the kill: {kept}"



def test_a_dead_peer_is_not_kept_as_missed_and_back_it_gets_the_copies_it_ranks_first_for(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    """A peer declared dead is not kept in the backup choice's ``missed`` (suspected
    peers, whose return moves back the copies of the tasks chosen meanwhile): until
    2026-12 it stayed there until membership forgot it (60 s), and every task the node
    accepted meanwhile was noted for its return. Back (the same name, a new process), it
    is a joiner: the tasks held here that rank it first are copied to it."""
    log = tmp_path / "runs"
    a = start_node(name="a", concurrency=1)
    owner = make_client(a)
    rs = [owner.tasks.step.apply_async((str(log), x), countdown=60.0) for x in range(N)]
    assert owner.app.client.flush(30) == 0          # (all on a: it is alone)
    b = start_node(name="b", concurrency=1, peers=a.endpoint)
    c = start_node(name="c", concurrency=1, peers=a.endpoint)
    form_mesh(a, b, c)
    to_c = sum(backup_for(r.id, ["b", "c"], "a") == "c" for r in rs)
    assert 0 < to_c < N, to_c
    wait_until(lambda: c.status()["copies_kept_for"].get("a", 0) == to_c, what="a's copies on c")
    c.proc.kill()
    c.proc.wait(10)
    wait_until(lambda: alive_members(a) == {"a", "b"}, what="a to declare c dead")
    wait_until(lambda: a.status()["peers_out"] == 0, what="a to forget c as a suspect")
    more = [owner.tasks.step.apply_async((str(log), x), countdown=60.0) for x in range(N, N + 10)]
    assert owner.app.client.flush(30) == 0 and len(more) == 10
    assert a.status()["chosen_while_out"] == 0, a.status()
    wait_until(lambda: b.status()["copies_kept_for"].get("a", 0) == a.status()["held"],
               what="a's copies on b alone")
    c2 = start_node.restart(c)                      # the same name, a new process
    form_mesh(a, b, c2)
    # back, it is a joiner: a's tasks that rank it first have their copy on it again
    wait_until(lambda: c2.status()["copies_kept_for"].get("a", 0) >= to_c
               and b.status()["copies_kept_for"].get("a", 0)
               + c2.status()["copies_kept_for"].get("a", 0) == a.status()["held"],
               what="a's copies on b and c again")



def test_a_joiner_gets_the_copies_of_tasks_waiting_on_disk_it_ranks_first_for(
        start_node: NodeFactory, make_client: Any, tmp_path: Path) -> None:
    """The same for a deep backlog's disk part (mesh/node/disk_copies.py): a holds most
    of its queue on its disk (``--queue-memory 5``), b keeps their copies; c joins and
    ranks first for some of them: a's walk copies those to c, and b drops them once c
    confirmed. a killed, each task runs once. (Until 2026-12 they kept b until read
    back: b ran them at the takeover and c ran them again from the owner's failover.)"""
    log, gate = tmp_path / "runs", tmp_path / "gate"
    a = start_node(name="a", concurrency=1, queue_memory=5)
    owner = make_client(a)
    busy = owner.tasks.wait_for_file.delay(str(gate))
    wait_until(lambda: a.status()["busy"] == 1, what="a's child to be busy")
    rs = [owner.tasks.step.delay(str(log), x) for x in range(N_DISK)]
    assert owner.app.client.flush(30) == 0            # (all on a: it is alone)
    assert a.status()["queued_on_disk"] >= N_DISK - 10, a.status()
    b = start_node(name="b", concurrency=1, peers=a.endpoint)
    b_busy = occupy(b, make_client(b), gate)          # (busy: a sheds little to it)
    form_mesh(a, b)
    wait_until(lambda: b.status()["copies_kept_for"].get("a", 0) == a.status()["held"]
               and not a.status()["recopying_disk"], what="a's copies on b")
    c = start_node(name="c", concurrency=1, peers=a.endpoint)
    c_busy = occupy(c, make_client(c), gate)
    form_mesh(a, b, c)
    wait_until(lambda: "task(s) waiting on disk copied to it" in a.stderr(),
               what="a to copy to c the tasks on its disk c ranks first for")
    said = re.search(r"node c joined: (\d+) task\(s\) waiting on disk copied to it", a.stderr())
    assert said is not None and int(said[1]) > 0, a.stderr_tail()

    def settled() -> bool:
        st = a.status()
        return not st["recopying_disk"] and st["handoffs_in_flight"] == 0 and \
            b.status()["copies_kept_for"].get("a", 0) + c.status()["copies_kept_for"].get("a", 0) \
            == st["held"]
    wait_until(settled, what="each of a's tasks to have one copy, on b or c")
    assert c.status()["copies_kept_for"].get("a", 0) > 0
    wait_until(lambda: len(owner.app.client._placeable) == 3, what="the owner to see all three")
    a.proc.kill()                        # -9 while it holds most of them on its disk
    a.proc.wait(10)
    gate.touch()
    wait_until(lambda: len(runs(log)) >= N_DISK and b.status()["held"] + c.status()["held"] == 0,
               timeout=RUN_TIMEOUT, what="every task to run")
    assert [r.get(timeout=30) for r in rs] == list(range(N_DISK))
    assert busy.id and all(r.get(timeout=30) == "opened" for r in b_busy + c_busy)
    got = runs(log)
    assert sorted(got) == list(range(N_DISK)), \
        f"ran more than once: {sorted(x for x in set(got) if got.count(x) > 1)}"
