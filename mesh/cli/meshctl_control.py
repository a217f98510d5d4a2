"""``meshctl control``: change running nodes, and run any registered command.

The subcommands below have their own flags; any other NAME is sent as is, with
``--args`` (a JSON object) as its arguments: the node's own commands (``revoke``,
``status``, ...) and the ones an app registered with ``@control_command`` or
``@inspect_command`` (docs/components.md).
"""
from __future__ import annotations

import json
from typing import Any

import click

from mesh.cli.common import EXIT_USAGE, Seconds, die, node_option
from mesh.cli.meshctl import _controller, _print_per_node
from mesh.security.text import json_text


class ControlGroup(click.Group):
    """A group whose unknown subcommand names are control commands sent as they are."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        known = (super().get_command(ctx, cmd_name)          # Celery's spelling too:
                 or super().get_command(ctx, cmd_name.replace("_", "-")))   # rate_limit
        if known is not None:
            return known
        return _generic(cmd_name)

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0])
        if name.startswith("-"):
            return super().resolve_command(ctx, args)
        return name, self.get_command(ctx, name), args[1:]


def _generic(name: str) -> click.Command:
    @click.command(name, help=f"Send the control command {name!r} to every node.")
    @click.option("--args", "args_json", default="{}", metavar="JSON",
                  help="The command's arguments, a JSON object.")
    @NODE_OPTION
    @click.pass_context
    def run(ctx: click.Context, args_json: str, nodes: tuple[str, ...]) -> int:
        try:
            args = json.loads(args_json)
        except ValueError as e:
            die("meshctl", f"--args must be a JSON object: {e}", EXIT_USAGE)
        if not isinstance(args, dict):
            die("meshctl", "--args must be a JSON object, like '{\"n\": 2}'", EXIT_USAGE)
        return _control_cmd(ctx.find_root(), name, args, nodes)
    return run


@click.group(cls=ControlGroup)
def control() -> None:
    """Change running nodes: rate and time limits, pool size, autoscale, shutdown; and any
    registered command, yours included: meshctl control NAME --args JSON.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 control rate-limit tasks.add 10/s
      meshctl control bump --args '{"n": 2}'     # a command the app registered
    """


def _control_cmd(ctx: click.Context, command: str, args: dict[str, Any],
                 nodes: tuple[str, ...]) -> int:
    ctx = ctx.find_root()
    answers = _controller(ctx).ask(command, args, destination=nodes or None)
    return _print_per_node(ctx, answers, lambda node, a: click.echo(f"{node}: {json_text(a)}"))


NODE_OPTION = node_option("Only these nodes (repeatable, or NAME,NAME; default: all).")


@control.command("rate-limit")
@click.argument("task_name")
@click.argument("rate")
@NODE_OPTION
@click.pass_context
def rate_limit(ctx: click.Context, task_name: str, rate: str, nodes: tuple[str, ...]) -> int:
    """Limit how often each node starts TASK_NAME: 100/m, 10/s, 5/h, or 0 for no limit.

    \b
    Example:
      meshctl control rate-limit reports.build 6/m
    """
    return _control_cmd(ctx, "rate_limit", {"task": task_name, "rate": None if rate == "0" else rate},
                        nodes)


@control.command("time-limit")
@click.argument("task_name")
@click.argument("limits", nargs=-1, metavar="[SOFT [HARD]]",
                type=Seconds(min=0, min_open=True))
@click.option("--soft", type=Seconds(min=0, min_open=True), help="Soft limit, seconds.")
@click.option("--hard", type=Seconds(min=0, min_open=True), help="Hard limit, seconds.")
@NODE_OPTION
@click.pass_context
def time_limit(ctx: click.Context, task_name: str, limits: tuple[float, ...],
               soft: float | None, hard: float | None, nodes: tuple[str, ...]) -> int:
    """Set TASK_NAME's time limits for tasks received from now on (a limit not
    given is none). SOFT [HARD] is Celery's form (celery control time_limit TASK
    SOFT HARD).

    \b
    Example:
      meshctl control time-limit reports.build --soft 50 --hard 60
      meshctl control time_limit reports.build 50 60
    """
    if limits:
        if len(limits) > 2:
            die("meshctl", "time-limit takes TASK_NAME [SOFT [HARD]]", EXIT_USAGE)
        if soft is not None or hard is not None:
            die("meshctl", "time-limit: give the limits as SOFT [HARD] or as --soft/--hard, "
                "not both", EXIT_USAGE)
        soft, hard = limits[0], (limits[1] if len(limits) > 1 else None)
    return _control_cmd(ctx, "time_limit", {"task": task_name, "soft": soft, "hard": hard}, nodes)


@control.command("pool-grow")
@click.argument("n", type=click.IntRange(1, 1000), default=1)
@NODE_OPTION
@click.pass_context
def pool_grow(ctx: click.Context, n: int, nodes: tuple[str, ...]) -> int:
    """Add N children to each node's pool.

    \b
    Example:
      meshctl control pool-grow 2 --node node-a
    """
    return _control_cmd(ctx, "pool_grow", {"n": n}, nodes)


@control.command("pool-shrink")
@click.argument("n", type=click.IntRange(1, 1000), default=1)
@NODE_OPTION
@click.pass_context
def pool_shrink(ctx: click.Context, n: int, nodes: tuple[str, ...]) -> int:
    """Retire N children from each node's pool (idle ones now, busy ones after their
    task; never below one).

    \b
    Example:
      meshctl control pool-shrink 1
    """
    return _control_cmd(ctx, "pool_shrink", {"n": n}, nodes)


@control.command("autoscale")
@click.argument("max_workers", metavar="MAX", type=click.IntRange(1, 1000))
@click.argument("min_workers", metavar="MIN", type=click.IntRange(1, 1000), default=1)
@NODE_OPTION
@click.pass_context
def autoscale(ctx: click.Context, max_workers: int, min_workers: int, nodes: tuple[str, ...]) -> int:
    """Autoscale each node's pool between MIN and MAX workers (Celery's autoscale
    command); a node started without --autoscale starts autoscaling.

    \b
    Example:
      meshctl control autoscale 8 2
    """
    if min_workers > max_workers:
        die("meshctl", f"MIN ({min_workers}) must not exceed MAX ({max_workers})", EXIT_USAGE)
    return _control_cmd(ctx, "autoscale", {"max": max_workers, "min": min_workers}, nodes)


@control.command("shutdown")
@NODE_OPTION
@click.pass_context
def shutdown(ctx: click.Context, nodes: tuple[str, ...]) -> int:
    """Warm shutdown, as SIGTERM: give back waiting tasks, finish running ones, exit 0.

    \b
    Example:
      meshctl control shutdown --node node-a
    """
    return _control_cmd(ctx, "shutdown", {}, nodes)


@control.command("add-consumer")
@click.argument("queue")
@click.argument("broker_words", nargs=-1, metavar="[EXCHANGE [TYPE [ROUTING_KEY]]]")
@NODE_OPTION
@click.pass_context
def add_consumer(ctx: click.Context, queue: str, broker_words: tuple[str, ...],
                 nodes: tuple[str, ...]) -> int:
    """Take tasks routed to QUEUE from now on, until the node restarts (Celery's
    add_consumer; its EXCHANGE, TYPE and ROUTING_KEY are taken and not used).

    \b
    Example:
      meshctl control add-consumer reports -d node-a
    """
    if len(broker_words) > 3:
        die("meshctl", "add-consumer takes QUEUE [EXCHANGE [TYPE [ROUTING_KEY]]]", EXIT_USAGE)
    return _control_cmd(ctx, "add_consumer", {"queue": queue}, nodes)


@control.command("cancel-consumer")
@click.argument("queue")
@NODE_OPTION
@click.pass_context
def cancel_consumer(ctx: click.Context, queue: str, nodes: tuple[str, ...]) -> int:
    """Take no more tasks routed to QUEUE, until the node restarts (Celery's
    cancel_consumer; tasks the node holds still run).

    \b
    Example:
      meshctl control cancel-consumer reports -d node-a
    """
    return _control_cmd(ctx, "cancel_consumer", {"queue": queue}, nodes)


def _events_command(name: str, on: bool) -> None:
    @control.command(name)
    @NODE_OPTION
    @click.pass_context
    def run(ctx: click.Context, nodes: tuple[str, ...]) -> int:
        return _control_cmd(ctx, name.replace("-", "_"), {}, nodes)
    run.help = (f"{'Publish' if on else 'Stop publishing'} task events (task-*) to subscribers, "
                f"until the node restarts (Celery's {name.replace('-', '_')}).\n\n"
                f"\b\nExample:\n  meshctl control {name} -d node-a")


_events_command("enable-events", True)
_events_command("disable-events", False)
