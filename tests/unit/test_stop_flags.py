"""StopFlags' count of SKIP frames (mesh/node/child.py): written by the node, read by
its forked children through the memory they share. The path it guards (a child reads
a SKIP before a task sent ahead) is tested with a real node in
tests/integration/test_e2e_ahead.py; these are its edges."""
from __future__ import annotations

import os

from mesh.node.child import StopFlags


def test_a_count_made_after_fork_is_seen_by_the_child() -> None:
    flags = StopFlags()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: wait, then report
        try:
            os.read(go_r, 1)
            seen = flags.skip_pending(3, 0) and not flags.skip_pending(4, 0)
            os._exit(0 if seen else 1)
        except BaseException:
            os._exit(2)
    os.close(go_r)
    flags.skip_sent(3)                             # after the fork, as the node does
    os.write(go_w, b"x")
    os.close(go_w)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_pending_until_every_skip_sent_is_read() -> None:
    flags = StopFlags()
    assert not flags.skip_pending(0, 0)
    flags.skip_sent(0)
    flags.skip_sent(0)
    assert flags.skip_pending(0, 0) and flags.skip_pending(0, 1)
    assert not flags.skip_pending(0, 2)
    assert not flags.skip_pending(1, 0)            # one count per child slot


def test_a_new_child_in_a_slot_starts_with_no_skip_sent() -> None:
    flags = StopFlags()
    flags.skip_sent(5)
    flags.arm(5)
    flags.clear(5)
    assert not flags.skip_pending(5, 0) and not flags.armed(5)


def test_the_count_wraps_at_32_bits() -> None:
    flags = StopFlags()
    at = StopFlags.SIZE + 4 * 2
    flags._mem[at:at + 4] = (2**32 - 1).to_bytes(4, "little")
    assert not flags.skip_pending(2, 2**32 - 1)
    flags.skip_sent(2)                             # 2**32 - 1 + 1 wraps to 0
    assert not flags.skip_pending(2, 2**32)        # the child's count, read mod 2**32
    assert flags.skip_pending(2, 2**32 - 1)
