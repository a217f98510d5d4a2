"""``meshctl events`` and ``meshctl top``: watch a running mesh (docs/events.md)."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import click

from mesh.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Seconds, die
from mesh.security.text import json_text

# ---- formatting -------------------------------------------------------------------------


def short_id(task_id: str) -> str:
    """``…7c2e9f244ea2``: a mesh id starts with the time it was made (ids of the same
    hours share their start) and ends at random, so its end tells tasks apart; ids a
    program chooses most often differ at the end too (``invoice-2026-000123``)."""
    return task_id if len(task_id) <= 13 else "…" + task_id[-12:]


def fmt_clock(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "--:--:--.---"
    try:
        lt = time.localtime(ts)
    except (OverflowError, OSError, ValueError):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", lt) + f".{int((ts % 1) * 1000):03d}"


def fmt_runtime(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "?"
    if s < 1.0:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def fmt_duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f}s"
    m = int(s // 60)
    if m < 60:
        return f"{m}m{int(s % 60):02d}s"
    return f"{m // 60}h{m % 60:02d}m"


def fmt_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / (1024 * 1024):.0f}M"


def format_event(ev: dict[str, Any], names: dict[str, str] | None = None) -> str:
    """One readable line for an event."""
    type_, node = str(ev.get("type")), str(ev.get("node"))
    head = f"{fmt_clock(ev.get('timestamp'))} {node} {type_}"
    if type_ == "events-lost":
        return (f"{head}: {ev.get('missed')} {ev.get('of_type')} event(s) missed "
                "(this subscriber fell behind; the node dropped them)")
    uuid = ev.get("uuid")
    if isinstance(uuid, str):
        name = ev.get("name") if isinstance(ev.get("name"), str) else (names or {}).get(uuid, "")
        task = f"{name}[{short_id(uuid)}]"
        if type_ == "task-received":
            extra = f" args={ev.get('args')} kwargs={ev.get('kwargs')}"
            if ev.get("retries"):
                extra += f" retries={ev.get('retries')}"
            if isinstance(ev.get("eta"), (int, float)):
                extra += f" eta={fmt_clock(ev['eta'])}"
            return head + " " + task + extra
        if type_ == "task-started":
            return f"{head} {task} pid {ev.get('pid')}"
        if type_ == "task-succeeded":
            return f"{head} {task} {fmt_runtime(ev.get('runtime'))} -> {ev.get('result')}"
        if type_ == "task-failed":
            return f"{head} {task} {fmt_runtime(ev.get('runtime'))} !! {ev.get('exception')}"
        if type_ == "task-retried":
            when = f" again at {fmt_clock(ev['eta'])}" if isinstance(ev.get("eta"), (int, float)) else ""
            return f"{head} {task} {ev.get('exception')}{when}"
        if type_ == "task-rejected":
            to = f" -> {ev['target']}" if ev.get("target") else ""
            requeue = "requeued" if ev.get("requeue") else "refused"
            return f"{head} {task} {requeue}{to}: {ev.get('reason')}"
        if type_ == "task-duplicate":
            return f"{head} {task} ran again (first result from {ev.get('first_node')})"
        if type_ == "result":
            return f"{head} {task} {ev.get('state')}"
        return f"{head} {task}"
    if type_.startswith("node-"):
        return (f"{head} {ev.get('address', '')} busy {ev.get('active')}/{ev.get('total')} "
                f"queued {ev.get('queued')} processed {ev.get('processed')} "
                f"{ev.get('tasks_per_s')} tasks/s cpu {ev.get('cpu_percent')}% "
                f"mem {fmt_bytes(ev.get('rss_bytes'))}")
    return head


def event_json(ev: dict[str, Any]) -> str:
    """One JSON object; a ``result`` event's Result is spelled out."""
    if ev.get("type") == "result" and ev.get("result") is not None:
        from mesh.wire import codec
        res = ev["result"]
        out = {k: v for k, v in ev.items() if k != "result"}
        out.update(runtime=res.runtime, exc=res.exc, traceback=res.traceback, retries=res.retries)
        if res.result is not None:
            try:
                out["value"] = codec.loads(res.result)
            except Exception as e:
                out["value_error"] = f"{type(e).__name__}: {e}"
        ev = out
    return json_text(ev, default=repr, ensure_ascii=False)


