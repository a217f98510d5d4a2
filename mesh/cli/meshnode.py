"""``meshnode``: run a mesh node (the daemon) for an app's tasks."""
from __future__ import annotations

import asyncio
import gc
import logging
import sys
from typing import Any, NoReturn

import click

from mesh.cli import worker_habits
from mesh.cli.common import EXIT_OK, EXIT_START, EXIT_USAGE, die, load_app, run_cli
from mesh.exceptions import ConfigError
from mesh.loader import discover_tasks
from mesh.security.text import safe_logger

LOGLEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False)
POSITIVE = click.FloatRange(min=0, min_open=True)


CELERY_COMMANDS = {
    "worker": "meshnode is the worker: `celery -A {app} worker ...` is "
              "`meshnode -A {app} ...` (drop 'worker')",
    "beat": "mesh has no beat process: every node carries the app's beat_schedule and exactly "
            "one fires each run; start nodes with `meshnode -A {app}` (docs/periodic.md)",
}


def _queue_names(value: str | None, flag: str = "-Q") -> str | None:
    """``-Q ""`` (or only commas) names no queue: an error, not every queue."""
    if value is not None and not any(q.strip() for q in value.split(",")):
        raise click.BadParameter(f"{value!r} names no queue; leave {flag} out to "
                                 + ("take every queue" if flag == "-Q" else "exclude none"))
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--app", "-A", "app_spec", required=True, metavar="MODULE[:ATTR]",
              help="Module holding the mesh app, found as celery -A finds it: "
                   "its app, celery or mesh attribute, then its celery or mesh "
                   "submodule (-A proj finds proj.celery:app).")
@click.option("--name", "-n", "--hostname", "name",
              help="Node id; default hostname-pid. Celery's patterns: worker1@%h.")
@click.option("--bind", "-b", metavar="tcp://HOST:PORT",
              help="Front door to bind (default: with --keys or --insecure tcp://0.0.0.0:7700, every "
                   "interface, advertised as this machine's LAN address; without them "
                   "tcp://127.0.0.1:7700, loopback only).")
@click.option("--advertise", metavar="tcp://HOST:PORT",
              help="Endpoint peers and clients should use (default: from --bind).")
@click.option("--peers", metavar="tcp://H:P[,...]", help="Static seeds; MESH_PEERS too.")
@click.option("--no-mdns", is_flag=True, default=None, help="No multicast discovery.")
@click.option("--profile", type=click.Choice(["lan", "local", "test"]),
              help="Membership timings (default lan: a dead node is known in about 2 s).")
@click.option("--dead-node-reclaim", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Seconds a dead or departed member is remembered (listed, pinged now and "
                   "then in case it comes back) before it is forgotten and its sockets closed "
                   "(default: the profile's, 60 s on lan).")
@click.option("--workflow-stall", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="Seconds a group or chord coordinated here waits without news of its members "
                   "before it asks the mesh where they are (default 10; doubling up to 120).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1),
              help="Workers: prefork children, or threads with --pool threads (default: CPU count).")
@click.option("--pool", "-P", "pool", type=click.Choice(["prefork", "threads", "solo"]),
              help="prefork (default): N children, one task each; threads: one child, N tasks "
                   "at once on threads; solo: one child, one task at a time. See docs/pools.md.")
@click.option("--autoscale", metavar="MAX,MIN",
              help="Grow the pool up to MAX workers while tasks wait and CPU allows; shrink back "
                   "to MIN after --autoscale-keepalive seconds with spare workers.")
@click.option("--autoscale-keepalive", type=click.FloatRange(min=0), metavar="S",
              help="Seconds the pool must have had spare workers before it shrinks (default 30).")
@click.option("--autoscale-max-cpu", type=click.FloatRange(min=0, max=100, min_open=True),
              metavar="PERCENT", help="No growth while the machine's CPU is above this (default 90; "
                                      "100: never held back).")
@click.option("--async-concurrency", type=click.IntRange(min=1), metavar="N",
              help="async def tasks one child runs at once on its event loop (default 100).")
@click.option("--autoreload", is_flag=True, default=None,
              help="When a source file of the app changes, load the new code and replace the "
                   "children (running tasks finish on the old code).")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), metavar="N",
              help="Replace a child after N tasks.")
@click.option("--max-memory-per-child", type=click.IntRange(min=1), metavar="KIB",
              help="Replace a child whose RSS passes KIB after a task.")
@click.option("--time-limit", type=POSITIVE, metavar="S", help="Hard time limit: kill the child.")
@click.option("--soft-time-limit", type=POSITIVE, metavar="S",
              help="Soft time limit: raise SoftTimeLimitExceeded in the task.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), metavar="S",
              help="On SIGTERM, how long running tasks may finish (default 30).")
