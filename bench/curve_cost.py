"""What CurveZMQ costs on its own: the transport under mesh, with and without keys.

One process, a ROUTER (the node's front door: a CURVE server with pyzmq's ZAP
authenticator, read with ``copy=False`` and the ``User-Id`` of each message, as a
keyed node reads it) and a DEALER (a client) on a loopback TCP port:

  round trip   one small frame there and back, sequentially (mesh's p50 path)
  batches      256 frames of 200 bytes per message, one way, then one reply
               (mesh's throughput path: the client batches submits)

Each is measured without and with keys, alternating, median of ``--repeat``. The
figures are per frame (batches) and per round trip, in microseconds of wall time.

Run:  .venv/bin/python -m bench.curve_cost [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator


def _pair(ctx: zmq.Context[Any], keyed: bool) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    router: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    dealer: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
    if keyed:
        spub, ssec = zmq.curve_keypair()
        cpub, csec = zmq.curve_keypair()
        router.setsockopt(zmq.CURVE_SERVER, 1)
        router.setsockopt(zmq.CURVE_SECRETKEY, ssec)
        router.setsockopt(zmq.ZAP_DOMAIN, b"mesh")
        dealer.setsockopt(zmq.CURVE_SERVERKEY, spub)
        dealer.setsockopt(zmq.CURVE_PUBLICKEY, cpub)
        dealer.setsockopt(zmq.CURVE_SECRETKEY, csec)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    return router, dealer


def _recv(router: zmq.Socket[bytes], keyed: bool) -> list[bytes]:
    if keyed:                       # as a keyed node: frames with metadata, the key's User-Id
        frames = router.recv_multipart(copy=False)
        frames[1].get("User-Id")
        return [f.bytes for f in frames]
    return router.recv_multipart()


def measure(keyed: bool, trips: int, batches: int) -> tuple[float, float]:
    ctx: zmq.Context[Any] = zmq.Context()
    auth = None
    if keyed:
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    router, dealer = _pair(ctx, keyed)
    try:
        dealer.send(b"hello")
        ident = _recv(router, keyed)[0]
        small = b"x" * 60
        t0 = time.perf_counter()
        for _ in range(trips):
            dealer.send(small)
            _recv(router, keyed)
            router.send_multipart([ident, small])
            dealer.recv()
        rtt = (time.perf_counter() - t0) / trips * 1e6
        batch = [b"y" * 200] * 256
        t0 = time.perf_counter()
        for _ in range(batches):
            dealer.send_multipart(batch)
            _recv(router, keyed)
            router.send_multipart([ident, small])
            dealer.recv()
        per_frame = (time.perf_counter() - t0) / (batches * len(batch)) * 1e6
        return rtt, per_frame
    finally:
        router.close(0)
        dealer.close(0)
        if auth is not None:
            auth.stop()
        ctx.term()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.curve_cost", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--trips", type=int, default=5000)
    ap.add_argument("--batches", type=int, default=400)
    args = ap.parse_args(argv)
    got: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.repeat):
        for keyed in (False, True):
            got[keyed].append(measure(keyed, args.trips, args.batches))
    print(f"{'':10} {'round trip us':>14} {'us per frame (batches of 256)':>30}")
    for keyed in (False, True):
        rtt = statistics.median(r for r, _ in got[keyed])
        frame = statistics.median(f for _, f in got[keyed])
        print(f"{'keys' if keyed else 'no keys':10} {rtt:14.1f} {frame:30.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
