"""``meshctl``: look at and talk to a running mesh."""
from __future__ import annotations

import json
import os
from typing import Any

import click

from mesh.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Seconds,
    die,
    run_cli,
)
from mesh.security.text import json_text

if __name__ == "__main__":
    # `python -m mesh.cli.meshctl`: the subcommands' modules import mesh.cli.meshctl,
    # which is not this copy (__main__); run that module, as the console script does
    # (this copy, going on, failed with a circular ImportError)
    from mesh.cli.meshctl import main as _main
    _main()


def _peers(ctx: click.Context) -> list[str]:
    from mesh.config import check_endpoint
    from mesh.exceptions import ConfigError
    raw = ctx.obj["peers"] or os.environ.get("MESH_PEERS", "")
    peers = [p.strip() for p in raw.split(",") if p.strip()]
    if not peers:
        from mesh.discovery.mdns import EVERY_NODE_SETTLE, browse_sync
        ifaces = [i.strip() for i in os.environ.get("MESH_MDNS_INTERFACES", "").split(",") if i.strip()]
        meshes: set[str] = set()
        peers = list(browse_sync(timeout=ctx.obj["timeout"], interfaces=ifaces or None,
                                 settle=EVERY_NODE_SETTLE, mesh=ctx.obj.get("mesh"),
                                 meshes=meshes).values())
        if len(meshes) > 1:
            names = ", ".join(repr(m) for m in sorted(meshes))
            click.echo(f"meshctl: mDNS found nodes of {len(meshes)} meshes ({names}); talking to "
                       "all of them: --mesh NAME picks one", err=True)
    if not peers:
        which = f" of mesh {ctx.obj['mesh']!r}" if ctx.obj.get("mesh") is not None else ""
        die("meshctl", f"no nodes{which} found: mDNS found none within --timeout; use --peers "
            "tcp://HOST:PORT or set MESH_PEERS", EXIT_FAILURE)
    try:
        for p in peers:
            check_endpoint(p)
    except ConfigError as e:
        where = "" if ctx.obj["peers"] or not os.environ.get("MESH_PEERS") else "MESH_PEERS: "
        die("meshctl", f"{where}{e}", EXIT_USAGE)
    return peers


# meshctl's options taking a value that are taken after the command too
MOVABLE = ("--timeout", "-t", "--peers", "--mesh", "--keys", "--key-name", "-A", "--app")


