"""``meshctl top`` in a pseudo-terminal: what a user sees on the screen.

The program's output goes through :class:`Screen`, a small VT100/xterm emulator
(cursor moves, erases, repeats: what curses sends for TERM=xterm), so the tests
read the screen as it stands, not a stream of escape sequences.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tasks_app
from harness import (
    MESHCTL,
    ClientHandle,
    NodeFactory,
    NodeProc,
    clean_env,
    make_client_app,
    run_program,
    wait_until,
)

from mesh.cli.common import EXIT_OK, EXIT_USAGE

ROWS, COLS = 30, 140


class Screen:
    """Enough of a terminal to follow curses: a grid of characters and a cursor."""

    CSI = re.compile(r"\x1b\[([?>=]?)([0-9;]*)([ -/]*)([@-~])")

    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        self.grid = [[" "] * cols for _ in range(rows)]
        self.y = self.x = 0
        self.saved = (0, 0)
        self.last = " "
        self.top, self.bottom = 0, rows - 1
        self._pending = ""

    def text(self) -> str:
        return "\n".join("".join(r).rstrip() for r in self.grid)

    def feed(self, data: str) -> None:
        s = self._pending + data
        self._pending = ""
        i = 0
        while i < len(s):
            c = s[i]
            if c == "\x1b":
                if i + 1 >= len(s):
                    self._pending = s[i:]
                    return
                nxt = s[i + 1]
                if nxt == "[":
                    m = self.CSI.match(s, i)
                    if m is None:
                        if len(s) - i < 32:            # cut in the middle: wait for the rest
                            self._pending = s[i:]
                            return
                        i += 2
                        continue
                    self._csi(m.group(1), m.group(2), m.group(4))
                    i = m.end()
                elif nxt in "()*+":                    # character set: ignore
                    i += 3
                elif nxt == "]":                       # OSC ... BEL or ST
                    end = s.find("\x07", i)
                    end2 = s.find("\x1b\\", i)
                    ends = [e for e in (end, end2) if e >= 0]
                    if not ends:
                        self._pending = s[i:]
                        return
                    i = min(ends) + (1 if min(ends) == end else 2)
                else:
                    if nxt == "7":
                        self.saved = (self.y, self.x)
                    elif nxt == "8":
                        self.y, self.x = self.saved
                    elif nxt == "D":
                        self._index()
                    elif nxt == "M":
                        self._reverse_index()
                    elif nxt == "E":
                        self.x = 0
                        self._index()
                    i += 2
                continue
            if c == "\r":
                self.x = 0
            elif c == "\n":
                self._index()
            elif c == "\b":
                self.x = max(0, self.x - 1)
            elif c == "\t":
                self.x = min(self.cols - 1, (self.x // 8 + 1) * 8)
            elif c >= " " and c != "\x7f":
                self._put(c)
            i += 1

    def _put(self, c: str) -> None:
        if self.x >= self.cols:
            self.x = 0
            self._index()
        self.grid[self.y][self.x] = c
        self.last = c
        self.x += 1

    def _index(self) -> None:
        if self.y == self.bottom:
            del self.grid[self.top]
            self.grid.insert(self.bottom, [" "] * self.cols)
        else:
            self.y = min(self.rows - 1, self.y + 1)

    def _reverse_index(self) -> None:
        if self.y == self.top:
            del self.grid[self.bottom]
            self.grid.insert(self.top, [" "] * self.cols)
        else:
            self.y = max(0, self.y - 1)

    def _csi(self, private: str, params: str, final: str) -> None:
        nums = [int(p) if p else 0 for p in params.split(";")] if params else []

        def n(i: int = 0, default: int = 1) -> int:
            return nums[i] if len(nums) > i and nums[i] else default
        if private:                        # modes (?1049h, ?25l, ...): no effect on text
            if final in "hl" and params in ("1049", "47", "1047"):
                self.grid = [[" "] * self.cols for _ in range(self.rows)]
            return
        row = self.grid[self.y]
        if final in "Hf":
            self.y, self.x = min(n(0) - 1, self.rows - 1), min(n(1) - 1, self.cols - 1)
        elif final == "A":
            self.y = max(0, self.y - n())
        elif final == "B":
            self.y = min(self.rows - 1, self.y + n())
        elif final == "C":
            self.x = min(self.cols - 1, self.x + n())
        elif final == "D":
            self.x = max(0, self.x - n())
        elif final == "G":
            self.x = min(self.cols - 1, n() - 1)
        elif final == "d":
            self.y = min(self.rows - 1, n() - 1)
        elif final == "K":
            mode = nums[0] if nums else 0
            lo, hi = {0: (self.x, self.cols), 1: (0, self.x + 1), 2: (0, self.cols)}.get(mode, (0, 0))
            row[lo:hi] = [" "] * (hi - lo)
        elif final == "J":
            mode = nums[0] if nums else 0
            if mode == 0:
                row[self.x:] = [" "] * (self.cols - self.x)
                for r in range(self.y + 1, self.rows):
                    self.grid[r] = [" "] * self.cols
            elif mode == 1:
                row[:self.x + 1] = [" "] * (self.x + 1)
                for r in range(self.y):
                    self.grid[r] = [" "] * self.cols
            else:
                self.grid = [[" "] * self.cols for _ in range(self.rows)]
        elif final == "X":
            k = min(n(), self.cols - self.x)
            row[self.x:self.x + k] = [" "] * k
        elif final == "b":
            for _ in range(n()):
                self._put(self.last)
        elif final == "@":
            k = min(n(), self.cols - self.x)
            row[self.x:] = ([" "] * k + row[self.x:])[:self.cols - self.x]
        elif final == "P":
            k = min(n(), self.cols - self.x)
            row[self.x:] = row[self.x + k:] + [" "] * k
        elif final == "L":
            for _ in range(n()):
                del self.grid[self.bottom]
                self.grid.insert(self.y, [" "] * self.cols)
        elif final == "M":
            for _ in range(n()):
                del self.grid[self.y]
                self.grid.insert(self.bottom, [" "] * self.cols)
        elif final == "r":
            self.top, self.bottom = n(0) - 1, min(n(1, self.rows), self.rows) - 1
            self.y = self.x = 0
        # m (colours), h/l (modes), others: no effect on the text


class TopProcess:
    """``meshctl ... top`` on a pseudo-terminal of ROWS x COLS."""

    def __init__(self, args: list[str], rows: int = ROWS, cols: int = COLS):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = clean_env(TERM="xterm", LANG="C.UTF-8", LC_ALL="C.UTF-8")
        env.pop("LINES", None)
        env.pop("COLUMNS", None)
        self.proc = subprocess.Popen([MESHCTL, *args], stdin=slave, stdout=slave, stderr=slave,
                                     env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.screen = Screen(rows, cols)
        self.raw = b""
        self._decoder_buf = b""

    def pump(self, timeout: float = 0.1) -> None:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:                  # EIO: the program closed the terminal
            return
        self.raw += data
        buf = self._decoder_buf + data
        try:
            text = buf.decode("utf-8")
            self._decoder_buf = b""
        except UnicodeDecodeError as e:  # a character cut in two: keep its start
            text = buf[:e.start].decode("utf-8")
            self._decoder_buf = buf[e.start:]
        self.screen.feed(text)

    def wait_for(self, check: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            text = self.screen.text()
            if check(text):
                return text
            if self.proc.poll() is not None:
                self.pump(0)
                break
        raise AssertionError(f"timed out waiting for {what}; rc={self.proc.poll()}; screen:\n"
                             f"{self.screen.text()}\nraw tail: {self.raw[-600:]!r}")

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.screen = Screen(rows, cols)        # what follows is drawn for the new size
        os.killpg(self.proc.pid, signal.SIGWINCH)

    def finish(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"meshctl top did not exit; screen:\n{self.screen.text()}")
        for _ in range(10):
            self.pump(0)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)


@pytest.fixture
def node(start_node: NodeFactory) -> NodeProc:
    return start_node(concurrency=2, name="top-node")


@pytest.fixture
def client(node: NodeProc) -> Iterator[ClientHandle]:
    c = make_client_app([node.endpoint], tasks_app)
    yield c
    c.close()


@pytest.fixture
def run_top() -> Iterator[Callable[..., TopProcess]]:
    tops: list[TopProcess] = []

    def start(*args: str, **kw: Any) -> TopProcess:
        t = TopProcess(list(args), **kw)
        tops.append(t)
        return t

    yield start
    for t in tops:
        t.close()


def _events_count(text: str) -> int:
    m = re.search(r"^events (\d+) ", text, re.MULTILINE)
    return int(m.group(1)) if m else -1


def test_top_shows_nodes_and_a_running_task_and_quits_on_q(
        node: NodeProc, client: ClientHandle, run_top: Callable[..., TopProcess], tmp_path: Path) -> None:
    top = run_top("--peers", node.endpoint, "top", "--duration", "120", "--interval", "0.3")
    # the node row (from status), then an event received: top's subscription is in place
    top.wait_for(lambda s: re.search(r"^top-node +alive +0/2 ", s, re.MULTILINE) is not None, 30,
                 "the node's row")
    screen = top.wait_for(lambda s: _events_count(s) > 0, 30, "a first event (the heartbeat)")
    assert "NODE" in screen and "BUSY" in screen and "RUNNING TASKS: 0" in screen
    gate = tmp_path / "gate"
    r = client.tasks.wait_for_file.delay(str(gate))
    try:
        screen = top.wait_for(lambda s: r.id in s, 30, "the running task's row")
        row = next(line for line in screen.splitlines() if r.id in line)
        assert "tasks_app.wait_for_file" in row and "top-node" in row, row
        assert re.search(r"\d+(\.\d)?s$|\d+m\d\ds$", row.rstrip()), row      # running for
        assert "RUNNING TASKS: 1" in screen
        top.wait_for(lambda s: re.search(r"^top-node +alive +1/2 ", s, re.MULTILINE) is not None, 30,
                     "busy 1/2 in the node's row")
    finally:
        gate.touch()
    assert r.get(timeout=30) == "opened"
    top.wait_for(lambda s: r.id not in s and "RUNNING TASKS: 0" in s, 30, "the task to leave the table")
    top.wait_for(lambda s: re.search(r"^top-node +alive +0/2 +0 +[1-9]", s, re.MULTILINE) is not None, 30,
                 "the task counted as done")
    top.send(b"q")
    assert top.finish() == EXIT_OK
    assert b"\x1b[?1049l" in top.raw or b"\x1b[?47l" in top.raw    # the terminal is given back


def test_top_shows_a_task_that_started_before_it_did(
        node: NodeProc, client: ClientHandle, run_top: Callable[..., TopProcess], tmp_path: Path) -> None:
    """No event told top about it: the node's ``active`` list does."""
    gate = tmp_path / "gate"
    r = client.tasks.wait_for_file.delay(str(gate))
    try:
        wait_until(lambda: node.status()["busy"] == 1, timeout=30, what="the gated task to start")
        top = run_top("--peers", node.endpoint, "top", "--duration", "120", "--interval", "0.3")
        screen = top.wait_for(lambda s: r.id in s, 30, "the task that was already running")
        row = next(line for line in screen.splitlines() if r.id in line)
        assert "tasks_app.wait_for_file" in row and "top-node" in row, row
    finally:
        gate.touch()
    assert r.get(timeout=30) == "opened"
    top.wait_for(lambda s: r.id not in s and "RUNNING TASKS: 0" in s, 30, "the task to leave the table")
    top.send(b"q")
    assert top.finish() == EXIT_OK


