"""Prometheus metrics of one node (``/metrics``), under three sets of names.

* celery-exporter's (``celery_task_*_total``, ``celery_task_runtime``,
  ``celery_worker_up``, ...), labels ``name``, ``hostname``, ``queue_name`` (and
  ``exception`` on failures), so its Grafana dashboards work unchanged;
* Flower's (``flower_events_total``, ``flower_task_runtime_seconds``,
  ``flower_worker_online``, ...), labels ``worker``, ``type``, ``task``;
* mesh's own (``mesh_*``): membership, deaths seen, duplicates, journal size, queue
  wait, pool and node figures.

Each node reports itself only (``hostname`` = its name): scrape every node, and sums
over nodes are the mesh's totals (scraping one node and reading the mesh from it, as
one celery-exporter does for a broker, would count each task once per scraper).
docs/dashboard.md has the mapping. Task counters are fed by the node's own events,
in-process (``Publisher.listen``); gauges are read from the node at scrape time.
"""
from __future__ import annotations

import bisect
import collections
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from mesh.node.node import Node

CELERY_COUNTERS = {
    "task-sent": ("celery_task_sent", "Sent when a task message is published (clients that opt in)."),
    "task-received": ("celery_task_received", "Sent when the worker receives a task."),
    "task-started": ("celery_task_started", "Sent just before the worker executes the task."),
    "task-succeeded": ("celery_task_succeeded", "Sent if the task executed successfully."),
    "task-failed": ("celery_task_failed", "Sent if the execution of the task failed."),
    "task-rejected": ("celery_task_rejected", "The task was given back unstarted or refused."),
    "task-revoked": ("celery_task_revoked", "Sent if the task has been revoked."),
    "task-retried": ("celery_task_retried", "Sent if the task failed, but will be retried."),
}
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0, float("inf"))   # prometheus-client's defaults (celery-exporter's)
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0, 60.0, float("inf"))
MAX_WAITING = 200_000      # received-but-not-started tasks remembered for the queue wait


def exception_name(text: Any) -> str:
    """``"KeyError('x')"`` -> ``"KeyError"`` (celery-exporter's ``exception`` label)."""
    if not isinstance(text, str) or not text:
        return ""
    return text.split("(", 1)[0][:100]


class _Hist:
    """A histogram kept as plain numbers (no lock, no label lookup on the hot path)."""

    __slots__ = ("bounds", "counts", "total", "n")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.n = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.total += v
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for b, c in zip(self.bounds, self.counts):
            acc += c
            out.append(("+Inf" if b == float("inf") else repr(b), float(acc)))
        return out