@click.option("--data-dir", metavar="DIR", help="Journal and results (default ~/.local/share/mesh/NAME, or HOST-MESH-portPORT "
                   "without --name: a node restarted on the same port finds its journal). A "
                   "journal belongs to one mesh: a node of another refuses to start on it.")
@click.option("--no-journal", is_flag=True, default=None,
              help="Keep no journal: faster, but a node that dies forgets the tasks it held "
                   "(their clients still resend them) and keeps no results.")
@click.option("--journal-fsync", is_flag=True, default=None,
              help="fsync every journal commit, so it survives power loss, not just a crash.")
@click.option("--result-expires", type=POSITIVE, metavar="S",
              help="Keep finished tasks' results this long (default 86400).")
@click.option("--replicas", type=click.IntRange(min=1, max=2), metavar="N",
              help="Copies of each held task and result (default 2: this node and a backup "
                   "node, which runs the task if this one dies; 1: this node only).")
@click.option("--no-events", is_flag=True, default=None,
              help="Publish no monitoring events (no events port; meshctl events/top see nothing).")
@click.option("--http", "http", metavar="HOST:PORT",
              help="Serve the dashboard (/), JSON API (/api/...), Prometheus /metrics and /healthz "
                   "here (PORT alone: loopback). Off by default.")
@click.option("--queues", "-Q", metavar="Q1[,Q2...]", callback=lambda ctx, param, v: _queue_names(v),
              help="Take only tasks routed to these queues (default: every queue); MESH_QUEUES too.")
@click.option("--exclude-queues", "-X", metavar="Q1[,Q2...]",
              callback=lambda ctx, param, v: _queue_names(v, "-X"),
              help="Take every queue but these (of --queues, if given), as Celery's -X; "
                   "MESH_EXCLUDE_QUEUES too.")
@click.option("--purge", "--discard", "purge", is_flag=True, default=None,
              help="At start, revoke every task this node's journal holds unfinished (queued, "
                   "or on disk): they finish REVOKED and do not run; logs how many.")
@click.option("--uid", metavar="USER", help="Run as this user (name or id) once started, as "
                                             "Celery's --uid (needs root).")
@click.option("--gid", metavar="GROUP", help="Run as this group (name or id); default with "
                                              "--uid: the user's group.")
@click.option("--keys", "keys", metavar="DIR",
              help="The mesh's keys (meshctl keys init DIR): every plane CurveZMQ-authenticated "
                   "and encrypted; MESH_KEYS too.")
@click.option("--insecure", is_flag=True, default=None,
              help="Without keys, serve beyond loopback anyway (anyone who reaches the node may "
                   "run tasks and control it: a network you trust only).")
@click.option("--quota-tasks", type=click.IntRange(min=1), metavar="N",
              help="Tasks one sender may have held by this node (default 100000).")
@click.option("--quota-bytes", type=click.IntRange(min=1024), metavar="BYTES",
              help="Bytes of tasks one sender may have held by this node (default 256 MiB).")
@click.option("--queue-memory", type=click.IntRange(min=0), metavar="N",
              help="Queued tasks kept in memory (default 20000); beyond, plain tasks wait in the "
                   "journal and are read back in order (0: all in memory).")
@click.option("--max-eta", type=click.FloatRange(min=0), metavar="S",
              help="How far ahead an eta or countdown may be (default 2592000, 30 days; 0: no limit).")
@click.option("--loglevel", "-l", type=LOGLEVELS, help="Log level (default INFO).")
@click.option("--beat", "-B", is_flag=True, default=False,
              help="Celery's embedded beat: not needed (every node carries the beat "
                   "schedule and exactly one fires each run); taken and logged.")