def test_top_survives_a_small_and_resized_terminal(
        node: NodeProc, run_top: Callable[..., TopProcess]) -> None:
    top = run_top("--peers", node.endpoint, "top", "--duration", "120", "--interval", "0.3",
                  rows=6, cols=20)
    screen = top.wait_for(lambda s: "top-node" in s, 30, "the node in a 6x20 terminal")
    assert all(len(line) <= 20 for line in screen.splitlines())
    top.resize(3, 8)
    top.wait_for(lambda s: s.strip().startswith("mesh"), 30, "a redraw at 3x8")
    top.resize(40, 160)
    top.wait_for(lambda s: re.search(r"^top-node +alive", s, re.MULTILINE) is not None, 30,
                 "a full redraw at 40x160")
    assert top.proc.poll() is None                    # still running: nothing crashed
    top.send(b"q")
    assert top.finish() == EXIT_OK


def test_top_quits_by_itself_after_duration(node: NodeProc, run_top: Callable[..., TopProcess]) -> None:
    top = run_top("--peers", node.endpoint, "top", "--duration", "3")
    top.wait_for(lambda s: "top-node" in s, 30, "the node's row")
    assert top.finish(timeout=30) == EXIT_OK


def test_top_without_a_terminal_exits_2_and_suggests_status(node: NodeProc) -> None:
    p = run_program(MESHCTL, "--peers", node.endpoint, "top", "--duration", "5")
    assert p.returncode == EXIT_USAGE, p
    assert p.stderr.startswith("meshctl: error: top needs a terminal"), p.stderr
    assert "meshctl status" in p.stderr and p.stdout == ""
