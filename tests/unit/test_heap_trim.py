"""The C heap's free pages go back as a node grows (mesh/node/expiry.py, GrowthTrim)."""
from __future__ import annotations

import platform
import sys

import pytest

from mesh.node.expiry import GrowthTrim
from mesh.node.pool_child import trim_heap

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc_trim and /proc/self/statm only")

MiB = 1 << 20


def holes(mib: int) -> bytearray:
    """``mib`` MiB of the heap touched and freed, below a block still in use: the
    pages stay in the RSS (free() gives back only the top of the heap)."""
    blocks = [bytearray(64 * 1024) for _ in range(mib * 16)]   # under the mmap threshold
    last = blocks.pop()          # the last allocated: on top of the others
    del blocks
    return last


def test_a_trim_once_grown_by_a_step_gives_the_free_pages_back() -> None:
    trim_heap()                  # (what earlier tests freed would be reused, not grown)
    trim = GrowthTrim(step=4 * MiB)
    assert trim.enabled
    pin = holes(16)
    before = trim.rss()
    assert before is not None
    assert trim.look() and trim.trims == 1
    after = trim.rss()
    assert after is not None and after < before - 8 * MiB, (before, after)
    assert not trim.look() and trim.trims == 1          # no growth since: no trim
    del pin


def test_no_trim_below_the_step() -> None:
    trim = GrowthTrim(step=64 * MiB)
    pin = holes(8)
    assert not trim.look() and trim.trims == 0
    del pin