# ---- meshctl events -------------------------------------------------------------------

@click.command()
@click.option("--type", "types", multiple=True, metavar="PREFIX",
              help="Only events whose type starts with PREFIX (task-failed, node-, task-, "
                   "result.<id>); repeat for more. Default: task- and node-.")
@click.option("--task", "task_id", metavar="ID", help="Only the events of this task (its id, or "
              "the start or the end of it).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (also: meshctl --json events).")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop after N events.")
@click.option("--duration", type=Seconds(min=0, min_open=True), metavar="S",
              help="Stop after S seconds.")
@click.pass_context
def events(ctx: click.Context, types: tuple[str, ...], task_id: str | None, as_json: bool,
           count: int | None, duration: float | None) -> int:
    """Print the mesh's events as they happen, one line each, from every node
    (nodes that join later too); until Ctrl-C, --count or --duration. A line
    "events-lost" means this terminal fell behind and the node dropped events.
    Exit 1 when no node publishes events.

    \b
    Examples:
      meshctl --peers tcp://127.0.0.1:7700 events
      meshctl --peers tcp://127.0.0.1:7700 events --type task-failed
      meshctl --peers tcp://127.0.0.1:7700 --json events --count 100 > events.jsonl
    """
    from mesh.cli.meshctl import _peers
    from mesh.monitor.receiver import EventReceiver, State
    as_json = as_json or bool(ctx.obj["json"])
    topics = types or (("task-",) if task_id else ("task-", "node-"))
    peers = _peers(ctx)
    printed = 0
    state = State(max_tasks=10_000)         # task id -> name for the lines
    # SIGTERM (`kill`, a service manager, a container's stop) ends it as Ctrl-C does:
    # killed outright, a `meshctl events > file` lost the lines still in stdout's buffer
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with EventReceiver(peers, topics, control_timeout=ctx.obj["timeout"]) as recv:
            if not recv.nodes:
                why = "; ".join(f"{n} {w}" for n, w in recv.unavailable.items())
                die("meshctl", "no node to listen to: " + (why or "none of --peers answered"),
                    EXIT_FAILURE)
            if not as_json:
                click.echo(f"meshctl: listening to {len(recv.nodes)} node(s): "
                           f"{', '.join(sorted(recv.nodes))} (Ctrl-C to stop)", err=True)
            for ev in recv.events(duration):
                uuid = ev.get("uuid")
                if task_id and ev.get("type") != "events-lost" and not (isinstance(uuid, str) and (
                        uuid.startswith(task_id) or uuid.endswith(task_id))):
                    continue
                state.event(ev)
                if as_json:
                    click.echo(event_json(ev))
                else:
                    names = {}
                    if isinstance(uuid, str):
                        t = state.tasks.get(uuid)
                        if t is not None and t.name:
                            names[uuid] = t.name
                    click.echo(format_event(ev, names))
                printed += 1
                if count is not None and printed >= count:
                    break
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:          # `meshctl events | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return EXIT_OK


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# ---- meshctl top ----------------------------------------------------------------------

class StatusPoller:
    """Polls ``status`` (every node the mesh knows) and ``active`` in a thread."""

    def __init__(self, peers: list[str], timeout: float, interval: float):
        self.peers, self.timeout, self.interval = peers, timeout, interval
        self.rows: list[dict[str, Any]] = []
        self.active: dict[str, list[dict[str, Any]]] = {}   # node -> running tasks (if it answers)
        self.polled_at = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshctl-top-status", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from mesh.cli.meshctl_status import gather_status
        from mesh.client.control import ControlClient
        from mesh.wire.protocol import ControlReply
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                rows = gather_status(self.peers, self.timeout)
                addresses = [r["address"] for r in rows if r.get("answered") and r.get("address")]
                active: dict[str, list[dict[str, Any]]] = {}
                with ControlClient() as cc:
                    for r in cc.broadcast(addresses, "active", timeout=self.timeout).values():
                        if isinstance(r, ControlReply) and r.ok and isinstance(r.payload, list):
                            active[r.node] = [t for t in r.payload if isinstance(t, dict)]
                self.rows, self.active, self.error = rows, active, None
                self.polled_at = time.time()
            except Exception as e:           # shown on the screen; the next poll may work
                self.error = f"{type(e).__name__}: {e}"
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout * 3 + 1)


