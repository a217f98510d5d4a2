"""bench.run's RSS sampler: it finds a real meshnode's children without scanning every
process, and takes no sample while paused (the latency phase: docs/performance.md,
"Round 8a"). No timing is asserted."""
from __future__ import annotations

import time
from typing import Any

import psutil
from harness import wait_until

from bench.run import RssSampler, descendants


def _children(pid: int) -> set[int]:
    return {c.pid for c in psutil.Process(pid).children(recursive=True)}


def test_descendants_are_the_node_s_children(start_node: Any) -> None:
    node = start_node(concurrency=2)
    wait_until(lambda: len(_children(node.pid)) >= 2, what="the node's children")
    found = set(descendants(node.pid))
    assert found == _children(node.pid)
    assert len(found) >= 2 and node.pid not in found


def test_a_paused_sampler_takes_no_sample(start_node: Any) -> None:
    node = start_node(concurrency=2)
    wait_until(lambda: len(_children(node.pid)) >= 2, what="the node's children")
    sampler = RssSampler(node.pid, interval=0.005)
    sampler.start()
    try:
        wait_until(lambda: sampler.samples >= 3, what="three samples")
        assert sampler.peak > 0 and sampler.peak_procs >= 3      # the node and 2 children
        sampler.pause()                     # takes one sample, then none
        paused_at = sampler.samples
        time.sleep(0.2)                     # ~40 intervals
        assert sampler.samples == paused_at
        sampler.resume()
        wait_until(lambda: sampler.samples > paused_at, what="a sample after resume")
    finally:
        sampler.stop()
    assert not sampler.is_alive()
