"""``meshctl status``: one row per node the mesh knows, gathered from the nodes that
answer and the members they know of (``gather_status``, also what ``meshctl top`` and
``meshctl beat`` read)."""
from __future__ import annotations

import math
from typing import Any

import click

from mesh.cli.common import EXIT_FAILURE, EXIT_OK
from mesh.security.text import json_text


def _number(v: Any) -> float | None:
    """A number a node's status gave, else None (missing, not a number, inf or nan:
    an older or odd node's reply prints ``-`` in its cell, never a traceback)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return v


def _cell(v: Any, fmt: str = "{:.0f}") -> str:
    n = _number(v)
    return "-" if n is None else fmt.format(n)


def _fmt_bytes(n: Any) -> str:
    v = _number(n)
    return "-" if v is None else f"{v / (1024 * 1024):.0f}M"


def _fmt_uptime(s: Any) -> str:
    v = _number(s)
    if v is None:
        return "-"
    t = int(v)
    return f"{t // 3600}h{t % 3600 // 60:02d}m" if t >= 3600 else f"{t // 60}m{t % 60:02d}s"


def _waiting(r: dict[str, Any]) -> str:
    """Queued tasks, and how many of them wait on disk (beyond --queue-memory)."""
    disk = _number(r.get("queued_on_disk")) or 0
    queued = _cell(r.get("queued"))
    return f"{queued} ({disk:.0f} on disk)" if disk else queued


def _queues(queues: Any, excluded: Any = None) -> str:
    """The queues a node serves: ``*`` for every queue (status ``queues``: nil), then
    ``-q`` for each it does not take (-X, cancel_consumer)."""
    if isinstance(queues, list):
        return ",".join(map(str, queues))
    return "*" + "".join(f",-{q}" for q in excluded) if isinstance(excluded, list) else "*"


JOURNAL_ERROR_RECENT = 60.0     # s: a journal error older than this is not warned about

# when two nodes disagree about a third at the same incarnation, the graver state wins
_STATE_RANK = {"alive": 0, "suspect": 1, "dead": 2, "left": 3}


def _ok(r: Any) -> bool:
    from mesh.wire.protocol import ControlReply
    return isinstance(r, ControlReply) and r.ok


def _rank(m: dict[str, Any]) -> tuple[float, int]:
    """The newer of two records of a member: its incarnation, then its state."""
    state = m.get("state")
    return (_number(m.get("incarnation")) or 0,
            _STATE_RANK.get(state, 0) if isinstance(state, str) else 0)


def _statuses(cc: Any, peers: list[str], timeout: float) -> dict[str, Any]:
    """``status`` asked of ``peers``: endpoint -> reply, or what went wrong; a reply that
    is not a map (an odd node's) is said as such, not read (a traceback before)."""
    return {ep: r if not _ok(r) or isinstance(r.payload, dict)
            else f"its status is not a map but {type(r.payload).__name__}"
            for ep, r in cc.broadcast(peers, "status", timeout=timeout).items()}


def gather_status(peers: list[str], timeout: float) -> list[dict[str, Any]]:
    """One row per node the mesh knows: nodes answer ``status`` directly; members
    learned from their ``members`` lists are asked too, and those that do not answer
    are shown with the state the membership gives them. An address can carry two names
    (a node restarted there under a new name: the old one dead, the new one alive):
    each gets its own row, with its own state."""
    from mesh.client.control import ControlClient, Refusal
    with ControlClient() as cc:
        statuses = _statuses(cc, peers, timeout)
        answered = [ep for ep, r in statuses.items() if _ok(r)]
        members: dict[str, dict[str, dict[str, Any]]] = {}      # endpoint -> node -> record
        for r in cc.broadcast(answered, "members", timeout=timeout).values():
            if not _ok(r) or not isinstance(r.payload, list):   # type: ignore[union-attr]
                continue
            for m in r.payload:                                  # type: ignore[union-attr]
                if not isinstance(m, dict) or not isinstance(m.get("endpoint"), str):
                    continue
                at = members.setdefault(m["endpoint"], {})
                name = str(m.get("node", "?"))
                old = at.get(name)
                if old is None or _rank(m) > _rank(old):
                    at[name] = m
        # (names as text: an odd node's may be a list, no key of a set)
        answered_ids = {str(r.payload.get("node")) for r in statuses.values() if _ok(r)}
        more = [ep for ep, at in members.items() if ep not in statuses and any(
            m.get("state") == "alive" and name not in answered_ids for name, m in at.items())]
        statuses.update(_statuses(cc, more, timeout))
    rows = []
    seen: set[str] = set()       # a node reached through a seed and its advertised address: once
    for ep in dict.fromkeys([*peers, *members]):
        r = statuses.get(ep)  # type: ignore[assignment]
        at = members.get(ep, {})
        node_id = str(r.payload.get("node")) if _ok(r) else ""  # type: ignore[union-attr]
        if _ok(r):
            if node_id not in seen:
                seen.add(node_id)
                row = dict(r.payload)                            # type: ignore[union-attr]
                row["node"] = node_id           # (the table prints what any node sends)
                row["address"] = str(row.get("address") or ep)
                row["state"] = str(row.get("state") or "alive")
                m = at.get(node_id)
                if m is not None and row.get("state") == "alive":
                    row["state"] = str(m.get("state", "alive"))  # what the mesh thinks of it
                rows.append(row)
        elif not at:
            rows.append({"node": "?", "address": ep, "answered": False, "error": str(r),
                         "state": "refused" if isinstance(r, Refusal) else "unreachable"})
        for name, m in at.items():                               # the names that did not answer
            if name in seen:
                continue
            seen.add(name)
            load = m.get("load")            # [busy, total, queued], as gossiped
            load = load if isinstance(load, list) and len(load) >= 3 else None
            rows.append({"node": name, "address": ep, "state": str(m.get("state", "?")),
                         "answered": False, "load": load, "error": str(r) if r and not _ok(r) else None})
    for row in rows:
        row.setdefault("answered", True)
    return rows


def pool_range(row: dict[str, Any]) -> str:
    """``2-8`` for an autoscaled pool (min-max), ``4`` for a fixed one, ``-`` if unknown."""
    rng = row.get("pool_range")
    if not (isinstance(rng, list) and len(rng) == 2):
        return "-"
    return f"{rng[0]}-{rng[1]}" if row.get("pool_autoscale") else str(rng[1])


@click.command()
@click.pass_context
def status(ctx: click.Context) -> int:
    """One row per node the mesh knows (alive, suspect, dead, left; unreachable for
    an address that did not answer, refused for a node that turned us down: keys
    missing, other or not accepted, said below the table); exit 1 when no node
    answers.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700,tcp://127.0.0.1:7701 status --json
    """
    from mesh.cli.meshctl import _peers
    rows = gather_status(_peers(ctx), ctx.obj["timeout"])
    answered = sum(1 for r in rows if r["answered"])
    if ctx.obj["json"]:
        click.echo(json_text(rows, indent=2))
    else:
        header = ("NODE", "ADDRESS", "STATE", "MESH", "QUEUES", "KIND", "RANGE", "BUSY", "WAITING",
                  "DONE", "FAILED", "TASKS/S", "CPU%", "MEM", "UPTIME", "VERSION")
        table = [header]
        for r in rows:
            if not r["answered"]:
                # a dead or departed node's last gossiped load is stale: its tasks were
                # taken over (shown as busy/waiting there, they read as stuck)
                load = r.get("load") if r["state"] not in ("dead", "left") else None
                busy = f"{load[0]}/{load[1]}" if load else "-"
                queue = str(load[2]) if load else "-"
                table.append((r["node"], r["address"], r["state"], "-", "-", "-", "-", busy, queue)
                             + ("-",) * 7)
                continue
            table.append((r["node"], r["address"], r["state"], str(r.get("mesh", "-")),
                          _queues(r.get("queues"), r.get("excluded_queues")),
                          str(r.get("pool", "-")), pool_range(r),
                          f"{_cell(r.get('busy'))}/{_cell(r.get('total'))}",
                          _waiting(r), _cell(r.get("succeeded")), _cell(r.get("failed")),
                          _cell(r.get("tasks_per_s")), _cell(r.get("cpu_percent")),
                          _fmt_bytes(r.get("rss_bytes")), _fmt_uptime(r.get("uptime")),
                          str(r.get("version", "-"))))
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        refused = sum(1 for r in rows if r["state"] == "refused")
        click.echo(f"{answered} of {len(rows)} node(s) answered"
                   + (f"; {refused} refused us (why below)" if refused else ""))
        for r in rows:             # why a node asked did not answer (keys, refusal, ...)
            if r["state"] == "refused" and r.get("error"):
                why = str(r["error"]).removeprefix("refused: ")
                click.echo(f"{r['address']} refused us: {why}", err=True)
            elif r["state"] == "unreachable" and r.get("error"):
                click.echo(f"{r['address']}: {r['error']}", err=True)
        for r in rows:             # a journal that failed lately: a full or read-only disk
            age = r.get("journal_error_age") if r["answered"] else None
            if isinstance(age, (int, float)) and age < JOURNAL_ERROR_RECENT:
                click.echo(f"WARNING: node {r['node']}: its journal failed {age:.0f} s ago "
                           f"({r.get('journal_errors', '?')} time(s) since start): "
                           f"{r.get('journal_error')}; it refuses new tasks while it fails",
                           err=True)
        for r in rows:             # a node that can run nothing is a mistake worth shouting
            if r["answered"] and not r.get("registered", True):
                click.echo(f"WARNING: node {r['node']} registers no tasks (its app: "
                           f"{r.get('app') or '?'}): it can run nothing; check its --app", err=True)
    return EXIT_OK if answered else EXIT_FAILURE