@worker_habits.options
@click.argument("extra", nargs=-1, metavar="")
def meshnode(app_spec: str, name: str | None, bind: str | None, advertise: str | None,
             peers: str | None,
             no_mdns: bool | None, profile: str | None, dead_node_reclaim: float | None,
             workflow_stall: float | None, concurrency: int | None,
             pool: str | None, autoscale: str | None, autoscale_keepalive: float | None,
             autoscale_max_cpu: float | None, async_concurrency: int | None,
             autoreload: bool | None, max_tasks_per_child: int | None,
             max_memory_per_child: int | None, time_limit: float | None,
             soft_time_limit: float | None, shutdown_timeout: float | None,
             data_dir: str | None, no_journal: bool | None, journal_fsync: bool | None,
             result_expires: float | None, replicas: int | None, no_events: bool | None,
             http: str | None, keys: str | None, insecure: bool | None, quota_tasks: int | None,
             quota_bytes: int | None, queue_memory: int | None, max_eta: float | None, loglevel: str | None,
             queues: str | None, exclude_queues: str | None, purge: bool | None,
             uid: str | None, gid: str | None, beat: bool, extra: tuple[str, ...],
             logfile: str | None,
             pidfile: str | None, detach: bool, umask: str | None, workdir: str | None,
             **habits: Any) -> int:
    """Run a mesh node for the tasks of an app.

    \b
    Example:
      meshnode --app examples.tasks --bind tcp://127.0.0.1:7700 --concurrency 2
      meshnode --app examples.tasks --autoscale 8,2 --autoreload
    """
    from mesh import signals
    from mesh.config import Config
    from mesh.node.node import Node, NodeStartError

    if extra:   # `meshnode -A proj worker ...`: Celery's command with the program changed
        if extra[0] in CELERY_COMMANDS:
            raise click.UsageError(f"{extra[0]!r} is a Celery subcommand: {CELERY_COMMANDS[extra[0]].format(app=app_spec)}")
        raise click.UsageError(f"unexpected argument(s): {' '.join(extra)}")
    if detach:
        raise click.UsageError(f"--detach: {worker_habits.DETACH}")
    try:
        worker_habits.enter(workdir, umask)
    except ConfigError as e:
        die("meshnode", str(e), EXIT_USAGE)
    early = EarlyLogs.hold()        # the app's import logs before the node's logging is set

    def fail(message: str) -> NoReturn:   # what the app's import logged, then the error
        early.replay()
        die("meshnode", message, EXIT_USAGE)

    try:
        app, where = load_app(app_spec)
        app.origin = where
        try:
            app.import_modules()           # the settings imports and include: more tasks
            discover_tasks(app)            # autodiscover_tasks(): a module that raises says where
            signals.import_modules.send(sender=app)
            config = Config.build(
                defaults=app.conf.node_options(),   # what the app's code set; flags win
                name=name, bind=bind, advertise=advertise, peers=peers, mdns=False if no_mdns else None,
                profile=profile, dead_node_reclaim=dead_node_reclaim, workflow_stall=workflow_stall,
                concurrency=concurrency, pool=pool, autoscale=autoscale,
                autoscale_keepalive=autoscale_keepalive, autoscale_max_cpu=autoscale_max_cpu,
                async_concurrency=async_concurrency, autoreload=autoreload, app=app_spec,
                max_tasks_per_child=max_tasks_per_child,
                max_memory_per_child=max_memory_per_child, time_limit=time_limit,
                soft_time_limit=soft_time_limit, shutdown_timeout=shutdown_timeout,
                data_dir=data_dir, journal=False if no_journal else None, journal_fsync=journal_fsync,
                result_expires=result_expires, replicas=replicas, events=False if no_events else None,
                http=http, keys=keys, insecure=insecure, quota_tasks=quota_tasks,
                quota_bytes=quota_bytes, queue_memory=queue_memory, max_eta=max_eta,
                loglevel=loglevel.upper() if loglevel else None, queues=queues,
                exclude_queues=exclude_queues, purge=purge)
        except ConfigError as e:
            fail(str(e))
        from mesh.security.exposure import refusal
        why = refusal(config)
        if why is not None:
            fail(why)
        if config.keys:                    # a directory that is not one: say so now (exit 2)
            from mesh.security.keys import NODE, KeyRing
            try:
                KeyRing(config.keys, NODE)
            except ConfigError as e:
                fail(f"--keys: {e}")
        try:
            # as Celery's worker: the files it opens (pidfile, logfile, journal) are the user's
            worker_habits.drop_privileges(uid, gid)
            if pidfile:
                worker_habits.write_pidfile(worker_habits.expand_file_name(pidfile, config.node_name))
            logfile = worker_habits.expand_file_name(logfile, config.node_name) if logfile else None
            setup_logging(app, config, logfile)
        except ConfigError as e:
            fail(str(e))
        early.configured = True
    finally:
        early.replay()
    from mesh.config import unknown_env
    for line in unknown_env():
        safe_logger("mesh.node").warning("%s", line)
    said = worker_habits.not_used(habits)
    if said:
        safe_logger("mesh.node").warning("%s", said)
    if beat:
        safe_logger("mesh.node").warning(
            "-B (Celery's embedded beat) is not used by mesh: there is no beat process; every "
            "node carries the app's beat_schedule and exactly one fires each run "
            "(docs/periodic.md)")
    if not app.tasks:
        safe_logger("mesh.node").warning(
            "THE APP %s (from --app %s) REGISTERS NO TASKS: this node can run nothing. "
            "Define them with @app.task in that module, list the modules that hold them in "
            "Mesh(include=[...]) or the 'imports' setting, or point --app at another module",
            where, app_spec)
    try:
        node = Node(app, config)
    except ConfigError as e:      # the app's components cannot be ordered
        die("meshnode", str(e), EXIT_USAGE)
    # tasks this process sends (a worker_ready receiver's sender.app.send_task, Celery's
    # way to run a task at start) go through this node, as its children's do: without
    # peers of the app's own, a node started with --peers or --no-mdns had none to send to
    app._in_node([node.address, *config.peers], config.keys)
    from mesh.node.view import NodeView
    signals.celeryd_init.send(sender=node.name, instance=NodeView(node), conf=app.conf,
                              options=dict(click.get_current_context().params))
    # what was loaded so far (modules, the app) lives as long as the node: frozen, it
    # is never walked by the cyclic collector again, in the node or in the children
    # forked from it (fewer pages copied on write). Measured with gc.callbacks in the
    # headline bench: a full collection in a node paused it 17 and 47 ms before, 7 to
    # 9.5 ms after. Here, not in the node's code: an app that runs a node inside its
    # own process keeps its collector as it was.
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(node.run())
    except NodeStartError as e:
        die("meshnode", str(e), EXIT_START)
    return EXIT_OK