class _Meshctl(click.Group):
    """``--json`` and ``--timeout`` (``-j``, ``-t``) are meshctl's options, but
    ``meshctl status --json`` and ``meshctl inspect active -t 5 -j`` (Celery's ``celery
    inspect active --timeout 5 --json``) are what people type: after the command they
    are taken as meshctl's (unless that command has its own); so are ``--peers``,
    ``-A``, ``--keys``... (``meshctl status --peers tcp://...`` said "No such option")."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        cut = args.index("--") if "--" in args else len(args)
        for flag in ("--json", "-j"):
            if flag in args[1:cut] and not self._own_json(args[:cut], flag):
                args = ["--json"] + [a for i, a in enumerate(args) if a != flag or i >= cut]
                cut = args.index("--") if "--" in args else len(args)
        moved: list[str] = []
        rest: list[str] = []
        i = 0
        command_seen = False
        while i < len(args):
            a = args[i]
            if i >= cut:
                rest += args[i:]
                break
            if not command_seen and not a.startswith("-"):
                command_seen = a in self.commands
            elif command_seen and a.split("=", 1)[0] in MOVABLE \
                    and not self._own_json(args[:cut], a.split("=", 1)[0]):
                if a in MOVABLE and i + 1 >= cut:   # (not "No such option")
                    raise click.UsageError(f"Option '{a}' requires an argument.", ctx)
                take = 1 if "=" in a else 2
                moved += args[i:i + take]
                i += take
                continue
            rest.append(a)
            i += 1
        return super().parse_args(ctx, moved + rest)

    def _own_json(self, args: list[str], option: str = "--json") -> bool:
        """Whether the command named in ``args`` has an ``option`` (``--json``) of its
        own (``meshctl keys list --json``): then it is left to it."""
        cmd: click.Command = self
        skip = False
        for a in args:
            if skip:                      # the value of the option before
                skip = False
                continue
            if a.startswith("-"):
                opt = next((p for p in cmd.params if a in getattr(p, "opts", ())), None)
                skip = isinstance(opt, click.Option) and not opt.is_flag and "=" not in a
                continue
            sub = cmd.commands.get(a) if isinstance(cmd, click.Group) else None
            if sub is None:
                break
            cmd = sub
        return cmd is not self and any(option in getattr(p, "opts", ()) for p in cmd.params)


@click.group(cls=_Meshctl,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--peers", metavar="tcp://H:P[,...]",
              help="Nodes to ask (default: MESH_PEERS, else the nodes mDNS finds on this "
                   "machine's network; --mesh NAME keeps those of one mesh).")
@click.option("-j", "--json", "as_json", is_flag=True,
              help="Machine-readable output (also accepted after the command).")
@click.option("-t", "--timeout", type=Seconds(min=0, min_open=True, finite=True), default=2.0,
              show_default=True, help="Seconds to wait for nodes to answer.")
@click.option("--mesh", metavar="NAME", help="Without --peers: only nodes of this mesh (the "
              "app's name), of those mDNS finds.")
@click.option("--keys", "keys", metavar="DIR",
              help="The mesh's keys, for a keyed mesh (meshctl keys init DIR); MESH_KEYS too. "
                   "meshctl uses the directory's admin key (its client key if it has none).")
@click.option("--key-name", metavar="NAME",
              help="Which key pair of --keys to use when it holds several; MESH_KEY_NAME too.")
@click.option("-A", "--app", "app_spec", metavar="MODULE[:ATTR]",
              help="Your app, found as meshnode -A finds it (celery -A's habit): its peers, "
                   "keys and mesh name are the defaults of --peers, --keys and --mesh.")
@click.pass_context
def meshctl(ctx: click.Context, peers: str | None, as_json: bool, timeout: float,
            mesh: str | None, keys: str | None, key_name: str | None,
            app_spec: str | None) -> None:
    """Look at and talk to a running mesh.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 status
      meshctl --keys ~/.mesh-keys --peers tcp://10.0.0.5:7700 status
      meshctl -A proj inspect active        # the nodes proj's app would send to
    """
    ctx.ensure_object(dict)
    if app_spec:
        peers, mesh, keys, key_name = _from_app(app_spec, peers, mesh, keys, key_name)
    ctx.obj.update(peers=peers, json=as_json, timeout=timeout, mesh=mesh)
    # every socket meshctl makes (ControlClient, the client of `call`, events) reads
    # MESH_KEYS: --keys is the same thing, for this process
    if keys:
        os.environ["MESH_KEYS"] = keys
    if key_name:
        os.environ["MESH_KEY_NAME"] = key_name
    if os.environ.get("MESH_KEYS") and ctx.invoked_subcommand != "keys":
        from mesh.exceptions import ConfigError
        from mesh.security.curve import Security
        try:
            Security.from_env()
        except ConfigError as e:
            die("meshctl", f"--keys: {e}", EXIT_USAGE)


def _from_app(spec: str, peers: str | None, mesh: str | None, keys: str | None,
              key_name: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    """--peers, --mesh, --keys and --key-name, each from the app named by -A where
    not given (nor set in the environment): where the app's own client would look."""
    import logging

    from mesh.cli.common import load_app
    from mesh.security.text import safe_logger
    # the app's Celery settings that mesh does not use (broker_url, result_backend...)
    # are for its nodes and web processes to log: meshctl reads only where the nodes
    # are, and printed that paragraph on every run (a probe, `meshctl -A proj inspect
    # ping`, every few seconds). A misspelt setting still fails (ConfigError).
    safe_logger("mesh.conf").setLevel(logging.ERROR)
    app, _where = load_app(spec)
    cfg = app.config                       # Mesh(peers=...), app.conf, MESH_* variables
    if not peers and not os.environ.get("MESH_PEERS") and cfg.peers:
        peers = ",".join(cfg.peers)
    if mesh is None and not peers and cfg.mdns:
        mesh = app.main or None            # mDNS: only the nodes of the app's mesh
    if not keys and not os.environ.get("MESH_KEYS") and cfg.keys:
        keys, key_name = cfg.keys, key_name or cfg.key_name or None
    return peers, mesh, keys, key_name