Line = tuple[str, int]     # text, curses attribute


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], width: int) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()[:width])
    return out


def render(width: int, height: int, rows: list[dict[str, Any]], state: Any,
           active: dict[str, list[dict[str, Any]]], stats: dict[str, Any],
           bold: int = 0, reverse: int = 0) -> list[Line]:
    """The dashboard as lines of at most ``width`` characters, at most ``height`` lines."""
    if width <= 0 or height <= 0:
        return []
    now = time.time()
    by_node = {r.get("node"): r for r in rows}
    for n in state.nodes.values():             # nodes known from events only
        if n.name not in by_node:
            rows = [*rows, {"node": n.name, "state": "alive" if n.is_alive() else
                            ("offline" if n.offline else "silent"), "answered": True,
                            "busy": n.active, "total": n.total, "queued": n.queued,
                            "succeeded": n.processed, "failed": 0, "tasks_per_s": n.tasks_per_s,
                            "cpu_percent": n.cpu_percent, "rss_bytes": n.rss_bytes, "_events": True}]
    answered = [r for r in rows if r.get("answered")]
    alive = sum(1 for r in rows if r.get("state") == "alive")
    rate = sum(float(r.get("tasks_per_s") or 0) for r in answered)
    succeeded = sum(int(r.get("succeeded") or 0) for r in answered if not r.get("_events"))
    failed = sum(int(r.get("failed") or 0) for r in answered if not r.get("_events"))
    lines: list[Line] = []
    lines.append((f"mesh top  {time.strftime('%H:%M:%S')}  nodes {alive}/{len(rows)} alive  "
                  f"{rate:.1f} tasks/s  succeeded {succeeded}  failed {failed}  "
                  f"(q quits)"[:width], bold))
    second = (f"events {stats.get('received', 0)}  lost {stats.get('lost', 0)}  "
              f"listening to {stats.get('nodes', 0)} node(s)"
              + (f"  status error: {stats['error']}" if stats.get("error") else ""))
    lines.append((second[:width], 0))
    lines.append(("", 0))
    node_rows = []
    for r in sorted(rows, key=lambda r: str(r.get("node"))):
        if r.get("answered"):
            node_rows.append((str(r.get("node")), str(r.get("state")),
                              f"{r.get('busy', '-')}/{r.get('total', '-')}", str(r.get("queued", "-")),
                              str(r.get("succeeded", "-")), str(r.get("failed", "-")),
                              f"{float(r.get('tasks_per_s') or 0):.0f}",
                              f"{float(r.get('cpu_percent') or 0):.0f}", fmt_bytes(r.get("rss_bytes"))))
        else:
            node_rows.append((str(r.get("node")), str(r.get("state")), *("-",) * 7))
    table = _table(("NODE", "STATE", "BUSY", "QUEUED", "DONE", "FAILED", "TASKS/S", "CPU%", "MEM"),
                   node_rows, width)
    lines.append((table[0], reverse))
    lines.extend((t, 0) for t in table[1:])
    lines.append(("", 0))
    running: dict[str, tuple[str, str, str, float]] = {}   # id -> name, node, started
    for t in state.running():
        running[t.uuid] = (t.uuid, t.name or "?", t.node or "?", t.started or now)
    for node, tasks in active.items():                      # the nodes' own word, if they give it
        for a in tasks:
            tid = a.get("id")
            known = state.tasks.get(tid) if isinstance(tid, str) else None
            if known is not None and known.ready:
                continue                        # finished since that poll
            if isinstance(tid, str) and tid not in running:
                st = a.get("started")
                running[tid] = (tid, str(a.get("name", "?")), str(a.get("node", node)),
                                float(st) if isinstance(st, (int, float)) else now)
    tasks_sorted = sorted(running.values(), key=lambda x: x[3])
    room = height - len(lines) - 2                 # title + header
    task_rows = []
    for tid, name, node, started in tasks_sorted[:max(room, 0)]:
        shown = tid if width >= 100 else short_id(tid)
        task_rows.append((shown, name, node, fmt_duration(now - started)))
    more = len(tasks_sorted) - len(task_rows)
    title = f"RUNNING TASKS: {len(tasks_sorted)}" + (f" ({more} not shown)" if more > 0 else "")
    lines.append((title[:width], bold))
    table = _table(("ID", "NAME", "NODE", "RUNNING FOR"), task_rows, width)
    lines.append((table[0], reverse))
    lines.extend((t, 0) for t in table[1:])
    return lines[:height]