class EarlyLogs(logging.Handler):
    """Holds the records logged before the node's logging is set up: importing the app
    (a Celery config's settings mesh ignores, the app's own warnings). Python's
    last-resort handler printed them bare, without time, level or node, above the
    node's first formatted line. ``replay()`` sends them through the node's handlers
    once ``configured``, else (meshnode exits before that) prints them as before."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.configured = False

    @classmethod
    def hold(cls) -> "EarlyLogs":
        held = cls()
        if not logging.getLogger().handlers:   # (handlers set up already: they print them)
            logging.getLogger().addHandler(held)
        return held

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers == [self]:  # no other handler took it (the app's)
            self.records.append(record)

    def replay(self) -> None:      # (not release(): a Handler's, its lock's)
        logging.getLogger().removeHandler(self)
        for record in self.records:
            logger = logging.getLogger(record.name)
            if not self.configured:
                if logging.lastResort is not None:
                    logging.lastResort.handle(record)
            elif record.levelno >= logger.getEffectiveLevel():
                logger.handle(record)
        self.records.clear()


def setup_logging(app: Any, config: Any, logfile: str | None = None) -> None:
    """The node logs to stderr, or to ``logfile`` (Celery's --logfile). With the setting
    ``worker_hijack_root_logger`` (the default, as in Celery) the root logger's handlers
    are replaced; without it, handlers the app set up are kept and only mesh's loggers
    get the level. As in Celery, a receiver of the ``setup_logging`` signal takes the
    whole job (mesh then configures nothing), and ``after_setup_logger`` /
    ``after_setup_task_logger`` are sent once mesh has configured the root logger."""
    from mesh import signals
    fmt = (app.conf["worker_log_format"]
           or f"[%(asctime)s %(levelname)s {config.node_name.replace('%', '%%')} %(name)s] %(message)s")
    about = {"loglevel": logging.getLevelName(config.loglevel), "logfile": logfile,
             "format": fmt, "colorize": False}
    if signals.setup_logging.send(sender=None, **about):
        return
    root = logging.getLogger()
    if app.conf["worker_hijack_root_logger"] or not root.handlers:
        if logfile:
            try:
                handler: logging.Handler = logging.FileHandler(logfile, encoding="utf-8")
            except OSError as e:
                raise ConfigError(f"--logfile {logfile}: {e.strerror or e}") from e
        else:
            handler = logging.StreamHandler(sys.stderr)
        logging.basicConfig(level=config.loglevel, handlers=[handler], format=fmt, force=True)
    else:
        logging.getLogger("mesh").setLevel(config.loglevel)
        if logfile:          # (Celery adds no handler then either, and says nothing)
            safe_logger("mesh.node").warning(
                "--logfile %s is not used: the app keeps its own logging handlers "
                "(worker_hijack_root_logger = False, and the root logger has handlers: %s), "
                "so they decide where the node's lines go. Add a FileHandler among them, "
                "or leave worker_hijack_root_logger at True for --logfile to take over",
                logfile, ", ".join(type(h).__name__ for h in root.handlers))
    signals.after_setup_logger.send(sender=None, logger=root, **about)
    signals.after_setup_task_logger.send(sender=None, logger=safe_logger("mesh.task"),
                                         **about)


def main() -> None:
    run_cli(meshnode, "meshnode")


if __name__ == "__main__":
    main()