def _broadcast(ctx: click.Context, command: str) -> dict[str, Any]:
    from mesh.client.control import ControlClient
    with ControlClient() as cc:
        return cc.broadcast(_peers(ctx), command, timeout=ctx.obj["timeout"])


def _reachable_peers(ctx: click.Context) -> list[str]:
    """The peers, once one of them answered a ping within --timeout (a refusal is an
    answer too, but not one at the handshake: such a node takes no message of ours);
    else say that no node could be reached and why, and exit EXIT_UNREACHABLE."""
    from mesh.client.control import ControlClient, KeyRefusal
    peers = _peers(ctx)
    with ControlClient() as cc:
        replies = cc.broadcast(peers, "ping", timeout=ctx.obj["timeout"])
    if all(isinstance(r, KeyRefusal) or (isinstance(r, str) and r.startswith("no answer"))
           for r in replies.values()):
        keys = " or would take our keys" if any(isinstance(r, KeyRefusal)
                                                for r in replies.values()) else ""
        die("meshctl", f"no mesh node could be reached{keys} ("
            + "; ".join(f"{ep}: {r}" for ep, r in replies.items()) + ")", EXIT_UNREACHABLE)
    return peers


@meshctl.command()
@click.pass_context
def ping(ctx: click.Context) -> int:
    """Ping the nodes given (--peers, MESH_PEERS, or those mDNS finds), not the
    rest of the mesh (meshctl inspect ping asks every node the mesh knows); exit 1
    when none answers.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 ping
    """
    from mesh.wire.protocol import ControlReply
    replies = _broadcast(ctx, "ping")
    ok = {ep: r for ep, r in replies.items() if isinstance(r, ControlReply) and r.ok}
    if ctx.obj["json"]:
        click.echo(json_text({ep: (r.payload if isinstance(r, ControlReply) else {"error": r})
                               for ep, r in replies.items()}, indent=2))
    else:
        for ep, r in replies.items():
            if isinstance(r, ControlReply):      # (an odd node's answer: not a map)
                said = r.payload if isinstance(r.payload, dict) else {}
                click.echo(f"{ep}: pong from {r.node} (mesh {said.get('version')})")
            else:
                click.echo(f"{ep}: {r}", err=True)
    return EXIT_OK if ok else EXIT_FAILURE


@meshctl.command()
@click.argument("task_name")
@click.option("--args", "-a", "args_json", default="[]", metavar="JSON",
              help="Positional arguments, a JSON array.")
@click.option("--kwargs", "-k", "kwargs_json", default="{}", metavar="JSON",
              help="Keyword arguments, a JSON object.")
@click.option("--countdown", type=Seconds(min=0), metavar="S",
              help="Run it no sooner than S seconds from now.")
@click.option("--eta", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%z",
                                            "%Y-%m-%d %H:%M:%S"]),
              help="Run it no sooner than this ISO 8601 time (UTC without a zone, as Celery's).")
@click.option("--expires", type=Seconds(min=0, min_open=True), metavar="S",
              help="Revoke it if it has not started S seconds from now.")
@click.option("--queue", "-Q", metavar="QUEUE", help="Route it to this queue.")
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--result-timeout", type=Seconds(min=0, min_open=True), default=60.0,
              show_default=True, help="With --wait, seconds to wait for the result.")