@click.command()
@click.option("--duration", type=Seconds(min=0, min_open=True), metavar="S",
              help="Quit after S seconds (for scripts and tests).")
@click.option("--interval", type=Seconds(min=0.1, finite=True), default=1.0, show_default=True,
              metavar="S", help="Seconds between screen refreshes.")
@click.pass_context
def top(ctx: click.Context, duration: float | None, interval: float) -> int:
    """A live dashboard in the terminal: the nodes (state, busy/total children,
    queue, done, failed, tasks/s, CPU, memory) and the tasks running now, refreshed
    in place. Press q to quit. Needs a terminal; for a one-shot table use
    `meshctl status`.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 top
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        die("meshctl", "top needs a terminal (stdin and stdout must be a tty); for a one-shot "
            "table use `meshctl status`, for a stream `meshctl events`", EXIT_USAGE)
    import curses

    from mesh.cli.meshctl import _peers
    from mesh.monitor.receiver import EventReceiver, State
    peers = _peers(ctx)
    timeout = ctx.obj["timeout"]
    try:
        curses.setupterm()
    except curses.error as e:
        die("meshctl", f"top cannot use this terminal (TERM={os.environ.get('TERM', '')!r}: {e}); "
            "try TERM=xterm, or `meshctl status`", EXIT_USAGE)
    state = State()
    with EventReceiver(peers, ("task-", "node-"), control_timeout=timeout) as recv:
        if not recv.nodes and not recv.addresses:
            die("meshctl", "no node answered: check --peers", EXIT_FAILURE)
        poller = StatusPoller(peers + [a for a in recv.addresses.values() if a not in peers],
                              timeout, interval)
        try:
            curses.wrapper(_top_loop, recv, state, poller, duration, interval)
        except KeyboardInterrupt:
            pass
        finally:
            poller.close()
    return EXIT_OK


def _top_loop(stdscr: Any, recv: Any, state: Any, poller: StatusPoller,
              duration: float | None, interval: float) -> None:
    import curses
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    stdscr.timeout(50)                          # getch waits at most 50 ms
    end = None if duration is None else time.monotonic() + duration
    next_draw = 0.0
    drawn_poll = -1.0
    while True:
        now = time.monotonic()
        if end is not None and now >= end:
            return
        for _ in range(5000):                   # bounded work per pass: keys stay responsive
            ev = recv.next_event(0)
            if ev is None:
                break
            state.event(ev)
        if now >= next_draw or poller.polled_at != drawn_poll:
            drawn_poll = poller.polled_at
            next_draw = now + interval
            _draw(stdscr, recv, state, poller)
        ch = stdscr.getch()
        if ch in (ord("q"), ord("Q")):
            return
        if ch == curses.KEY_RESIZE:
            try:
                curses.update_lines_cols()
            except curses.error:
                pass
            stdscr.clear()
            next_draw = 0.0


def _draw(stdscr: Any, recv: Any, state: Any, poller: StatusPoller) -> None:
    import curses
    height, width = stdscr.getmaxyx()
    stats = {"received": recv.received, "lost": recv.lost, "nodes": len(recv.nodes),
             "error": poller.error}
    try:
        lines = render(width - 1, height, poller.rows, state, poller.active, stats,
                       curses.A_BOLD, curses.A_REVERSE)
    except Exception as e:                      # never let a display bug kill the dashboard
        lines = [(f"meshctl top: cannot draw: {type(e).__name__}: {e}"[:max(width - 1, 0)], 0)]
    stdscr.erase()
    for y, (text, attr) in enumerate(lines):
        if y >= height or width <= 1:
            break
        try:
            stdscr.addnstr(y, 0, text, width - 1, attr)
        except curses.error:
            pass
    stdscr.refresh()
