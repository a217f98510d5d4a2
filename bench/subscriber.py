"""A monitoring subscriber for the events benchmark: subscribes to every event and
result of one node and counts what arrives, until SIGTERM; prints the count.

    python -m bench.subscriber tcp://127.0.0.1:PORT
"""
from __future__ import annotations

import signal
import sys
from typing import Any

import zmq


def main() -> int:
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(sys.argv[1])
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    count = 0
    while not stop:
        if sub.poll(100):
            while True:
                try:
                    sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                count += 1
    print(count, flush=True)
    sub.close(linger=0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