@click.pass_context
def call(ctx: click.Context, task_name: str, args_json: str, kwargs_json: str,
         countdown: float | None, eta: Any, expires: float | None, queue: str | None,
         wait: bool, result_timeout: float) -> int:
    """Submit a task by name. Prints the task id, or with --wait the result as JSON;
    exit 1 if the task failed or timed out, or (without --wait) if no node took it:
    none acknowledged it within max(--timeout, 5) seconds, or it was refused (no
    alive node has that task or serves its queue); exit 4 if no node could be
    reached (none answered a ping within --timeout, or each refused our keys).

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 call examples.tasks.add --args '[2, 3]' --wait
    """
    try:
        args = json.loads(args_json)
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as e:
        die("meshctl", f"--args/--kwargs must be JSON: {e}", EXIT_USAGE)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        die("meshctl", "--args must be a JSON array and --kwargs a JSON object", EXIT_USAGE)
    from mesh import Mesh
    from mesh.exceptions import ConfigError, EncodeError, NotRegistered
    app = Mesh("meshctl", peers=_reachable_peers(ctx))
    try:
        try:
            r = app.send_task(task_name, args=args, kwargs=kwargs, countdown=countdown,
                              eta=eta, expires=expires, queue=queue)
        except (ConfigError, EncodeError, NotRegistered) as e:
            # refused here, before it went: an empty task name, a queue name no node
            # can have ('', 'a,b'), an integer msgpack cannot carry (a traceback before)
            die("meshctl", str(e), EXIT_USAGE)
        if not wait:
            click.echo(r.id)
            # a node has it only once it acknowledged it (journalled): until then, this
            # process exiting would lose it
            ack_timeout = max(ctx.obj["timeout"], 5.0)
            if app.client.flush(ack_timeout):
                click.echo(f"meshctl: no node acknowledged task {r.id} within {ack_timeout:g} s "
                           f"(tried {', '.join(app.client.endpoints())}); it may never run",
                           err=True)
                app.client.close(linger=0)
                return EXIT_FAILURE
            if r.failed() and not r.traceback:   # refused (no node ran it): it never will
                return _report(ctx, r, None)
            return EXIT_OK
        return _report(ctx, r, result_timeout)
    finally:
        app.close()


def _did_you_mean(ctx: click.Context, name: str | None) -> None:
    """The registered task name closest to ``name``, asked of the nodes, if one is."""
    import difflib
    names = {t.get("name") if isinstance(t, dict) else t
             for a in _controller(ctx).ask("registered").values() if isinstance(a, list)
             for t in a}
    known = sorted(n for n in names if isinstance(n, str))
    # compared whole, a long module name made 'tasks_app.nope' close to 'tasks_app.seq':
    # the last part is compared within the module, else the module's for the same last
    module, _, last = (name or "").rpartition(".")
    same = {n.rpartition(".")[2]: n for n in known if n.rpartition(".")[0] == module}
    hint = [same[h] for h in difflib.get_close_matches(last, sorted(same), n=1)] \
        or difflib.get_close_matches(name or "", [n for n in known
                                                  if n.rpartition(".")[2] == last], n=1)
    if hint:
        click.echo(f"meshctl: did you mean {hint[0]!r}? (meshctl inspect registered lists "
                   "the nodes' tasks)", err=True)


def _report(ctx: click.Context, r: Any, timeout: float | None) -> int:
    """Wait for ``r`` (unless ``timeout`` is None), print its outcome; the exit code."""
    from mesh import states
    from mesh.exceptions import MeshError, NotRegistered, ResultIgnored
    try:
        value = r.get(timeout=timeout) if timeout is not None else r.get(timeout=0.001)
    except ResultIgnored as e:     # it ended well, keeping no value (ignore_result, Ignore)
        if ctx.obj["json"]:
            click.echo(json_text({"id": r.id, "state": r.state, "result": None, "ignored": True}))
        else:
            click.echo(f"meshctl: {e}", err=True)
        return EXIT_OK
    except MeshError as e:
        state = r.state
        if ctx.obj["json"]:
            click.echo(json_text({"id": r.id, "state": state, "error": str(e),
                                   "traceback": r.traceback}))
        elif state in states.READY_STATES:
            if r.traceback:
                click.echo(r.traceback.rstrip(), err=True)
            click.echo(f"meshctl: task {r.id} {state}: {type(e).__name__}: {e}", err=True)
            if isinstance(e, NotRegistered):     # a typo'd name: the nodes' closest one
                _did_you_mean(ctx, r.name)
        elif state == states.UNKNOWN:
            click.echo(f"meshctl: task {r.id} is UNKNOWN: no node knows it (never sent, "
                       "sent to a node that is gone, or its result expired)", err=True)
        else:
            click.echo(f"{state}" if timeout is None else
                       f"meshctl: task {r.id} is still {state} after {timeout:g} s", err=True)
            return EXIT_OK if timeout is None else EXIT_FAILURE
        return EXIT_FAILURE
    except Exception as e:   # the task's own exception type, rebuilt here
        if ctx.obj["json"]:
            click.echo(json_text({"id": r.id, "state": r.state, "error": f"{type(e).__name__}: {e}",
                                   "traceback": r.traceback}))
        else:
            if r.traceback:
                click.echo(r.traceback.rstrip(), err=True)
            click.echo(f"meshctl: task {r.id} {r.state}: {type(e).__name__}: {e}", err=True)
        return EXIT_FAILURE
    if ctx.obj["json"]:
        click.echo(json_text({"id": r.id, "state": r.state, "result": value}, default=str))
    else:
        click.echo(json_text(value, default=str))
    return EXIT_OK


