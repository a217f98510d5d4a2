"""``meshctl inspect``: what the nodes hold and take, with Celery's names.

``meshctl inspect ping`` is Celery's ``celery inspect ping``: exit 0 when a node
answers, 1 when none does, so it can be a liveness probe.
"""
from __future__ import annotations

import time
from typing import Any

import click

from mesh.cli.common import node_option
from mesh.cli.meshctl import _controller, _print_per_node

INSPECT = ("active", "reserved", "scheduled", "registered", "stats", "revoked", "ping",
           "active_queues")


def _render_tasks(node: str, items: Any) -> None:
    items = items if isinstance(items, list) else []
    click.echo(f"{node}: {len(items)} task(s)")
    now = time.time()
    for t in items:
        if not isinstance(t, dict):
            continue
        extra = ""
        if t.get("started"):
            extra = f" running {now - float(t['started']):.1f} s, pid {t.get('pid')}"
        elif t.get("eta"):
            extra = f" eta in {float(t['eta']) - now:.1f} s"
        click.echo(f"  {t.get('name')}[{t.get('id')}] args={t.get('args')} "
                   f"kwargs={t.get('kwargs')}{extra}")


def _render(what: str, node: str, a: Any) -> None:
    if what in ("active", "reserved", "scheduled"):
        _render_tasks(node, a)
    elif what == "registered":
        click.echo(f"{node}:")
        for t in a if isinstance(a, list) else []:
            limits = ", ".join(f"{k}={t[k]}" for k in ("rate_limit", "time_limit",
                               "soft_time_limit") if isinstance(t, dict) and t.get(k))
            click.echo(f"  {t.get('name') if isinstance(t, dict) else t}"
                       + (f" ({limits})" if limits else ""))
    elif what == "revoked":
        ids = a if isinstance(a, list) else []
        click.echo(f"{node}: {len(ids)} revoked" + "".join(f"\n  {i}" for i in ids))
    elif what == "ping":
        click.echo(f"{node}: OK pong")
    elif what == "active_queues":
        names = [q.get("name") for q in a if isinstance(q, dict)] if isinstance(a, list) else []
        click.echo(f"{node}: {', '.join(map(str, names)) or '(none)'}")
    else:
        click.echo(f"{node}:")
        for k in sorted(a) if isinstance(a, dict) else []:
            click.echo(f"  {k}: {a[k]}")


@click.command()
@click.argument("what", type=click.Choice(INSPECT))
@node_option("Only these nodes (repeatable, or NAME,NAME).")
@click.pass_context
def inspect(ctx: click.Context, what: str, nodes: tuple[str, ...]) -> int:
    """Ask every node what it holds: active (running), reserved (waiting for a
    child), scheduled (waiting for an eta), registered (task names and limits),
    stats (as status), revoked (ids), ping (is it there: {"ok": "pong"}),
    active_queues (the queues it takes, as Celery's queue dicts). Exit 1 when no
    node answers: `inspect ping` is a liveness probe, as Celery's.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 inspect active
      meshctl --json inspect registered --node node-a
      meshctl --peers tcp://127.0.0.1:7700 inspect ping    # exit 0: a node answered
    """
    from mesh.client.control import PONG, is_error, queue_dicts
    ctx = ctx.find_root()
    answers = _controller(ctx).ask(what, destination=nodes or None)
    if what == "ping":
        answers = {n: a if is_error(a) else PONG for n, a in answers.items()}
    elif what == "active_queues":
        answers = {n: a if is_error(a) else queue_dicts(a) for n, a in answers.items()}
    rc: int = _print_per_node(ctx, answers, lambda node, a: _render(what, node, a))
    if what == "ping" and not ctx.obj["json"]:
        online = sum(1 for a in answers.values() if not is_error(a))
        click.echo(f"{online} node(s) online.")
    return rc