class NodeMetrics:
    """The node's metrics; ``observe(event)`` is the Publisher listener. It runs for
    every task event on the node's loop, so it only adds to plain dicts; the metric
    families are built when Prometheus scrapes."""

    def __init__(self, node: "Node"):
        self.node = node
        self.hostname = node.name
        try:
            self.queue = str(node.app.conf["task_default_queue"])
        except Exception:
            self.queue = "celery"
        self.events: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.runtime: dict[str, _Hist] = {}          # succeeded (celery_task_runtime)
        self.runtime_all: dict[str, _Hist] = {}      # succeeded and failed (Flower's)
        self.wait: dict[str, _Hist] = {}
        self.last_wait: dict[str, float] = {}
        self.duplicates = 0
        self.member_deaths: collections.Counter[str] = collections.Counter()
        self._waiting: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._states: dict[str, str] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ScrapeTime(self))

    # -- events (on the node's loop) ---------------------------------------------------
    def observe(self, ev: dict[str, Any]) -> None:
        type_ = ev["type"]
        if type_[:5] != "task-":
            return
        name = ev.get("name")
        if type(name) is not str:
            name = ""
        if type_ == "task-failed":
            self.events[(type_, name, exception_name(ev.get("exception")))] += 1
        else:
            self.events[(type_, name, "")] += 1
        if type_ == "task-duplicate":
            self.duplicates += 1
        runtime = ev.get("runtime")
        if (type_ == "task-succeeded" or type_ == "task-failed") and \
                (type(runtime) is float or type(runtime) is int):
            h = self.runtime_all.get(name)
            if h is None:
                h = self.runtime_all[name] = _Hist(RUNTIME_BUCKETS)
            h.observe(runtime)
            if type_ == "task-succeeded":
                h = self.runtime.get(name)
                if h is None:
                    h = self.runtime[name] = _Hist(RUNTIME_BUCKETS)
                h.observe(runtime)
        uuid = ev.get("uuid")
        if type(uuid) is not str:
            return
        if type_ == "task-received" or type_ == "task-retried":
            due = ev.get("eta") if type_ == "task-retried" else None
            self._waiting[uuid] = float(due or ev["timestamp"])
            if len(self._waiting) > MAX_WAITING:
                self._waiting.popitem(last=False)
        elif type_ == "task-started":
            since = self._waiting.pop(uuid, None)
            if since is not None:
                wait = max(0.0, float(ev["timestamp"]) - since)
                h = self.wait.get(name)
                if h is None:
                    h = self.wait[name] = _Hist(WAIT_BUCKETS)
                h.observe(wait)
                self.last_wait[name] = wait
        elif type_ in ("task-revoked", "task-rejected", "task-failed"):
            self._waiting.pop(uuid, None)

    def watch_members(self) -> None:
        """Count peers that became dead since the last look (called every second)."""
        ms = self.node.membership
        if ms is None:
            return
        for m in ms.members():
            state = m.state.value
            old = self._states.get(m.id)
            if state == "dead" and old is not None and old != "dead":
                self.member_deaths[m.id] += 1
            self._states[m.id] = state

    def families(self) -> Iterator[Metric]:
        """The event-fed metrics, built now."""
        host, q = self.hostname, self.queue
        by_type: dict[str, CounterMetricFamily] = {}
        for type_, (name, doc) in CELERY_COUNTERS.items():
            labels = ["name", "hostname", "queue_name"] + (["exception"] if type_ == "task-failed" else [])
            by_type[type_] = CounterMetricFamily(name, doc, labels=labels)
        flower = CounterMetricFamily("flower_events", "Number of events", labels=["worker", "type", "task"])
        flower_sums: collections.Counter[tuple[str, str]] = collections.Counter()
        for (type_, name, exc), n in self.events.items():
            fam = by_type.get(type_)
            if fam is not None:
                fam.add_metric([name, host, q, exc] if type_ == "task-failed" else [name, host, q], n)
            flower_sums[(type_, name)] += n
        for (type_, name), n in flower_sums.items():
            flower.add_metric([host, type_, name], n)
        yield from by_type.values()
        yield flower
        h = HistogramMetricFamily("celery_task_runtime", "Histogram of task runtime measurements.",
                                  labels=["name", "hostname", "queue_name"])
        for name, hist in self.runtime.items():
            h.add_metric([name, host, q], hist.buckets(), hist.total)
        yield h
        h = HistogramMetricFamily("flower_task_runtime_seconds", "Task runtime", labels=["worker", "task"])
        for name, hist in self.runtime_all.items():
            h.add_metric([host, name], hist.buckets(), hist.total)
        yield h
        h = HistogramMetricFamily("mesh_task_queue_wait_seconds", "Time from a node receiving a "
                                  "task (or a retry being due) to a child starting it.",
                                  labels=["name", "hostname"])
        for name, hist in self.wait.items():
            h.add_metric([name, host], hist.buckets(), hist.total)
        yield h
        g = GaugeMetricFamily("flower_task_prefetch_time_seconds", "The time the task spent "
                              "waiting at the worker to be executed.", labels=["worker", "task"])
        for name, v in self.last_wait.items():
            g.add_metric([host, name], v)
        yield g
        c = CounterMetricFamily("mesh_task_duplicates", "Tasks a client got a second result for "
                                "(they ran twice, e.g. after a failover).", labels=["hostname"])
        c.add_metric([host], self.duplicates)
        yield c
        c = CounterMetricFamily("mesh_member_deaths", "Peers this node saw declared dead (their "
                                "clients then resend those peers' tasks elsewhere).",
                                labels=["hostname", "member"])
        for member, n in self.member_deaths.items():
            c.add_metric([host, member], n)
        yield c