@meshctl.command()
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Wait for the task to finish.")
@click.option("--result-timeout", type=Seconds(min=0, min_open=True), default=60.0,
              show_default=True, help="With --wait, seconds to wait for the result.")
@click.option("--tree", is_flag=True, help="A workflow (what apply_async returned): its steps "
              "and the state of each.")
@click.pass_context
def result(ctx: click.Context, task_id: str, wait: bool, result_timeout: float,
           tree: bool = False) -> int:
    """Look up a task by id on every node, from any machine: prints its result as
    JSON when it is done, else its state (UNKNOWN when the nodes were asked and none
    knows it). Exit 1 when it failed, is UNKNOWN, or --wait timed out; exit 4 when
    no node could be reached or each refused our keys (nothing was asked).

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 result 01a22f7a-63ef-eaf0-2fab-7cf25ef72963 --wait
    """
    from mesh import Mesh, states
    from mesh.exceptions import UnreachableError
    app = Mesh("meshctl", peers=_reachable_peers(ctx))
    try:
        if tree:
            from mesh.cli.meshctl_tree import tree as show_tree
            return show_tree(app, task_id, ctx.obj["json"])
        r = app.AsyncResult(task_id)
        state = r.state                  # asks every node
        if not wait and state not in states.READY_STATES:
            if ctx.obj["json"]:
                click.echo(json_text({"id": task_id, "state": state}))
            else:
                click.echo(state)
            return EXIT_FAILURE if state == states.UNKNOWN else EXIT_OK
        return _report(ctx, r, result_timeout if wait else None)
    except UnreachableError as e:        # the nodes went away after the ping
        die("meshctl", str(e), EXIT_UNREACHABLE)
    finally:
        app.close()


def _controller(ctx: click.Context) -> Any:
    from mesh.client.control import Controller
    peers = _peers(ctx)
    return Controller(lambda: peers, timeout=ctx.obj["timeout"])


def _print_per_node(ctx: click.Context, answers: dict[str, Any], render: Any) -> int:
    """One block per node; exit 1 if no node answered, or a node named (-d) is none
    of the mesh's (its block says which there are: a misspelt name is not a "yes")."""
    from mesh.client.control import NO_SUCH_NODE
    if ctx.obj["json"]:
        click.echo(json_text(answers, indent=2, default=str, sort_keys=True))
    else:
        for node in sorted(answers):
            a = answers[node]
            if isinstance(a, dict) and set(a) == {"error"}:
                click.echo(f"{node}: ERROR {a['error']}")
            else:
                render(node, a)
    ok = [a for a in answers.values() if not (isinstance(a, dict) and set(a) == {"error"})]
    unknown = [a for a in answers.values() if isinstance(a, dict) and set(a) == {"error"}
               and str(a["error"]).startswith(NO_SUCH_NODE)]
    return EXIT_OK if ok and not unknown else EXIT_FAILURE


@meshctl.command()
@click.argument("task_ids", nargs=-1, required=True)
@click.option("--terminate", is_flag=True, help="Also kill the child running it (it is replaced).")
@click.option("--signal", "sig", default="SIGKILL", show_default=True,
              help="Signal for --terminate.")
