"""Celery worker flags a moved project's systemd unit, Procfile or compose file passes
(``celery -A proj worker -E -O fair --without-gossip --logfile=/var/log/celery/%n%I.log
--pidfile=/run/celery/%n.pid``): meshnode does what they ask where it means something
here (``--logfile``, ``--pidfile``) and takes and logs the others, saying why."""
from __future__ import annotations

import atexit
import contextlib
import os
import socket
from typing import Any

import click

from mesh.conf_names import NOT_USED
from mesh.config import expand_patterns
from mesh.exceptions import ConfigError

DETACH = ("meshnode does not detach (daemonize): run it in the foreground under systemd, "
          "supervisord or a container (docs/deploy.md); --logfile and --pidfile are taken")

# flag -> why it is not used (a flag that is given is logged once, in one line)
_MEMBERSHIP = ("mesh's membership (its pings) finds dead nodes and keeps two copies of each "
               "task: it is not switched off")
WHY: dict[str, str] = {
    "-E": "a node publishes task events whenever someone listens (meshctl events, meshctl "
          "top); --no-events turns them off, app.control.disable_events()/enable_events() "
          "at run time",
    "-O": NOT_USED["worker_prefetch_multiplier"],
    "--prefetch-multiplier": NOT_USED["worker_prefetch_multiplier"],
    "--without-gossip": _MEMBERSHIP,
    "--without-mingle": ("a node learns the mesh's revokes and members from the others as it "
                         "joins: it is not switched off"),
    "--without-heartbeat": _MEMBERSHIP,
    "--statedb": NOT_USED["worker_state_db"],
    "--scheduler": NOT_USED["beat_scheduler"],
    "--schedule": NOT_USED["beat_schedule_filename"],
}


def options(f: Any) -> Any:
    """The Celery worker flags meshnode takes for habit's sake, as click options."""
    for opt in reversed([
        click.option("--logfile", "-f", metavar="FILE",
                     help="Log to FILE instead of stderr (Celery's patterns: %n the node name "
                          "before @, %p the whole name, %h the host, %d the domain, %i 0, %I "
                          "nothing: the node and its children write one file)."),
        click.option("--pidfile", metavar="FILE",
                     help="Write the node's pid to FILE (removed at exit); a FILE whose pid "
                          "runs refuses the start (patterns as --logfile)."),
        click.option("--detach", "-D", is_flag=True, default=False, hidden=True),
        click.option("--umask", metavar="MASK",
                     help="The file mode mask of the node and its children, as Celery's "
                          "(octal with a leading 0, e.g. 0027; else decimal)."),
        click.option("--workdir", metavar="DIR",
                     help="Change to DIR before loading the app, as Celery's --workdir."),
        click.option("--task-events", "-E", "task_events", is_flag=True, default=False,
                     help="Celery's: events are published anyway; taken and logged."),
        click.option("-O", "optimization", type=click.Choice(["default", "fair"]),
                     help="Celery's: mesh never prefetches; taken and logged."),
        click.option("--prefetch-multiplier", type=click.IntRange(min=0), hidden=True),
        click.option("--without-gossip", is_flag=True, default=False, hidden=True),
        click.option("--without-mingle", is_flag=True, default=False, hidden=True),
        click.option("--without-heartbeat", is_flag=True, default=False, hidden=True),
        click.option("--statedb", metavar="FILE", hidden=True),
        click.option("--scheduler", metavar="CLASS", hidden=True),
        click.option("--schedule", "-s", "schedule_file", metavar="FILE", hidden=True),
    ]):
        f = opt(f)
    return f


def not_used(given: dict[str, Any]) -> str | None:
    """One log line for the Celery flags given that mesh does not use, or None."""
    flags = {"-E": given["task_events"], "-O": given["optimization"],
             "--prefetch-multiplier": given["prefetch_multiplier"],
             "--without-gossip": given["without_gossip"],
             "--without-mingle": given["without_mingle"],
             "--without-heartbeat": given["without_heartbeat"],
             "--statedb": given["statedb"], "--scheduler": given["scheduler"],
             "--schedule": given["schedule_file"]}
    said = [f"{flag}: {WHY[flag]}" for flag, value in flags.items()
            if value not in (None, False)]
    if not said:
        return None
    return "Celery's worker flags not used by mesh: " + "; ".join(said)


