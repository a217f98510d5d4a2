"""Node <-> child channel: a Unix socketpair made before fork, length-prefixed frames.

Each frame is a 4-byte big-endian length and that many bytes (an encoded protocol
message). No ZeroMQ here: children never create a zmq context, and a child's last
words stay readable in the kernel buffer after it exits, so the node can always tell
a finished task from a lost one.
"""
from __future__ import annotations

import collections
import socket
import threading

HEADER = 4
# Tagged frames (never a protocol message: those are msgpack arrays, 0x9N or 0xdc):
AHEAD_TAG = b"\x00"    # + task id: the next frame is a task sent ahead (mesh/node/pool_ahead.py)
SKIP_TAG = b"\x01"     # + task id: do not start that task sent ahead (it was revoked)


def pack(*frames: bytes) -> list[bytes]:
    """Buffers for sendmsg: header, frame, header, frame, ..."""
    out: list[bytes] = []
    for f in frames:
        out.append(len(f).to_bytes(HEADER, "big"))
        out.append(f)
    return out


class FrameReader:
    """Accumulates bytes and yields complete frames."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        frames = []
        pos, end = 0, len(buf)
        while end - pos >= HEADER:
            n = int.from_bytes(buf[pos:pos + HEADER], "big")
            if end - pos - HEADER < n:
                break
            frames.append(bytes(buf[pos + HEADER:pos + HEADER + n]))
            pos += HEADER + n
        if pos:
            del buf[:pos]
        return frames


class BlockingChannel:
    """The child's end: blocking reads of whole frames (from one thread), one write
    per message (from any thread: writes are serialised)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = FrameReader()
        self.pending: collections.deque[bytes] = collections.deque()
        self._eof = False
        self._send_lock = threading.Lock()

    def recv(self) -> bytes | None:
        """The next frame, or None when the node closed the channel."""
        while not self.pending:
            if self._eof:
                return None
            data = self.sock.recv(1 << 16)
            if not data:
                return None
            self.pending.extend(self.reader.feed(data))
        return self.pending.popleft()

    def skips(self) -> list[str]:
        """Read what has arrived without waiting, and take out the skips among it
        (the task ids), leaving every other frame in its order."""
        try:
            data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            data = None
        if data == b"":
            self._eof = True
        elif data:
            self.pending.extend(self.reader.feed(data))
        if not any(f[:1] == SKIP_TAG for f in self.pending):
            return []
        out = [f[1:].decode() for f in self.pending if f[:1] == SKIP_TAG]
        self.pending = collections.deque(f for f in self.pending if f[:1] != SKIP_TAG)
        return out

    def send(self, *frames: bytes) -> None:
        data = b"".join(pack(*frames))
        with self._send_lock:
            self.sock.sendall(data)