@click.pass_context
def revoke(ctx: click.Context, task_ids: tuple[str, ...], terminate: bool, sig: str) -> int:
    """Revoke tasks on every node: one not started yet never runs (on any node, now
    or when it arrives later); with --terminate a running one is killed. Its
    owner gets REVOKED (TaskRevokedError). Exit 1 when no node answers.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 revoke 01a22f7a-63ef-eaf0-2fab-7cf25ef72963 --terminate
    """
    answers = _controller(ctx).ask("revoke", {"task_ids": list(task_ids),
                                                    "terminate": terminate, "signal": sig})

    def render(node: str, a: Any) -> None:
        parts = [f"{k}: {', '.join(a[k])}" for k in ("dropped", "terminated", "still_running")
                 if isinstance(a, dict) and a.get(k)]
        click.echo(f"{node}: revoked" + (f" ({'; '.join(parts)})" if parts else ""))

    code = _print_per_node(ctx, answers, render)
    held = {t for a in answers.values() if isinstance(a, dict)
            for k in ("dropped", "terminated", "still_running") for t in a.get(k) or ()}
    nowhere = [t for t in task_ids if t not in held]
    if nowhere and code == EXIT_OK and not ctx.obj["json"]:   # (a typo'd id looked done)
        click.echo(f"no node that answered held {', '.join(nowhere)}: nothing stopped now (a finished task "
                   "stays finished: meshctl result ID); sent later, it will not run")
    return code


def _queue_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [q.strip() for q in value.split(",") if q.strip()]
    if not names:
        raise click.BadParameter("give one or more queue names, separated by commas")
    return names


@meshctl.command()
@click.option("-Q", "--queues", metavar="Q1,Q2", help="Only tasks routed to these queues.")
@click.option("-X", "--exclude-queues", "exclude", metavar="Q1,Q2",
              help="Not tasks routed to these queues.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queues: str | None, exclude: str | None, force: bool) -> int:
    """Revoke every task waiting in a node's queue that has not started, on every
    node (Celery's purge). Their owners get REVOKED (TaskRevokedError). Running
    tasks, tasks sent ahead to a child and tasks waiting for an eta, a countdown, a
    retry or a rate limit stay (revoke those by id). Exit 1 when a node does not
    answer or refuses.

    \b
    Example:
      meshctl --peers tcp://127.0.0.1:7700 purge -Q emails -f
    """
    only, skip = _queue_list(queues), _queue_list(exclude)
    if not force:
        which = f"queue(s) {', '.join(only)}" if only else "every queue"
        if skip:
            which += f" except {', '.join(skip)}"
        click.confirm(f"Revoke every task waiting in {which} on every node? There is no "
                      "undo", abort=True, err=True)
    args: dict[str, Any] = {}
    if only is not None:
        args["queues"] = only
    if skip is not None:
        args["exclude"] = skip
    answers = _controller(ctx).ask("purge", args)

    filtered = bool(only or skip)       # the tasks on disk are looked at after the reply

    def render(node: str, a: Any) -> None:
        disk = a.get("on_disk", 0) if isinstance(a, dict) else 0
        click.echo(f"{node}: {a.get('purged', 0) if isinstance(a, dict) else a} task(s) purged"
                   + ("" if not disk else
                      f"; {disk} waiting on disk are being looked at, those of the queues "
                      "asked purged (the node logs how many)" if filtered else
                      f", and {disk} waiting on disk being purged"))

    code = _print_per_node(ctx, answers, render)
    if not ctx.obj["json"]:
        ok = [a for a in answers.values() if isinstance(a, dict) and "error" not in a]
        total = sum(int(a.get("purged", 0)) for a in ok)
        disk = sum(int(a.get("on_disk", 0)) for a in ok)
        if filtered and disk:
            click.echo(f"{total} task(s) purged on {len(answers)} node(s), and up to {disk} "
                       "waiting on disk")
        else:
            click.echo(f"{total + disk} task(s) purged on {len(answers)} node(s)")
    failed = any(isinstance(a, dict) and "error" in a for a in answers.values())
    return EXIT_FAILURE if failed else code


from mesh.cli.meshctl_beat import beat  # noqa: E402
from mesh.cli.meshctl_control import control  # noqa: E402
from mesh.cli.meshctl_inspect import inspect  # noqa: E402
from mesh.cli.meshctl_keys import keys  # noqa: E402
from mesh.cli.meshctl_monitor import events, top  # noqa: E402
from mesh.cli.meshctl_status import gather_status, pool_range, status  # noqa: E402,F401

meshctl.add_command(status)
meshctl.add_command(control)
meshctl.add_command(inspect)
meshctl.add_command(events)
meshctl.add_command(top)
meshctl.add_command(beat)
meshctl.add_command(keys)


def main() -> None:
    run_cli(meshctl, "meshctl")
