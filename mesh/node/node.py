"""The node: the daemon behind ``meshnode``.

One asyncio loop owns every socket; its loops (front door, pool, ticker) live in one
TaskGroup. The front door is a ROUTER bound on ``--bind``: clients send Submit and
Control frames to it and get Ack/Result/Release/Error/ControlReply back. A zmq message
may carry several frames, each one protocol message handled on its own; a frame that
cannot be decoded is refused and logged, and the node keeps serving everyone else.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import msgpack
import psutil
import zmq

from mesh import __version__, states
from mesh.config import advertised_endpoint
from mesh.exceptions import DecodeError, MeshError
from mesh.membership import MESSAGE_TYPES, Member, Membership, MemberState, profile
from mesh.node.beat import Beat
from mesh.node.events import (
    FINAL_EVENTS,
    HEARTBEAT_INTERVAL,
    Publisher,
    received_fields,
    result_fields,
    sent_fields,
)
from mesh.node.journal import Journal, JournalError
from mesh.node.peers import PeerSockets, ZmqTransport
from mesh.node.pool import Entry, Pool, PoolEvents
from mesh.node.remote import RemoteControl
from mesh.node.zmqloop import SocketDriver
from mesh.ratelimit import TokenBucket, parse_rate
from mesh.web import commands as web_commands
from mesh.wire import codec
from mesh.wire.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Control,
    Error,
    Release,
    Result,
    Submit,
    decode,
    encode,
)

if TYPE_CHECKING:
    from mesh.app import Mesh
    from mesh.config import Config
    from mesh.web.component import HttpServer

log = logging.getLogger("mesh.node")

REANNOUNCE_INTERVAL = 10.0   # s between mDNS re-announcements of a node with no live peer
SHED_AFTER = 0.05      # s a queued task may wait before the node looks for a peer with room
SHED_INTERVAL = 0.05
MAX_SHED_CHILDREN = 1024   # a peer's gossiped pool size is believed up to this
MAX_REDELIVERIES = 3       # reject_on_worker_lost: runs of a task whose child keeps dying
EXPIRE_INTERVAL = 1.0      # s between sweeps of expired results from the journal
EXPIRE_BATCH = 10_000      # results deleted per sweep at most (more than a node finishes per s)
SWEEP_INTERVAL = 30.0      # s between closing the sockets of forgotten peers
MAX_WATCHERS = 64          # processes told of one task's result when it is done
RESULT_COMMIT_DELAY = 0.002  # s a batch of results may wait for its journal commit



class NodeStartError(MeshError):
    """The node could not start (address in use, bad data dir, ...)."""


class _RateLimitedLog:
    """Log at most ``burst`` messages per ``window`` seconds; count the rest."""

    def __init__(self, what: str, burst: int = 20, window: float = 10.0):
        self.what = what
        self.burst, self.window = burst, window
        self.start, self.count, self.suppressed = 0.0, 0, 0

    def warning(self, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.start > self.window:
            if self.suppressed:
                log.warning("... %d more %s not logged", self.suppressed, self.what)
            self.start, self.count, self.suppressed = now, 0, 0
        self.count += 1
        if self.count <= self.burst:
            log.warning(fmt, *args)
        else:
            self.suppressed += 1


class Node(PoolEvents):
    def __init__(self, app: "Mesh", config: "Config"):
        self.app = app
        self.config = config
        self.name = config.node_name
        self.address = config.bind
        self.started_at = time.time()
        self.held: dict[str, Entry] = {}         # accepted, not finished
        self.counts: collections.Counter[str] = collections.Counter()
        self.refused = 0
        self.rate = 0.0                           # finished tasks/s, smoothed
        self.ready = asyncio.Event()
        self.discovery: Any = None
        self.membership: Membership | None = None
        self.transport: ZmqTransport | None = None
        self._had_peers = False
        self._reannounced = 0.0
        # a digest of the registered task names: load is only shed to peers with the same
        self.tasks_digest = hashlib.sha1("\n".join(sorted(app.tasks)).encode()).hexdigest()[:12]
        self._shed_to: dict[str, tuple[int, int]] = {}   # peer -> (its meta version, tasks sent since)
        self.discovered: dict[str, str] = {}      # node id -> endpoint, heard on mDNS
        self._stop = asyncio.Event()
        self._stop_count = 0
        self._acks: dict[bytes, list[str]] = {}
        self.journal: Journal | None = None
        self.beat: Beat | None = None             # periodic tasks (mesh/node/beat.py)
        self._pending: list[Entry] = []          # accepted this pass: to the pool once journalled
        self._commit_timer: asyncio.TimerHandle | None = None
        self._watchers: dict[str, set[bytes]] = {}   # task id -> who asked to hear its result
        self._expired_at = 0.0
        self.events = Publisher(None, self.name)  # a socket once run() binds one
        self.events_endpoint = ""
        self._heartbeat_at = 0.0
        self._swept_at = time.monotonic()
        self._reclaim = profile(config.profile).dead_node_reclaim
        self.remote = RemoteControl(self)
        self.history = web_commands.install(self)   # the dashboard's questions (mesh/web)
        self.http: HttpServer | None = None
        self._out: dict[bytes, list[bytes]] = {}
        self._flush_scheduled = False
        self._badlog = _RateLimitedLog("refused frames")
        self._faillog = _RateLimitedLog("tasks refused at intake")
        self._proc = psutil.Process()
        self._child_procs: dict[int, psutil.Process] = {}
        self._cpu = 0.0
        self._rss = 0
        self._sampled = 0.0

    # -- lifecycle --------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until stop() or SIGTERM/SIGINT; then drain and return."""
        ctx: zmq.Context[Any] = zmq.Context()
        front = pool = xpub = None
        try:
            try:
                os.makedirs(self.config.data_path, exist_ok=True)
            except OSError as e:
                raise NodeStartError(f"cannot create data dir {self.config.data_path}: {e.strerror}") from e
            if self.config.journal:
                try:
                    self.journal = Journal(self.config.data_path, durable=self.config.journal_fsync)
                except JournalError as e:
                    raise NodeStartError(str(e)) from e
                self.remote.load_revoked()
            try:
                self.beat = Beat(self)
            except MeshError as e:
                raise NodeStartError(f"the app's periodic tasks: {e}") from e
            await self.beat.start(self)
            front = ctx.socket(zmq.ROUTER)
            front.setsockopt(zmq.LINGER, 2000)
            front.setsockopt(zmq.ROUTER_HANDOVER, 1)
            front.setsockopt(zmq.SNDHWM, 0)
            front.setsockopt(zmq.RCVHWM, 100_000)
            front.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size * 2)
            try:
                front.bind(self.config.bind)
            except zmq.ZMQError as e:
                raise NodeStartError(f"cannot bind {self.config.bind}: {e.strerror}") from e
            self.address = advertised_endpoint(front.getsockopt_string(zmq.LAST_ENDPOINT),
                                               self.config.advertise)
            self.front = SocketDriver(front, self._on_front, "front")
            if self.config.events:
                xpub = ctx.socket(zmq.XPUB)
                xpub.setsockopt(zmq.LINGER, 500)
                xpub.setsockopt(zmq.SNDHWM, 10_000)
                host = self.config.bind.rsplit(":", 1)[0]
                try:
                    xpub.bind(f"{host}:*")     # an ephemeral port, advertised (ping, members)
                except zmq.ZMQError as e:
                    raise NodeStartError(f"cannot bind an events port on {host}: {e.strerror}") from e
                port = xpub.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1]
                self.events_endpoint = self.address.rsplit(":", 1)[0] + ":" + port
                self.events = Publisher(xpub, self.name)
                self.events_driver = SocketDriver(xpub, self.events.on_subscription, "events")
            pool = Pool(self.app, self.config, self.name, self, self.config.pool_size)
            self.pool = pool
            for name, task in self.app.tasks.items():
                rate = parse_rate(task.options.rate_limit)
                if rate is not None:
                    pool.limits[name] = TokenBucket(rate)
            self._recover()
            peers = PeerSockets(ctx, f"node:{self.name}".encode())
            self.transport = ZmqTransport(peers, self.address)
            self.membership = Membership(
                self.name, self.address, profile(self.config.profile),
                self.transport, on_change=self._on_member_change,
                get_local_meta=self._local_meta)
            if self.config.peers:
                self.membership.join(self.config.peers)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            if self.config.http:                 # dashboard, API, /metrics (mesh/web)
                from mesh.web.component import HttpServer
                self.http = HttpServer(self)
                await self.http.start()
            async with asyncio.TaskGroup() as tg:
                loops = [tg.create_task(self.front.run(), name="front"),
                         tg.create_task(pool.run(), name="pool"),
                         tg.create_task(self._ticker(), name="ticker"),
                         tg.create_task(self.membership.run(), name="membership"),
                         tg.create_task(self._shedder(), name="shedder"),
                         tg.create_task(self.beat.run(), name="beat")]
                if self.config.mdns:
                    loops.append(tg.create_task(self._discover(), name="discovery"))
                if xpub is not None:
                    loops.append(tg.create_task(self.events_driver.run(), name="events"))
                log.info("node %s ready on %s: %d children, tasks: %s", self.name, self.address,
                         pool.size, ", ".join(sorted(self.app.tasks)) or "(none)")
                self.ready.set()
                self.events.emit("node-online", **self._node_fields())
                await self._stop.wait()
                log.info("node %s stopping: finishing running tasks (up to %.0f s)",
                         self.name, self.config.shutdown_timeout)
                self.membership.leave()          # others see "left" at once and stop sending
                self._release(pool.begin_stop(), "node is shutting down")
                self._flush()
                await pool.finish(self.config.shutdown_timeout)
                self._flush()
                self.events.emit("node-offline", **self._node_fields())   # after the last task
                for t in loops:
                    t.cancel()
            log.info("node %s stopped", self.name)
        finally:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.http is not None:
                await self.http.stop()
            self.history.close()
            if pool is not None:
                pool.close()
            if self.transport is not None:
                self.transport.close()
            if front is not None:
                front.close(linger=2000)
            if xpub is not None:
                xpub.close(linger=500)
            ctx.term()
            if self.journal is not None:
                self.journal.close()

    async def _discover(self) -> None:
        """Announce this node on mDNS and hear of others (mDNS only introduces nodes;
        membership decides who is alive). Runs until cancelled; says goodbye on exit."""
        from mesh.discovery.mdns import Discovery, DiscoveryError
        disc = Discovery(self.name, self.address, self._on_discovered,
                         interfaces=list(self.config.mdns_interfaces) or None)
        try:
            await disc.start()
        except DiscoveryError as e:
            log.warning("mDNS discovery is off: %s (use --peers)", e)
            return
        self.discovery = disc
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.discovery = None
            await asyncio.shield(disc.stop())

    def _on_discovered(self, node_id: str, endpoint: str, props: dict[str, str]) -> None:
        if endpoint == self.address:
            return
        if self.discovered.get(node_id) != endpoint:
            log.info("mDNS: found node %s at %s", node_id, endpoint)
            self.discovered[node_id] = endpoint
        if self.membership is not None:   # new, or announcing again after a cut: (re)join
            self.membership.join([endpoint])

    # -- membership -------------------------------------------------------------------
    def _on_member_change(self, member: Member, old: MemberState | None, new: MemberState) -> None:
        if new == MemberState.ALIVE and old in (None, MemberState.DEAD, MemberState.LEFT) \
                and member.id != self.name:
            self.remote.share_with(member.address)   # what we revoked must not run there
        if old != new:
            level = logging.WARNING if new in (MemberState.DEAD, MemberState.SUSPECT) else logging.INFO
            log.log(level, "member %s (%s): %s -> %s", member.id, member.address,
                    old.value if old else "new", new.value)

    def _local_meta(self) -> dict[str, Any]:
        """This node's load, gossiped to the mesh (placement reads it)."""
        busy, total, queued = self.load()
        return {"busy": busy, "total": total, "queued": queued, "rate": round(self.rate, 1),
                "cpu": round(self._cpu), "rss": self._rss, "tasks": self.tasks_digest,
                "events": self.events_endpoint, "clock": self.events.clock,
                "beat": self.beat.advertised() if self.beat is not None else ""}

    async def _shedder(self) -> None:
        while True:
            await asyncio.sleep(SHED_INTERVAL)
            try:
                self.shed(time.time())
            except Exception:
                log.exception("shedding failed")

    def shed(self, now: float) -> int:
        """Give queued (not started) tasks that have waited longer than SHED_AFTER
        to peers with room: by their gossiped load, fewer tasks than twice their
        children (a short queue on a free node beats waiting here behind a stuck
        child), less what we sent them since that report. The owners resend them
        there (Release with a target). Returns how many moved."""
        pool, ms = self.pool, self.membership
        if not pool.queue or pool.idle or ms is None or self._stop.is_set():
            return 0
        if now - min(e.received for _, _, e in pool.queue) < SHED_AFTER:
            return 0
        moved: list[tuple[Entry, str]] = []
        for m in ms.alive_members(include_self=False):
            meta = m.meta
            if meta.get("tasks") != self.tasks_digest:
                continue                 # it may not have our tasks: they would fail there
            try:
                total = min(int(meta.get("total", 0)), MAX_SHED_CHILDREN)   # a peer may lie
                free = 2 * total - int(meta.get("busy", 0)) - int(meta.get("queued", 0))
            except (TypeError, ValueError):
                continue
            version, sent = self._shed_to.get(m.id, (-1, 0))
            if version != m.meta_version:    # a fresh report: it counts what we sent
                sent = 0
            room = free - sent
            taken = 0
            while room > taken and pool.queue:
                moved.append((pool.take_next(), m.address))
                taken += 1
            if taken:
                self._shed_to[m.id] = (m.meta_version, sent + taken)
            if not pool.queue:
                break
        by_target: dict[tuple[bytes, str], list[str]] = {}
        self._forget([e for e, _ in moved])
        for entry, target in moved:
            by_target.setdefault((entry.client, target), []).append(entry.task_id)
        for (client, target), ids in by_target.items():
            self._reply(client, encode(Release(ids, self.name, "shed to a node with room", target)))
        if moved and self.events.wants("task-rejected"):
            for entry, target in moved:
                self.events.emit("task-rejected", uuid=entry.task_id, name=entry.name,
                                 requeue=True, target=target, reason="shed to a node with room")
        if moved:
            log.info("shed %d queued task(s) to %d peer(s) with room", len(moved),
                     len({t for _, t in moved}))
        return len(moved)

    def members(self) -> list[dict[str, Any]]:
        """Every member this node knows, for the ``members`` control command."""
        assert self.membership is not None
        out = []
        for m in self.membership.members():
            if m.id == self.name:
                load = self.load()
                state = "left" if self._stop.is_set() else m.state.value
            else:
                meta = m.meta
                load = [meta.get("busy", 0), meta.get("total", 0), meta.get("queued", 0)]
                state = m.state.value
            out.append({"node": m.id, "endpoint": m.address, "state": state,
                        "incarnation": m.incarnation, "load": load, "meta": dict(m.meta)})
        return out

    def stop(self) -> None:
        """Begin a warm shutdown; a second call (second Ctrl-C) cuts it short."""
        self._stop_count += 1
        if self._stop_count == 1:
            self._stop.set()
        elif self._stop_count == 2:
            log.warning("second stop request: not waiting for running tasks")
            self.pool.stopping = True
            for c in self.pool.children.values():
                if c.entry is not None:
                    c.killed_for = "shutdown"
                os.kill(c.pid, signal.SIGKILL)

    def stop_soon(self) -> None:
        """Stop once the current replies are out (the ``shutdown`` command)."""
        asyncio.get_running_loop().call_later(0.05, self.stop)

    async def _ticker(self) -> None:
        """Once a second: throughput and CPU/memory figures for status; and, when
        this node had peers and now sees none alive, an mDNS re-announcement."""
        last_done, last_t = self.processed(), time.monotonic()
        self._proc.cpu_percent(None)
        while True:
            await asyncio.sleep(1.0)
            now, done = time.monotonic(), self.processed()
            inst = (done - last_done) / max(now - last_t, 1e-6)
            self.rate = inst if self.rate == 0 else 0.5 * self.rate + 0.5 * inst
            last_done, last_t = done, now
            self._sample_resources()
            if now - self._heartbeat_at >= HEARTBEAT_INTERVAL:
                self._heartbeat_at = now
                self._merge_clocks()
                self.events.emit("node-heartbeat", **self._node_fields())
            if now - self._swept_at > min(SWEEP_INTERVAL, self._reclaim / 2):
                self._swept_at = now
                self.close_departed_peers()
            if now - self._expired_at > min(EXPIRE_INTERVAL, self.config.result_expires / 2):
                self._expired_at = now
                self.expire_results()
            await self._reannounce_if_alone(now)

    def close_departed_peers(self) -> int:
        """Close the sockets of peers membership has forgotten (dead or left for
        longer than its reclaim time): churn (DHCP, containers) must not grow file
        descriptors for ever. Seeds keep theirs. How many were closed."""
        if self.transport is None or self.membership is None:
            return 0
        known = {m.address for m in self.membership.members()}
        known.update(self.config.peers)
        gone = [a for a in self.transport.sockets.socks if a not in known]
        for address in gone:
            self.transport.sockets.forget(address)
        if gone:
            log.info("closed the sockets of %d departed peer(s)", len(gone))
        return len(gone)

    def processed(self) -> int:
        """Tasks finished here (succeeded, failed or revoked) since start."""
        c = self.counts
        return c[states.SUCCESS] + c[states.FAILURE] + c[states.REVOKED]

    def _merge_clocks(self) -> None:
        """Lamport: our clock is never behind a peer's (gossiped in its meta)."""
        if self.membership is None:
            return
        for m in self.membership.alive_members(include_self=False):
            c = m.meta.get("clock")
            if type(c) is int:
                self.events.tick(c)

    def _node_fields(self) -> dict[str, Any]:
        busy, total, queued = self.load()
        return {"address": self.address, "freq": HEARTBEAT_INTERVAL, "active": busy,
                "total": total, "queued": queued, "processed": self.processed(),
                "tasks_per_s": round(self.rate, 1), "cpu_percent": round(self._cpu, 1),
                "rss_bytes": self._rss, "loadavg": list(os.getloadavg()), "pid": os.getpid(),
                "version": __version__}

    def expire_results(self) -> int:
        """Delete results older than result_expires from the journal."""
        if self.journal is None:
            return 0
        total = 0
        try:         # bounded per call, so the loop is never held for long
            total = self.journal.expire(time.time() - self.config.result_expires, EXPIRE_BATCH)
        except JournalError as e:
            log.error("journal: expiring old results failed: %s", e)
            self._journal_failed(e)        # tasks accepted this pass were rolled back too
        if total:
            log.info("journal: %d result(s) older than %g s expired", total, self.config.result_expires)
        return total

    async def _reannounce_if_alone(self, now: float) -> None:
        """A node cut off (or whose peers all restarted) announces itself again, at
        most every REANNOUNCE_INTERVAL, so that mDNS-only meshes heal."""
        if self.discovery is None or self.membership is None:
            return
        alone = len(self.membership.alive_members(include_self=False)) == 0
        if not alone:
            self._had_peers = True
        elif self._had_peers and now - self._reannounced > REANNOUNCE_INTERVAL:
            self._reannounced = now
            log.info("no peer is alive: announcing this node on mDNS again")
            try:
                await self.discovery.reannounce()
            except Exception as e:
                log.warning("mDNS re-announce failed: %s", e)

    def _sample_resources(self) -> None:
        pids = set(self.pool.pids())
        for pid in list(self._child_procs):
            if pid not in pids:
                del self._child_procs[pid]
        cpu, rss = self._proc.cpu_percent(None), self._proc.memory_info().rss
        for pid in pids:
            p = self._child_procs.get(pid)
            try:
                if p is None:
                    p = self._child_procs[pid] = psutil.Process(pid)
                    p.cpu_percent(None)
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
            except psutil.Error:
                pass
        self._cpu, self._rss = cpu, rss
        self._sampled = time.monotonic()

    # -- front door -------------------------------------------------------------------
    def _on_front(self, frames: list[bytes]) -> None:
        """A zmq message from a peer: its routing id, then one protocol message per frame."""
        ident = frames[0]
        if len(frames) < 2:
            self.refused += 1
            self._badlog.warning("dropped an empty message from %r", ident[:16])
            return
        for i in range(1, len(frames)):
            self._on_message(ident, frames[i])

    def _on_message(self, ident: bytes, frame: bytes) -> None:
        try:
            msg = decode(frame, self.config.max_message_size)
        except DecodeError as e:
            self.refused += 1
            code = "too-large" if len(frame) > self.config.max_message_size else "decode"
            self._badlog.warning("refused a frame of %d bytes from %r: %s", len(frame), ident[:16], e)
            self._refuse(ident, code, str(e),
                         _guess_ref(frame) if code == "decode" else None)
            return
        if type(msg) is Submit:
            self._intake(ident, msg, frame)
        elif type(msg) in MESSAGE_TYPES:
            if self.transport is not None:
                self.transport.deliver(ident.hex(), msg)
        elif type(msg) is Control:
            self.remote.handle(ident, msg)
        else:
            self.refused += 1
            self._refuse(ident, "bad-request", f"a node does not accept {type(msg).__name__} messages")

    def _refuse(self, ident: bytes, code: str, message: str, ref: str | None = None) -> None:
        self._reply(ident, encode(Error(code=code, message=message[:500], ref=ref)))

    def _reply(self, ident: bytes, frame: bytes) -> None:
        """Queue a frame for a peer. Frames for one peer go out together, as one
        multipart zmq message, once the loop has finished what it is doing."""
        out = self._out.get(ident)
        if out is None:
            out = self._out[ident] = []
        out.append(frame)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Flush once this loop pass has done its work, so the replies it produced for
        one peer leave together. (Delaying further to batch more cost latency: asyncio
        rounds timer waits up to whole milliseconds, and throughput did not improve.)"""
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        journal = self.journal
        if journal is not None and journal.in_tx:
            if self._pending:        # no task is acknowledged before it is journalled
                self._commit()
            elif self._commit_timer is None:
                # only results (and forgets) in this batch: they go out now and are
                # committed within RESULT_COMMIT_DELAY, with the next intake's commit
                # if one comes sooner. A node killed in that window runs those tasks
                # again after a restart (at least once), and their owners already
                # have their results.
                self._commit_timer = asyncio.get_running_loop().call_later(
                    RESULT_COMMIT_DELAY, self._commit)
        if self._pending:
            pending, self._pending = self._pending, []
            revoked = self.remote.revoked
            for entry in pending:
                if entry.task_id in revoked:     # revoked in the same loop pass
                    self.task_failed(entry, "TaskRevokedError", f"task {entry.task_id} was "
                                     "revoked", states.REVOKED)
                else:
                    self.pool.submit(entry)
        if self._acks:                 # only for tasks still held: a result implies the ack
            load = self.load()
            held = self.held
            for ident, ids in self._acks.items():
                ids = [t for t in ids if t in held]
                if ids:
                    self._reply(ident, encode(Ack(ids, self.name, load)))
            self._acks = {}
        out, self._out = self._out, {}
        send = self.front.send
        for ident, frames in out.items():
            for i in range(0, len(frames), 512):
                send([ident, *frames[i:i + 512]])

    def _intake(self, ident: bytes, msg: Submit, frame: bytes) -> None:
        if self._stop.is_set():
            self._reply(ident, encode(Release([msg.task_id], self.name, "node is shutting down")))
            return
        tid = msg.task_id
        acks = self._acks.get(ident)
        if acks is None:
            acks = self._acks[ident] = []
            if not self._flush_scheduled:
                self._schedule_flush()
        acks.append(tid)
        held = self.held.get(tid)
        if held is not None:           # a resend of a task we already hold
            held.client = ident        # its owner may have reconnected through another link
            return
        if tid in self.remote.revoked:
            self._fail(ident, tid, "TaskRevokedError", f"task {tid} was revoked", states.REVOKED)
            self.events.emit("task-revoked", uuid=tid, name=msg.name, expired=False,
                             terminated=False)
            return
        task = self.app.tasks.get(msg.name)
        if task is None:
            known = ", ".join(sorted(self.app.tasks)[:20])
            self.events.emit("task-rejected", uuid=tid, name=msg.name, requeue=False,
                             reason="not registered")
            self._fail(ident, tid, "NotRegistered", f"task {msg.name!r} is not registered on node "
                       f"{self.name} (registered: {known or 'none'})")
            return
        now = time.time()
        journal = self.journal
        if journal is not None:
            try:
                if not journal.add(tid, ident, frame, now):
                    stored = journal.get(tid)
                    if stored is not None and stored.result is not None:
                        self.counts["answered_from_journal"] += 1   # finished here already
                        self._reply(ident, stored.result)
                        return
                    journal.replace(tid, ident, frame, now)
            except JournalError as e:
                self._refuse(ident, "journal", f"node {self.name} cannot write its journal, so it "
                             f"did not accept task {tid}: {e}", tid)
                log.error("journal write failed: %s (task %s refused)", e, tid)
                self.events.emit("task-rejected", uuid=tid, name=msg.name, requeue=True,
                                 reason=f"journal: {e}")
                return
        override = self.remote.time_limits.get(msg.name) if self.remote.time_limits else None
        if override is not None:       # set at run time (time_limit command): the child
            msg = dataclasses.replace(msg, soft_time_limit=override[0], time_limit=override[1])
            frame = encode(msg)        # reads the soft limit from the message
        limit = msg.time_limit or task.options.time_limit or self.config.time_limit
        entry = Entry(tid, msg.name, ident, frame, msg.priority, msg.eta, msg.expires, limit,
                      task.options.acks_late)
        self.held[tid] = entry
        if "sent_at" in msg.headers and self.events.wants("task-sent"):
            sent = sent_fields(entry.task_id, entry.name, msg)     # the client opted in
            if sent is not None:
                self.events.emit("task-sent", **sent)
        if self.events.wants("task-received"):
            self.events.emit("task-received", **received_fields(entry.task_id, entry.name, msg))
        if journal is None:
            self.pool.submit(entry)
        else:
            self._pending.append(entry)    # to the pool once the journal has it (_flush)

    def _commit(self) -> None:
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        if self.journal is not None:
            try:
                self.journal.commit()
            except JournalError as e:
                self._journal_failed(e)

    def _journal_failed(self, e: JournalError) -> None:
        """A batch did not reach the journal: refuse the tasks it accepted (their owners
        try another node or report the error); results already went to their owners."""
        log.error("journal commit failed: %s", e)
        pending, self._pending = self._pending, []
        for entry in pending:
            self.held.pop(entry.task_id, None)
            self._watchers.pop(entry.task_id, None)
            self._refuse(entry.client, "journal", f"node {self.name} cannot write its journal, "
                         f"so it did not accept task {entry.task_id}: {e}", entry.task_id)
            self.events.emit("task-rejected", uuid=entry.task_id, name=entry.name, requeue=True,
                             reason=f"journal: {e}")

    def _recover(self) -> None:
        """After a restart: run again what the journal holds unfinished."""
        if self.journal is None:
            return
        try:
            rows = self.journal.unfinished()
        except JournalError as e:
            raise NodeStartError(f"cannot read the journal: {e}") from e
        lost = 0
        for row in rows:
            try:
                msg = decode(row.frame)
            except DecodeError as e:
                log.error("journal: task %s cannot be read back (%s): dropped", row.task_id, e)
                self.journal.remove([row.task_id])
                continue
            assert isinstance(msg, Submit)
            task = self.app.tasks.get(msg.name)
            limit = msg.time_limit or (task.options.time_limit if task else None) or self.config.time_limit
            entry = Entry(row.task_id, msg.name, row.client, row.frame, msg.priority, msg.eta,
                          msg.expires, limit, task.options.acks_late if task else True)
            entry.received = row.received
            self.held[row.task_id] = entry
            if task is None:
                self.task_failed(entry, "NotRegistered", f"task {msg.name!r} is no longer "
                                 f"registered on node {self.name}")
            elif row.state == states.STARTED:    # acks_late=False: it may have run; never twice
                lost += 1
                self.task_failed(entry, "WorkerLostError", f"node {self.name} stopped while task "
                                 f"{row.task_id} ran; it has acks_late=False, so it is not run again")
            else:
                self._pending.append(entry)
        if rows:
            log.info("journal: recovered %d unfinished task(s) (%d started with acks_late=False, "
                     "failed)", len(rows), lost)
        self._flush_scheduled = True   # _flush runs once the loop starts
        asyncio.get_running_loop().call_soon(self._flush)

    def _forget(self, entries: list[Entry]) -> None:
        """These tasks go back to their owners unstarted: no longer ours."""
        for e in entries:
            self.held.pop(e.task_id, None)
            self._watchers.pop(e.task_id, None)
        if self.journal is not None and entries:
            try:
                self.journal.remove(e.task_id for e in entries)
            except JournalError as e:
                log.error("journal: could not forget %d released task(s): %s", len(entries), e)

    def _release(self, entries: list[Entry], reason: str) -> None:
        by_client: dict[bytes, list[str]] = {}
        self._forget(entries)
        for e in entries:
            by_client.setdefault(e.client, []).append(e.task_id)
        for ident, ids in by_client.items():
            self._reply(ident, encode(Release(ids, self.name, reason)))
        if self.events.wants("task-rejected"):
            for e in entries:
                self.events.emit("task-rejected", uuid=e.task_id, name=e.name, requeue=True,
                                 reason=reason)
        if entries:
            log.info("gave back %d unstarted task(s) to %d client(s): %s", len(entries),
                     len(by_client), reason)

    # -- pool events ------------------------------------------------------------------
    def task_done(self, entry: Entry, state: str, result_frame: bytes, runtime: float,
                  countdown: float | None = None) -> None:
        if state == states.RETRY:
            self._retry(entry, result_frame, countdown or 0.0)
            return
        self._finish(entry.task_id, entry.client, state, result_frame, entry.name)

    def _finish(self, task_id: str, client: bytes, state: str, result_frame: bytes,
                name: str = "", **event: Any) -> None:
        """A held task's final result: journal it, then tell its owner and watchers."""
        self.held.pop(task_id, None)
        self.counts[state] += 1
        if self.journal is not None:
            try:
                self.journal.finish(task_id, state, result_frame, time.time())
            except JournalError as e:
                log.error("journal: the result of task %s was not stored: %s", task_id, e)
        self._reply(client, result_frame)
        ev = self.events
        if ev.prefixes or ev.listeners:
            ev.publish_result(task_id, result_frame)
            kind = FINAL_EVENTS.get(state)
            if kind is not None and ev.wants(kind):
                if state == states.REVOKED:
                    event = {"expired": False, "terminated": False, **event}
                ev.emit(kind, **result_fields(task_id, result_frame), name=name, **event)
        watchers = self._watchers.pop(task_id, None)
        if watchers:
            for ident in watchers:
                if ident != client:
                    self._reply(ident, result_frame)

    def _retry(self, entry: Entry, result_frame: bytes, countdown: float) -> None:
        """The task asked to run again: tell its owner (state RETRY, not final) and
        queue it here with retries + 1 after ``countdown`` seconds."""
        self.counts[states.RETRY] += 1
        msg = decode(entry.frame)
        assert isinstance(msg, Submit)
        eta = time.time() + countdown
        res = decode(result_frame)            # tell the owner when, so a resend keeps it
        if isinstance(res, Result):
            result_frame = encode(dataclasses.replace(res, eta=eta))
        self._reply(entry.client, result_frame)
        if self.events.wants("task-retried"):
            self.events.emit("task-retried", **result_fields(entry.task_id, result_frame),
                             name=entry.name, eta=eta, retries=msg.retries + 1)
        entry.frame = encode(dataclasses.replace(msg, retries=msg.retries + 1, eta=eta))
        entry.eta, entry.started, entry.received = eta, None, time.time()
        entry.retried = True
        if self.journal is not None:
            try:
                self.journal.update_frame(entry.task_id, entry.frame)
            except JournalError as e:
                log.error("journal: the retry of task %s was not stored: %s", entry.task_id, e)
        if self._stop.is_set():       # stopping: its owner sends it elsewhere
            self._release([entry], "node is shutting down")
        else:
            self.pool.submit(entry)

    def task_failed(self, entry: Entry, exc_type: str, message: str, state: str = states.FAILURE,
                    **event: Any) -> None:
        self._fail(entry.client, entry.task_id, exc_type, message, state, held=True,
                   name=entry.name, **event)

    def task_lost(self, entry: Entry, message: str, shutdown: bool = False) -> None:
        """Its child died mid-run. acks_late tasks go back to their owner at shutdown
        (they run elsewhere) and, with reject_on_worker_lost, run again here (a few
        times at most: a task that kills its child every time must not loop forever).
        Otherwise the task fails with WorkerLostError."""
        task = self.app.tasks.get(entry.name)
        opts = task.options if task is not None else None
        if opts is not None and opts.acks_late:
            if shutdown:
                entry.started = None
                self._release([entry], "node is shutting down; the task was interrupted")
                return
            if opts.reject_on_worker_lost and not self._stop.is_set():
                if entry.redelivered < MAX_REDELIVERIES:
                    entry.redelivered += 1
                    entry.started = None
                    log.warning("%s; running it again (reject_on_worker_lost, %d/%d)",
                                message, entry.redelivered, MAX_REDELIVERIES)
                    self.pool.submit(entry)
                    return
                message += f" (it was run {MAX_REDELIVERIES + 1} times and lost its child each time)"
        self.task_failed(entry, "WorkerLostError", message)

    def task_started(self, entry: Entry, pid: int) -> None:
        if self.events.wants("task-started"):
            self.events.emit("task-started", uuid=entry.task_id, name=entry.name, pid=pid)


    def task_starting(self, entry: Entry) -> None:
        """acks_late=False: journal that it started, so a restart never runs it twice."""
        if self.journal is not None:
            try:
                self.journal.started(entry.task_id)
                self.journal.commit()
            except JournalError as e:
                log.error("journal: could not record that task %s started: %s", entry.task_id, e)
                self._journal_failed(e)    # tasks accepted this pass were rolled back too

    def _failure(self, task_id: str, state: str, exc_type: str, message: str) -> bytes:
        """The encoded Result of a failure decided by the node (a mesh exception)."""
        exc = {"type": exc_type, "module": "mesh.exceptions", "message": message,
               "args": codec.dumps([message])}
        return encode(Result(task_id=task_id, state=state, exc=exc, node=self.name))

    def _fail(self, ident: bytes, task_id: str, exc_type: str, message: str,
              state: str = states.FAILURE, held: bool = False, name: str = "",
              **event: Any) -> None:
        if held:
            log.info("task %s %s: %s", task_id, state.lower(), message)
        else:                     # refused at intake: a stream of these must not flood the log
            self._faillog.warning("task %s %s: %s", task_id, state.lower(), message[:300])
        frame = self._failure(task_id, state, exc_type, message)
        if held:
            self._finish(task_id, ident, state, frame, name, **event)
        else:
            self.counts[state] += 1
            self._reply(ident, frame)

    # -- control ----------------------------------------------------------------------
    def load(self) -> list[int]:
        return [self.pool.busy, self.pool.size, len(self.pool.queue)]

    def status(self) -> dict[str, Any]:
        if time.monotonic() - self._sampled > 0.5:
            self._sample_resources()
        busy, total, queued = self.load()
        return {
            "node": self.name, "address": self.address, "state": "left" if self._stop.is_set() else "alive",
            "version": __version__, "protocol": PROTOCOL_VERSION, "pid": os.getpid(),
            "busy": busy, "total": total, "queued": queued, "scheduled": len(self.pool.scheduled),
            "held": len(self.held), "succeeded": self.counts[states.SUCCESS],
            "failed": self.counts[states.FAILURE], "revoked": self.counts[states.REVOKED],
            "retried": self.counts[states.RETRY],
            "answered_from_journal": self.counts["answered_from_journal"],
            "journal": self.journal.path if self.journal is not None else None,
            "events": self.events_endpoint, "events_sent": self.events.sent,
            "peer_sockets": len(self.transport.sockets.socks) if self.transport else 0,
            "clock": self.events.clock,
            "tasks_per_s": round(self.rate, 1), "cpu_percent": round(self._cpu, 1),
            "rss_bytes": self._rss, "uptime": round(time.time() - self.started_at, 1),
            "children_started": self.pool.started_total, "refused_frames": self.refused,
            "registered": sorted(self.app.tasks),
        }

    def task_state(self, ident: bytes, args: dict[str, Any]) -> dict[str, Any]:
        """The ``result`` command: what this node knows of a task id. With
        ``watch``, the asker also gets the Result when the task finishes here."""
        tid = args.get("task_id")
        if not isinstance(tid, str) or not 0 < len(tid) <= 200:
            raise ValueError("result needs args {'task_id': '<id>'}")
        if tid in self.remote.revoked and tid not in self.held:
            stored = self.journal.get(tid) if self.journal is not None else None
            if stored is None or stored.result is None:   # revoked before it got here
                frame = self._failure(tid, states.REVOKED, "TaskRevokedError",
                                      f"task {tid} was revoked")
                return {"task_id": tid, "state": states.REVOKED, "result": frame}
        entry = self.held.get(tid)
        if entry is not None:
            if args.get("watch") is True:
                watchers = self._watchers.setdefault(tid, set())
                if len(watchers) < MAX_WATCHERS:
                    watchers.add(ident)
            state = (states.STARTED if entry.started else
                     states.RETRY if entry.retried else states.RECEIVED)
            return {"task_id": tid, "state": state}
        if self.journal is not None:
            stored = self.journal.get(tid)
            if stored is not None and stored.result is not None:
                return {"task_id": tid, "state": stored.state, "result": stored.result}
        return {"task_id": tid, "state": states.UNKNOWN}



def _guess_ref(frame: bytes) -> str | None:
    """The task/request id of a frame we could not decode, if it can be read at all."""
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        if isinstance(raw, list) and len(raw) > 2 and isinstance(raw[2], str) and len(raw[2]) <= 200:
            return raw[2]
    except Exception:
        pass
    return None
