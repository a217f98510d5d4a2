"""Live updates for the browser, and the timelines of recent tasks.

* :class:`Timelines` keeps the events of the last tasks this node saw (its own, in
  process), for a task's page.
* :class:`LiveHub` sends events to the browsers watching (``/api/events``, Server-Sent
  Events): this node's own, in process, and its peers', through an
  :class:`~mesh.monitor.EventReceiver` on a thread, which runs only while someone
  watches (so peers build no events for an unwatched dashboard). Events go out in
  batches every ``FLUSH`` seconds; a browser that cannot keep up loses the oldest and
  is told how many (``lost``).
"""
from __future__ import annotations

import asyncio
import collections
import threading
from typing import TYPE_CHECKING, Any

from mesh.monitor.receiver import EventReceiver
from mesh.security.text import safe_logger
from mesh.web.server import json_text

if TYPE_CHECKING:
    from mesh.node.node import Node

log = safe_logger("mesh.web.live")

MAX_TIMELINES = 5_000      # tasks whose events are kept
MAX_TIMELINE = 32          # events kept per task
FLUSH = 0.25               # s between batches to browsers
MAX_QUEUED = 2_000         # events waiting for one browser; beyond, the oldest are dropped
KEEPALIVE = 15.0           # s of silence before a comment line keeps proxies from closing
IDLE_STOP = 30.0           # s without a browser before peers' events are unsubscribed
KEEP_FIELDS = ("type", "node", "timestamp", "uuid", "name", "args", "kwargs", "runtime",
               "result", "exception", "reason", "retries", "eta", "pid", "active", "total",
               "queued", "processed", "tasks_per_s", "cpu_percent", "rss_bytes", "address",
               "missed", "of_type", "target", "requeue", "sender", "expired", "terminated")


def compact(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields a browser uses (no tracebacks: the task's page reads those)."""
    out = {k: ev[k] for k in KEEP_FIELDS if k in ev}
    for k in ("args", "kwargs", "result", "exception"):
        v = out.get(k)
        if isinstance(v, str) and len(v) > 200:
            out[k] = v[:197] + "..."
    return out


class Timelines:
    """task id -> its events, for the newest ``max_tasks`` tasks. Kept as tuples of plain
    values (few objects for the garbage collector to walk: this runs for every event)."""

    FIELDS = ("type", "timestamp", "node", "pid", "runtime", "reason", "target", "exception",
              "eta", "retries")

    def __init__(self, max_tasks: int = MAX_TIMELINES):
        self.max_tasks = max_tasks
        self._tasks: collections.OrderedDict[str, list[tuple[Any, ...]]] = collections.OrderedDict()

    def observe(self, ev: dict[str, Any]) -> None:
        uuid = ev.get("uuid")
        if type(uuid) is not str or ev["type"][:5] != "task-":
            return
        events = self._tasks.get(uuid)
        if events is None:
            events = self._tasks[uuid] = []
            if len(self._tasks) > self.max_tasks:
                self._tasks.popitem(last=False)
        if len(events) < MAX_TIMELINE:
            events.append((ev["type"], ev["timestamp"], ev["node"], ev.get("pid"), ev.get("runtime"),
                           ev.get("reason"), ev.get("target"), ev.get("exception"), ev.get("eta"),
                           ev.get("retries")))

    def get(self, uuid: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in zip(self.FIELDS, e) if v is not None}
                for e in self._tasks.get(uuid, ())]


class _Browser:
    def __init__(self) -> None:
        self.queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_QUEUED)
        self.lost = 0
        self.wake = asyncio.Event()


class _PeerEvents(EventReceiver):
    """An EventReceiver for every node but this one (its events come in process)."""

    def __init__(self, me: str, *args: Any, **kwargs: Any):
        self.me = me
        super().__init__(*args, **kwargs)

    def _apply(self, found: tuple[dict[str, str], dict[str, str], dict[str, str]]) -> None:
        wanted, addresses, why = found
        super()._apply(({k: v for k, v in wanted.items() if k != self.me}, addresses, why))


class LiveHub:
    """Fans events out to the browsers connected to ``/api/events``."""

    def __init__(self, node: "Node"):
        self.node = node
        self.browsers: set[_Browser] = set()
        self._thread: threading.Thread | None = None
        self._stop_peers = threading.Event()
        self._idle_since: float | None = None
        self.peer_events = 0

    # -- sources ----------------------------------------------------------------------
    def observe(self, ev: dict[str, Any]) -> None:
        """An event (this node's, or a peer's): to every browser watching."""
        if not self.browsers:
            return
        c = compact(ev)
        for b in self.browsers:
            if len(b.queue) == MAX_QUEUED:
                b.lost += 1
            b.queue.append(c)

    def _peer_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """Peers' events, received on this thread and handed to the loop in batches."""
        try:
            recv = _PeerEvents(self.node.name, [self.node.address], topics=("task-", "node-"),
                               refresh=2.0, rcvhwm=50_000)
        except Exception as e:
            log.warning("dashboard: cannot subscribe to peers' events: %s", e)
            return
        try:
            batch: list[dict[str, Any]] = []
            while not self._stop_peers.is_set():
                ev = recv.next_event(0.1)
                if ev is not None:
                    batch.append(ev)
                if batch and (ev is None or len(batch) >= 500):
                    loop.call_soon_threadsafe(self._take, batch)
                    batch = []
        except Exception:
            log.exception("dashboard: peers' events stopped")
        finally:
            recv.close()

    def _take(self, batch: list[dict[str, Any]]) -> None:
        self.peer_events += len(batch)
        for ev in batch:
            if ev.get("node") != self.node.name:
                self.observe(ev)

    def _ensure_peers(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop_peers.clear()
            self._thread = threading.Thread(target=self._peer_thread, name="mesh-web-events",
                                            args=(asyncio.get_running_loop(),), daemon=True)
            self._thread.start()

    def tick(self, now: float) -> None:
        """Every second: stop listening to peers once nobody has watched for a while."""
        if self.browsers:
            self._idle_since = None
        elif self._thread is not None:
            if self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since > IDLE_STOP:
                self.stop_peers()

    def stop_peers(self) -> threading.Thread | None:
        """Stop receiving peers' events; the thread (to join off the loop), if any."""
        self._stop_peers.set()
        t, self._thread = self._thread, None
        return t

    # -- one browser ------------------------------------------------------------------
    async def stream(self, write: Any, closing: asyncio.Event) -> None:
        """Send batches to one browser (``write(bytes)``) until it goes or ``closing``."""
        b = _Browser()
        self.browsers.add(b)
        self._ensure_peers()
        loop = asyncio.get_running_loop()
        try:
            await write(b"retry: 2000\n\n")
            quiet_since = loop.time()
            while not closing.is_set():
                try:
                    await asyncio.wait_for(closing.wait(), FLUSH)
                except TimeoutError:
                    pass
                if b.queue or b.lost:
                    events = list(b.queue)
                    b.queue.clear()
                    body = json_text({"events": events, "lost": b.lost})   # (peers' events)
                    b.lost = 0
                    await write(f"data: {body}\n\n".encode())
                    quiet_since = loop.time()
                elif loop.time() - quiet_since > KEEPALIVE:
                    await write(b": keep-alive\n\n")
                    quiet_since = loop.time()
        finally:
            self.browsers.discard(b)
