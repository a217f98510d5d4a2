"""``meshctl beat``: the periodic entries, their next and last run, and who fires them.

``gather_beat(peers, timeout)`` is the function behind it (the dashboard can use it
too): every node answers the ``beat`` control command with its own view, and the views
are merged per entry: the newest last run any node knows, and the firing node as the
nodes see it (normally all agree; while membership changes they may not, and then every
view is listed).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import click

from mesh.cli.common import EXIT_FAILURE, EXIT_OK
from mesh.security.text import json_text


def merge_beat(replies: dict[str, Any]) -> dict[str, Any]:
    """Merge ``beat`` replies (endpoint -> ControlReply or error text); see merge_views."""
    from mesh.periodic import merge_views  # (the canvas and schedules: not every meshctl)
    from mesh.wire.protocol import ControlReply
    views: dict[str, Any] = {}
    for ep, r in replies.items():
        if isinstance(r, ControlReply):
            views[r.node if r.ok else ep] = r.payload if r.ok else {"error": r.error}
        else:
            views[ep] = {"error": r}
    return merge_views(views)


def gather_beat(peers: list[str], timeout: float) -> dict[str, Any]:
    """Ask every node in ``peers`` (and every alive member they know) for its view."""
    from mesh.cli.meshctl_status import gather_status
    from mesh.client.control import ControlClient
    endpoints = [row["address"] for row in gather_status(peers, timeout)
                 if row.get("state") == "alive" and isinstance(row.get("address"), str)]
    with ControlClient() as cc:
        return merge_beat(cc.broadcast(endpoints or peers, "beat", timeout=timeout))


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "-"
    d = now - t
    return f"in {-d:.0f}s" if d < 0 else f"{d:.0f}s ago"


NAME_WIDTH = 32   # a longer entry name is printed whole on a line of its own, its row below


def _table(entries: list[dict[str, Any]], now: float) -> list[str]:
    """The entries as a table whose columns fit what they hold: nothing is cut (a name
    or schedule cut at 24 characters made entries that differ only at the end look the
    same). A name longer than NAME_WIDTH stands whole on its own line, and its row
    follows, indented, so the other entries' rows stay narrow."""
    rows = []
    for e in entries:
        last = e.get("last_run")
        if isinstance(last, dict):
            what = "skipped" if last.get("skipped") else f"by {last.get('fired_by')}"
            result = e.get("last_result")
            if isinstance(result, dict) and result.get("due") == last.get("due"):
                what += f" {result.get('state')}"
            last_text = f"{_ago(last.get('due'), now)} {what}"
        else:
            last_text = "never"
        fires = e["fires_on"] or " / ".join(f"{k} (per {','.join(v)})"
                                            for k, v in e["fires_on_views"].items())
        if fires == "None":      # (every view: no node has settled yet)
            fires = "no node yet (settling)"
        rows.append([str(e["name"]), str(e.get("schedule")),
                     f"{e.get('next_run_local', '?')} ({_ago(e.get('next_run'), now)})",
                     last_text, str(fires)])
    heads = ["ENTRY", "SCHEDULE", "NEXT RUN", "LAST RUN", "FIRES ON"]
    widths = [max([len(heads[i])] + [len(r[i]) for r in rows
                                      if i or len(r[i]) <= NAME_WIDTH]) for i in range(4)]

    def line(cells: list[str]) -> str:
        return " ".join(f"{c:{w}}" for c, w in zip(cells, widths)) + f" {cells[4]}"
    out = [line(heads)]
    for r in rows:
        if len(r[0]) > widths[0]:
            out.append(r[0])
            r = ["", *r[1:]]
        out.append(line(r))
    return out


@click.command()
@click.pass_context
def beat(ctx: click.Context) -> int:
    """Periodic entries: schedule, next run, last run, and the node that fires each.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 beat
      meshctl --peers tcp://127.0.0.1:7700 --json beat
    """
    from mesh.cli.meshctl import _peers
    view = gather_beat(_peers(ctx), ctx.obj["timeout"])
    if ctx.obj["json"]:
        click.echo(json_text(view, indent=2, default=str))
        return EXIT_OK if view["nodes"] else EXIT_FAILURE
    if not view["nodes"]:
        for ep, err in view["errors"].items():
            click.echo(f"{ep}: {err}", err=True)
        click.echo("meshctl: no node answered", err=True)
        return EXIT_FAILURE
    now = dt.datetime.now(dt.UTC).timestamp()
    if not view["entries"]:
        click.echo(f"no periodic entries ({len(view['nodes'])} node(s) asked)")
        return EXIT_OK
    for line in _table(view["entries"], now):
        click.echo(line)
    for e in view["entries"]:
        if e.get("waiting"):
            click.echo(f"WARNING: {e['name']}: {e['waiting']} run(s) waiting: no alive node "
                       f"takes its task {e.get('task')!r} (the queue it goes to is served by "
                       f"no node that has the task; see the node's log)")
    zones = {n.get("timezone") for n in view["nodes"].values()}
    digests = {n.get("schedule") for n in view["nodes"].values()}
    click.echo(f"{len(view['nodes'])} node(s); zone {', '.join(sorted(map(str, zones)))}"
               + ("" if len(digests) <= 1 else
                  f"; WARNING: nodes carry {len(digests)} different schedules"))
    return EXIT_OK
