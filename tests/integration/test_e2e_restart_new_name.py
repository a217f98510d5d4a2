"""A node killed with -9 and started again on the same address under a new name
(the default name is host-pid, so this is what a systemd restart does), while two
clients stream tasks: every task completes with the right result, the clients' I/O
threads live on, and the address is not failed over again and again (membership
names it twice: the old name dead, the new one alive)."""
from __future__ import annotations

import json
import threading
from typing import Any

from harness import MESHCTL, ClientHandle, NodeFactory, run_program, wait_until

STREAM_PAUSE = 0.004      # s between submits of one streaming client


class Streamer:
    """A client submitting add(i, i) from its own thread until stopped."""

    def __init__(self, client: ClientHandle, tag: int):
        self.client, self.tag = client, tag
        self.sent: list[tuple[int, Any]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                self.sent.append((i, self.client.tasks.add.delay(i, self.tag)))
            except BaseException as e:       # a closed client: the test reports it
                self.errors.append(e)
                return
            i += 1
            self._stop.wait(STREAM_PAUSE)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_restart_under_a_new_name_while_clients_stream(start_node: NodeFactory,
                                                      make_client: Any) -> None:
    b = start_node(name="b")
    a = start_node(name="a1", peers=b.endpoint)
    clients = [make_client(a, b), make_client(a)]
    wait_until(lambda: all(len(c.app.client.links) == 2 and c.app.client.members_applied > 0
                           for c in clients), what="both clients to know both nodes")
    streams = [Streamer(c, tag) for tag, c in enumerate(clients)]
    try:
        wait_until(lambda: all(len(s.sent) > 200 for s in streams), what="tasks streaming")
        a.proc.kill()
        a.proc.wait(10)
        a2 = start_node.restart(a, name="a2")
        # the clients learn the new name at the old address, and a2 runs their tasks
        wait_until(lambda: all(c.app.client.links[a.endpoint].node_id == "a2" for c in clients),
                   timeout=60, what="the clients to see a2 at a's address")
        wait_until(lambda: a2.status()["succeeded"] > 50, timeout=60, what="a2 to run tasks")
        # membership names the address twice now (a1 dead, a2 alive): over the next
        # answers, the live address must not be treated as dead
        resets = [c.app.client.links[a.endpoint].resets for c in clients]
        applied = [c.app.client.members_applied for c in clients]
        wait_until(lambda: all(c.app.client.members_applied >= n + 5
                               for c, n in zip(clients, applied)),
                   timeout=60, what="five more membership answers")
        assert [c.app.client.links[a.endpoint].resets for c in clients] == resets
    finally:
        for s in streams:
            s.stop()
    for s in streams:
        assert not s.errors, f"submits failed: {s.errors[:3]}"
    for c in clients:
        assert c.app.client._thread.is_alive(), "a client's I/O thread died"
        assert c.app.client.takeovers == 0
    wrong = []
    for s in streams:
        for i, r in s.sent:
            value = r.get(timeout=60)
            if value != i + s.tag:
                wrong.append((s.tag, i, value))
    assert not wrong, wrong[:5]
    sent = sum(len(s.sent) for s in streams)
    print(f"[restart-new-name] sent={sent} all completed; "
          f"duplicates={sum(c.app.client.duplicates for c in clients)} "
          f"failovers={sum(c.app.client.failovers for c in clients)}")


def test_meshctl_status_names_the_new_node_alive_and_the_old_name_dead(start_node: NodeFactory) -> None:
    # the address carries two names now: each gets its row and its own state (the
    # table took the graver state of the two for the one row it showed: "a2 dead")
    b = start_node(name="b", profile="test")
    a = start_node(name="a1", peers=b.endpoint, profile="test")
    wait_until(lambda: {m["node"]: m["state"] for m in b.request("members").payload}.get("a1") == "alive",
               what="b to see a1")
    a.proc.kill()
    a.proc.wait(10)
    start_node.restart(a, name="a2")

    def states() -> dict[str, str]:
        return {m["node"]: m["state"] for m in b.request("members").payload}
    wait_until(lambda: states().get("a1") == "dead" and states().get("a2") == "alive",
               what="b to see a1 dead and a2 alive")
    want = [("a1", a.endpoint, "dead", False), ("a2", a.endpoint, "alive", True),
            ("b", b.endpoint, "alive", True)]
    rows: list[Any] = []

    def table() -> bool:       # (again while a2 is merely suspected: a loaded machine
        nonlocal rows          # stalls a node of the test profile past its 0.1 s probe)
        p = run_program(MESHCTL, "--peers", b.endpoint, "--json", "status")
        assert p.returncode == 0, p
        rows = sorted((r["node"], r["address"], r["state"], r["answered"]) for r in json.loads(p.stdout))
        return rows == want or not any(r[0] == "a2" and r[2] == "suspect" for r in rows)
    wait_until(table, what="a status with a2 not suspected")
    assert rows == want, rows