def enter(workdir: str | None, umask: str | None) -> None:
    """Celery's --workdir (change to it before the app is loaded: ``-A proj`` is looked
    for there) and --umask (octal with a leading zero, as ``0027`` or ``0o027``, else
    decimal, as Celery's DaemonContext reads it). Celery applies them when it detaches;
    meshnode, which does not detach, applies them as it starts. A ConfigError says
    which value is wrong."""
    if umask is not None:
        text = umask.strip().lower()
        try:
            mask = (int(text[2:], 8) if text.startswith("0o")
                    else int(text, 8) if text.startswith("0") else int(text))
        except ValueError:
            raise ConfigError(f"--umask {umask!r}: not a mask (octal with a leading 0, "
                              "e.g. 0027, or decimal)") from None
        if not 0 <= mask <= 0o777:
            raise ConfigError(f"--umask {umask!r}: out of range (0 to 0777)")
        os.umask(mask)
    if workdir is not None:
        try:
            os.chdir(workdir)
        except OSError as e:
            raise ConfigError(f"--workdir {workdir}: {e.strerror or e}") from None


def expand_file_name(pattern: str, node_name: str) -> str:
    """Celery's file name patterns (``--logfile=/var/log/celery/%n%I.log``): ``%p`` the
    node's name, ``%n`` its part before ``@``, ``%h`` the host name, ``%d`` the domain,
    ``%i`` 0 and ``%I`` nothing (one file for the node and its children), ``%%`` a
    percent sign; another ``%`` is a ConfigError."""
    host = socket.gethostname()
    keys = {"p": node_name, "n": node_name.split("@", 1)[0], "h": host,
            "d": host.partition(".")[2], "i": "0", "I": ""}
    return expand_patterns(f"file name {pattern!r}", pattern, keys,
                           "%p the node name, %n its part before @, %h the host, %d the "
                           "domain, %i, %I")


def write_pidfile(path: str) -> None:
    """Write this process's pid to ``path``, removed at exit. A file left by a process
    that still runs refuses the start, as Celery's does; a stale one is replaced."""
    old = 0
    with contextlib.suppress(FileNotFoundError, ValueError):   # none, or not a pid: stale
        with open(path) as f:
            old = int(f.read().strip() or "0")
    if old > 0 and old != os.getpid() and _alive(old):
        raise ConfigError(f"pidfile {path} already exists and its process {old} runs: "
                          "is this node already running?")
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as e:
        raise ConfigError(f"--pidfile {path}: {e.strerror or e}") from e
    pid = os.getpid()

    def remove() -> None:   # the node only: a child forked from it inherits atexit
        if os.getpid() == pid:
            with contextlib.suppress(OSError):
                os.unlink(path)
    atexit.register(remove)


def drop_privileges(uid: str | None, gid: str | None) -> None:
    """Celery's --uid/--gid (``maybe_drop_privileges``): become that user (a name or a
    number) and group (default: the user's), with the user's supplementary groups,
    before anything is opened; then root must be out of reach. A ConfigError says
    which value is wrong, or that this process may not switch."""
    import grp
    import pwd
    if uid is None and gid is None:
        return
    user = group = None
    try:
        if uid is not None:
            user = pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(uid)
        if gid is not None:
            group = grp.getgrgid(int(gid)) if gid.isdigit() else grp.getgrnam(gid)
    except KeyError:
        flag, value, what = (("--gid", gid, "group") if user is not None or uid is None
                             else ("--uid", uid, "user"))
        raise ConfigError(f"{flag} {value}: no such {what}") from None
    except OverflowError:
        raise ConfigError(f"--uid/--gid: {uid or gid} is out of range") from None
    new_gid = group.gr_gid if group is not None else user.pw_gid if user is not None else None
    try:
        if new_gid is not None:
            os.setgid(new_gid)
            if user is not None:
                os.initgroups(user.pw_name, new_gid)
        if user is not None:
            os.setuid(user.pw_uid)
            # ~ is the user's from now on (as su sets it): the default data dir is under
            # it, and root's home, kept, is one the user may not write
            os.environ["HOME"] = user.pw_dir
    except PermissionError as e:
        raise ConfigError(f"--uid/--gid: cannot become {uid or ''}{':' if uid and gid else ''}"
                          f"{gid or ''}: {e.strerror} (only root may switch users)") from None
    if user is not None and user.pw_uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return                     # as it must be: root is out of reach
        raise ConfigError(f"--uid {uid}: root could be regained after dropping privileges")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
