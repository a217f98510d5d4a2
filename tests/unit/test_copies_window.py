"""The backup's window (mesh/node/copies.py) in-process, on a real sqlite journal: a
fast check of the bookkeeping next to tests/integration/test_e2e_backlog_copies.py
(real nodes). What stands in for the node is only what ``on_replicate`` reads: the
holder's membership record, the config, the data socket the ACK goes out on."""
from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.membership import MemberState
from mesh.node.copies import Copies
from mesh.node.naps import Nap
from mesh.node.sqlite_journal import SqliteJournal
from mesh.wire.protocol import Replicate

WINDOW = 3


class _Sent:
    def __init__(self) -> None:
        self.acks: list[bytes] = []

    def send(self, address: str, frame: bytes) -> None:
        self.acks.append(frame)


@pytest.fixture
def copies(tmp_path: Path) -> Iterator[Copies]:
    journal = SqliteJournal(str(tmp_path / "d"))
    holders = {n: types.SimpleNamespace(address=f"tcp://{n}", state=MemberState.ALIVE)
               for n in ("h", "g")}
    node: Any = types.SimpleNamespace(
        name="b", journal=journal, config=types.SimpleNamespace(queue_memory=WINDOW),
        membership=types.SimpleNamespace(member=holders.get),
        front=types.SimpleNamespace(schedule_flush=journal.commit))
    replicas: Any = types.SimpleNamespace(node=node, sockets=_Sent(), nap=Nap())
    c = Copies(replicas)
    c.start()
    yield c
    journal.close()


def _rep(bid: str, tasks: dict[str, bytes], results: tuple[str, ...] | list[str] = (),
         drop: tuple[str, ...] | list[str] = (), source: str = "h") -> Replicate:
    return Replicate(bid, source, f"tcp://{source}", list(tasks), list(tasks.values()), list(results),
                     ["SUCCESS"] * len(results), [b"r"] * len(results), list(drop))


def test_beyond_the_window_copies_go_to_disk_counted_per_holder(copies: Copies) -> None:
    copies.on_replicate(_rep("1", {f"t{i}": b"f%d" % i for i in range(10)}))
    assert len(copies.frames) == WINDOW and copies.on_disk == 7 and copies.disk == {"h": 7}
    assert copies.kept == {"h": WINDOW} and copies.holder("t0") == "h"   # in memory, per holder
    assert dict(copies.holder_of) == {t: "h" for t in copies.frames} and "t9" not in copies.holder_of
    assert copies.node.journal.copy_counts() == {"h": 7}
    assert all(copies.has(f"t{i}") for i in range(10)) and not copies.has("nope")
    assert len(copies.replicas.sockets.acks) == 1          # acknowledged


def test_the_copies_kept_for_each_holder_count_memory_and_disk(copies: Copies) -> None:
    """(status ``copies_kept_for``: what a test compares with a holder's ``held``)"""
    copies.on_replicate(_rep("1", {f"t{i}": b"f" for i in range(5)}))
    copies.on_replicate(_rep("2", {f"u{i}": b"f" for i in range(4)}, source="g"))
    assert copies.per_holder() == {"h": 5, "g": 4}             # h: 3 in memory, 2 on disk
    copies.on_replicate(_rep("3", {}, drop=["t0", "t4"]))      # one from memory, one on disk
    copies.on_replicate(_rep("4", {}, drop=["u0"]))            # g's copy: not h's to drop
    assert copies.per_holder() == {"h": 3, "g": 4}
    assert sum(copies.per_holder().values()) == len(copies.frames) + copies.on_disk


def test_a_resent_batch_or_a_new_frame_replaces_the_copy_where_it_is(copies: Copies) -> None:
    copies.on_replicate(_rep("1", {f"t{i}": b"f" for i in range(10)}))
    copies.on_replicate(_rep("1", {f"t{i}": b"f" for i in range(10)}))     # the holder's resend
    copies.on_replicate(_rep("2", {"t9": b"retry"}))                         # a retry's Submit
    assert copies.on_disk == 7 and copies.node.journal.copy_counts() == {"h": 7}
    # room in memory again: a copy already on disk stays there, not in both
    copies.on_replicate(_rep("3", {}, results=["t0", "t1"]))
    copies.on_replicate(_rep("4", {"t9": b"retry2", "t5": b"f"}))
    assert "t9" not in copies.frames and "t5" not in copies.frames
    assert copies.on_disk == 7 and len(copies.frames) == WINDOW - 2
    assert copies.kept == {"h": WINDOW - 2}       # a resend counted once, results uncounted
    assert {t: f for t, f, _ in copies.node.journal.copies_by_holder("h", 10)}["t9"] == b"retry2"


def test_results_drops_and_runs_here_remove_copies_on_disk(copies: Copies) -> None:
    copies.on_replicate(_rep("1", {f"t{i}": b"f" for i in range(10)}))
    copies.on_replicate(_rep("2", {}, results=["t5", "t0"], drop=["t6"]))
    assert copies.on_disk == 5 and len(copies.frames) == WINDOW - 1
    assert copies.kept == {"h": WINDOW - 1}
    copies.forget_copy("t7")                  # it ran here: goes at the next tick
    assert not copies.has("t7")
    copies.tick()
    assert copies.on_disk == 4 and copies.node.journal.copy_counts() == {"h": 4}
    copies.handed_on("t8", "h")               # handed to its holder: kept
    copies.handed_on("t9", "x")               # handed elsewhere: goes
    assert copies.on_disk == 3 and sorted(copies.node.journal.copy_holders(
        [f"t{i}" for i in range(10)])) == [("t3", "h"), ("t4", "h"), ("t8", "h")]


