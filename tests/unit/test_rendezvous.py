"""Rendezvous hashing: the same answer everywhere, the holder never its own backup,
even spread, and little movement when membership changes."""
from __future__ import annotations

import collections

from mesh.rendezvous import backup_for, ranked, weight


def test_weights_are_stable_across_processes() -> None:
    # fixed values: a change here would move every task's backup in a mixed-version mesh
    assert weight("t1", "n1") == weight("t1", "n1")
    assert weight("t1", "n1") != weight("t1", "n2")
    assert weight("task-0", "node-a") == 0xC3A1785BF9746BBC


def test_the_holder_is_never_its_own_backup() -> None:
    nodes = ["a", "b", "c"]
    for i in range(300):
        b = backup_for(f"t{i}", nodes, holder="a")
        assert b in ("b", "c")
    assert backup_for("t", ["a"], "a") is None
    assert backup_for("t", [], "a") is None


def test_the_backup_is_the_best_ranked_other_node() -> None:
    nodes = ["a", "b", "c", "d"]
    for i in range(200):
        key = f"k{i}"
        order = ranked(key, nodes)
        holder = order[0]
        assert backup_for(key, nodes, holder) == order[1]
        assert backup_for(key, nodes, order[2]) == order[0]


def test_backups_spread_evenly() -> None:
    nodes = [f"n{i}" for i in range(5)]
    counts = collections.Counter(backup_for(f"task-{i}", nodes, holder="n0") for i in range(8000))
    assert set(counts) == {"n1", "n2", "n3", "n4"}
    assert all(1700 < c < 2300 for c in counts.values()), counts


def test_a_node_leaving_moves_only_its_own_tasks() -> None:
    before = [f"n{i}" for i in range(6)]
    after = [n for n in before if n != "n3"]
    moved = 0
    for i in range(5000):
        key = f"t{i}"
        b0, b1 = backup_for(key, before, "n0"), backup_for(key, after, "n0")
        if b0 != b1:
            assert b0 == "n3"          # only the tasks the leaver backed up move
            moved += 1
    assert 700 < moved < 1300          # about a fifth of them


def test_one_candidate_is_the_backup_the_hashing_would_choose() -> None:
    # (backup_for skips the hashing when one node is left: a two-node mesh)
    for i in range(50):
        key = f"t{i}"
        assert backup_for(key, ["a", "b"], "a") == "b"
        assert backup_for(key, ["b", "a"], "a") == "b"
        assert backup_for(key, ["b"], "a") == "b"          # the holder not listed
        assert backup_for(key, ["a", "a"], "a") is None
        three = ["a", "b", "c"]
        assert backup_for(key, three, "a") == max(
            ("b", "c"), key=lambda n: (weight(key, n), n))