class _ScrapeTime(Collector):
    """Gauges read from the node when Prometheus scrapes (on the node's loop)."""

    def __init__(self, m: NodeMetrics):
        self.m = m

    def collect(self) -> Iterator[Metric]:
        yield from self.m.families()
        m, node = self.m, self.m.node
        host, q = m.hostname, m.queue
        stopping = node._stop.is_set()
        pool = getattr(node, "pool", None)
        busy, total, queued = node.load() if pool is not None else (0, 0, 0)

        def gauge(name: str, doc: str, labels: list[str],
                  values: list[tuple[list[str], float]]) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            for lv, v in values:
                g.add_metric(lv, v)
            return g

        up = 0.0 if stopping else 1.0
        yield gauge("celery_worker_up", "Indicates if a worker has recently sent a heartbeat.",
                    ["hostname"], [([host], up)])
        yield gauge("celery_worker_tasks_active", "The number of tasks the worker is currently "
                    "processing", ["hostname"], [([host], busy)])
        yield gauge("celery_queue_length", "Tasks waiting for a child on this node.",
                    ["queue_name"], [([q], queued)])
        yield gauge("celery_active_worker_count", "Nodes taking this queue (this one).",
                    ["queue_name"], [([q], up)])
        yield gauge("celery_active_process_count", "Children taking this queue on this node.",
                    ["queue_name"], [([q], total)])
        yield gauge("flower_worker_online", "Worker online status", ["worker"], [([host], up)])
        yield gauge("flower_worker_number_of_currently_executing_tasks",
                    "Number of tasks currently executing at a worker", ["worker"], [([host], busy)])
        prefetched: collections.Counter[str] = collections.Counter()
        if pool is not None:
            for _, _, e in pool.queue:
                prefetched[e.name] += 1
        yield gauge("flower_worker_prefetched_tasks", "Number of tasks of given type "
                    "prefetched at a worker", ["worker", "task"],
                    [([host, n], c) for n, c in prefetched.items()])
        # mesh's own
        members: collections.Counter[str] = collections.Counter(
            {"alive": 0, "suspect": 0, "dead": 0, "left": 0})
        for mem in m.node.members() if node.membership is not None else []:
            members[str(mem["state"])] += 1
        yield gauge("mesh_members", "Members of the mesh by state, as this node sees them.",
                    ["hostname", "state"], [([host, s], n) for s, n in members.items()])
        yield gauge("mesh_tasks_held", "Tasks this node accepted and has not finished.",
                    ["hostname"], [([host], len(node.held))])
        yield gauge("mesh_tasks_queued", "Tasks waiting for a child.", ["hostname"], [([host], queued)])
        yield gauge("mesh_tasks_scheduled", "Tasks waiting for their eta.", ["hostname"],
                    [([host], len(pool.scheduled) if pool is not None else 0)])
        yield gauge("mesh_pool_children", "Children in the pool.", ["hostname"], [([host], total)])
        yield gauge("mesh_pool_busy", "Children running a task.", ["hostname"], [([host], busy)])
        done = CounterMetricFamily("mesh_tasks_finished", "Tasks finished here since start, by "
                                   "state (retries counted as RETRY).", labels=["hostname", "state"])
        for state in ("SUCCESS", "FAILURE", "REVOKED", "RETRY"):
            done.add_metric([host, state], node.counts[state])
        yield done
        jbytes = 0.0
        if node.journal is not None:
            for suffix in ("", "-wal", "-shm"):
                try:
                    jbytes += os.path.getsize(node.journal.path + suffix)
                except OSError:
                    pass
        yield gauge("mesh_journal_bytes", "Size of the journal on disk (with its WAL).",
                    ["hostname"], [([host], jbytes)])
        ev = CounterMetricFamily("mesh_events", "Events published on the events socket, and "
                                 "dropped at a slow subscriber's high-water mark.",
                                 labels=["hostname", "outcome"])
        ev.add_metric([host, "sent"], node.events.sent)
        ev.add_metric([host, "dropped"], node.events.dropped)
        yield ev
        refused = CounterMetricFamily("mesh_refused_frames", "Frames this node could not decode.",
                                      labels=["hostname"])
        refused.add_metric([host], node.refused)
        yield refused
        yield gauge("mesh_node_rss_bytes", "Memory of the node and its children.", ["hostname"],
                    [([host], node._rss)])
        yield gauge("mesh_node_cpu_percent", "CPU of the node and its children.", ["hostname"],
                    [([host], node._cpu)])
        yield gauge("mesh_node_start_time_seconds", "When this node started (unix time).",
                    ["hostname"], [([host], node.started_at)])
        yield gauge("mesh_node_scrape_time_seconds", "Now, on this node (clock skew).",
                    ["hostname"], [([host], time.time())])