def test_a_drop_takes_only_the_copy_kept_for_its_sender(copies: Copies) -> None:
    """g handed t0..t9 to h and h copied them here (in memory up to the window, the
    rest on disk); g's drop of its old copies, coming after, must not take h's: else a
    task shed g -> h (or back) has no copy while its backup thinks it has one."""
    copies.on_replicate(_rep("1", {f"t{i}": b"f" for i in range(10)}))
    copies.on_replicate(_rep("2", {}, drop=[f"t{i}" for i in range(10)], source="g"))
    assert len(copies.frames) == WINDOW and copies.on_disk == 10 - WINDOW
    assert len(copies.node.journal.copy_holders([f"t{i}" for i in range(10)])) == 10 - WINDOW
    copies.on_replicate(_rep("3", {}, drop=["t0", "t9"]))      # h's own drop: gone
    assert "t0" not in copies.frames and copies.on_disk == 10 - WINDOW - 1


def test_two_holders_of_one_id_each_keep_their_copy(copies: Copies) -> None:
    """Two nodes both hold t0..t4 (a handoff given up on and answered late, or whose
    receiver crashed and came back; a takeover of a holder that was not dead) and
    this node is the backup of both (the ids' highest-ranked node other than each):
    each keeps its copy. A drop, a reclaim or a handoff on by one of them takes only
    its own: until 2026-12 the second copy replaced the first, and g's drop left h's
    tasks with no copy (lost with h's machine). In memory (t0..t2) and on disk."""
    ids = [f"t{i}" for i in range(5)]
    copies.on_replicate(_rep("1", {t: b"h" for t in ids}))
    copies.on_replicate(_rep("2", {t: b"g" for t in ids}, source="g"))
    assert copies.per_holder() == {"h": 5, "g": 5}
    assert copies.holders("t0") == ["h", "g"] and copies.in_memory() == 2 * WINDOW
    copies.on_replicate(_rep("3", {}, drop=ids, source="g"))      # g handed them on
    assert copies.per_holder() == {"h": 5}
    assert all(copies.has(t) for t in ids) and copies.holders("t0") == ["h"]
    assert sorted(copies.node.journal.copy_holders(ids)) == [("t3", "h"), ("t4", "h")]
    # g takes them again, then reclaims them after its restart: h's stay (h may hold
    # them: asked too, it answers for itself; or its drop takes them)
    copies.on_replicate(_rep("4", {t: b"g2" for t in ids}, source="g"))
    assert copies.reclaim("g", ids) == set(ids)
    assert copies.per_holder() == {"h": 5}
    assert {t: f for t, f, _ in copies.node.journal.copies_by_holder("h", 10)} == \
        {"t3": b"h", "t4": b"h"}
    assert copies.frames["t0"][0] == b"h"
    # h's own drop: gone (g's drop before did not take them, h's does)
    copies.on_replicate(_rep("5", {}, drop=["t0", "t4"]))
    assert copies.per_holder() == {"h": 3} and not copies.has("t0") and not copies.has("t4")


def test_a_result_from_either_holder_replaces_every_copy_of_the_id(copies: Copies) -> None:
    """(Results are first-wins by id: a task both holders ran is done, delivered once;
    neither holder's death runs it again here.)"""
    ids = [f"t{i}" for i in range(5)]
    copies.on_replicate(_rep("1", {t: b"h" for t in ids}))
    copies.on_replicate(_rep("2", {t: b"g" for t in ids}, source="g"))
    copies.on_replicate(_rep("3", {}, results=["t0", "t4"], source="g"))
    assert copies.per_holder() == {"h": 3, "g": 3}
    assert not copies.has("t0") and not copies.has("t4")
    copies.handed_on("t1", "g")           # this node held t1 and handed it to g: g's stays
    assert copies.holders("t1") == ["g"]
    copies.forget_copy("t2")              # it ran here: every copy goes
    copies.tick()
    assert copies.per_holder() == {"h": 1, "g": 2} and not copies.has("t2")
    assert copies.in_memory() + copies.on_disk == 3 and not copies.more


def test_copies_from_a_node_not_yet_a_member_wait_quietly(copies: Copies,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    # a holder (re)started a moment ago copies before this node's membership has heard
    # of it: nothing kept or acknowledged (it sends them again), and no WARNING (a
    # new user read it as a misconfiguration on every restart); a member at another
    # address is still refused with one
    caplog.set_level("INFO", logger="mesh.node")
    sent: Any = copies.replicas.sockets
    copies.on_replicate(_rep("1", {"t0": b"f"}, source="new"))
    assert not copies.frames and not sent.acks
    assert [r.levelname for r in caplog.records] == ["INFO"], caplog.text
    assert "wait: not a member here yet" in caplog.text
    caplog.clear()
    rep = _rep("2", {"t1": b"f"})
    copies.on_replicate(dataclasses.replace(rep, source_addr="tcp://elsewhere"))
    assert not copies.frames and not sent.acks
    assert [r.levelname for r in caplog.records] == ["WARNING"], caplog.text
