"""Control requests to nodes (ping, status, ...), synchronous and self-contained.

Used by meshctl and by tests. Each call opens a DEALER per endpoint, sends one
Control frame to each, and gathers replies until all answered or the timeout."""
from __future__ import annotations

import time
import uuid
from typing import Any, Iterable

import zmq

from .exceptions import DecodeError
from .protocol import Control, ControlReply, Error, decode, encode


class ControlClient:
    def __init__(self, ctx: zmq.Context[Any] | None = None):
        self._own = ctx is None
        self.ctx: zmq.Context[Any] = ctx or zmq.Context()

    def close(self) -> None:
        if self._own:
            self.ctx.term()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def broadcast(self, endpoints: Iterable[str], command: str, args: dict[str, Any] | None = None,
                  timeout: float = 2.0) -> dict[str, ControlReply | str]:
        """Send ``command`` to every endpoint; return endpoint -> reply, or an error
        text for nodes that did not answer or answered garbage."""
        eps = list(dict.fromkeys(endpoints))
        socks: dict[zmq.Socket[bytes], str] = {}
        out: dict[str, ControlReply | str] = {}
        req_id = uuid.uuid4().hex
        frame = encode(Control(req_id, command, args or {}))
        poller = zmq.Poller()
        try:
            for ep in eps:
                s = self.ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(ep)
                s.send(frame)
                socks[s] = ep
                poller.register(s, zmq.POLLIN)
            deadline = time.monotonic() + timeout
            while len(out) < len(eps):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for s, _ in poller.poll(int(left * 1000) + 1):
                    ep = socks[s]
                    try:
                        msg = decode(s.recv_multipart(zmq.NOBLOCK)[-1])
                    except (DecodeError, zmq.Again) as e:
                        out[ep] = f"bad reply: {e}"
                        poller.unregister(s)
                        continue
                    if isinstance(msg, ControlReply) and msg.req_id == req_id:
                        out[ep] = msg
                        poller.unregister(s)
                    elif isinstance(msg, Error):
                        out[ep] = f"refused: {msg.code}: {msg.message}"
                        poller.unregister(s)
            for ep in eps:
                out.setdefault(ep, f"no answer within {timeout:g} s")
            return out
        finally:
            for s in socks:
                s.close(linger=0)
