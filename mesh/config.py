"""Configuration: one frozen, commented dataclass, built the same way from keyword
arguments, ``MESH_*`` environment variables and command-line flags.

Precedence, lowest first: defaults < the app's settings (``app.conf``: ``peers``,
``worker_concurrency``, ... see mesh/conf.py) < environment (``MESH_<FIELD>``) < explicit
arguments (keyword arguments to ``Mesh``/``Config.build`` or CLI flags). An unknown
option fails with a hint naming the closest known one.
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.digest import blake2b
from mesh.exceptions import ConfigError
from mesh.wire.protocol import (
    DEFAULT_MAX_MESSAGE_SIZE,
    MAX_ID_LEN,
    MAX_TIME_LIMIT,
    MIN_MAX_MESSAGE_SIZE,
)

DEFAULT_PORT = 7700
MESH_IN_PATH = 64       # characters of the mesh's name in its default data dir's name


def expand_node_name(name: str) -> str:
    """Celery's node name patterns (``-n worker1@%h``): ``%h`` the host name, ``%n`` its
    first label, ``%d`` the rest (the domain), ``%%`` a percent sign. Any other ``%``
    is a ConfigError: kept as it is, every machine's node would have the same name."""
    host = socket.gethostname()                     # as Celery's %h
    short, _, domain = host.partition(".")
    return expand_patterns(f"node name {name!r}", name, {"h": host, "n": short, "d": domain},
                           "%h the host name, %n its first label, %d the domain")


def expand_patterns(what: str, text: str, keys: dict[str, str], known: str) -> str:
    """``text`` with each ``%x`` replaced by ``keys[x]`` and ``%%`` by a percent sign;
    another ``%`` is a ConfigError naming ``what`` and the ``known`` patterns."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) == "%":
            return "%"
        if m.group(1) not in keys:
            raise ConfigError(f"{what}: unknown pattern %{m.group(1)} (Celery's patterns: "
                              f"{known}, %% a percent sign)")
        return keys[m.group(1)]
    return re.sub(r"%(.?)", one, text)


def default_data_dir(name: str) -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mesh", name)


@dataclass(frozen=True)
class Config:
    # -- identity and network ---------------------------------------------------------
    name: str = ""                      # node id; "" means hostname-pid (unique per process)
    bind: str = ""                      # the node's ROUTER front door; "" = every interface
                                        # (tcp://0.0.0.0:7700) with keys or insecure, else
                                        # loopback (tcp://127.0.0.1:7700): docs/security.md
    advertise: str = ""                 # endpoint others should use; "" = derived from bind
    peers: tuple[str, ...] = ()         # static seeds, tcp://host:port; MESH_PEERS=a,b
    mdns: bool = True                   # multicast discovery (zeroconf)
    profile: str = "lan"                # membership timings: lan, local or test (mesh.membership.profiles)
    dead_node_reclaim: float | None = None  # s a dead or departed member is remembered (listed,
                                        # its sockets kept, pinged now and then in case a
                                        # partition heals) before it is forgotten; None = the
                                        # profile's (60 s lan, 30 s local, 10 s test)
    discovery_timeout: float = 3.0      # s a client without peers browses mDNS for nodes
    mdns_interfaces: tuple[str, ...] = ()  # IPs to use mDNS on; () = from --bind (nodes), all (clients)
    queues: tuple[str, ...] = ()        # the queues a node takes tasks from; () = every queue
                                        # (docs/routing.md)
    exclude_queues: tuple[str, ...] = ()  # the queues it does not take (Celery's -X): of every
                                        # queue, or of ``queues``
    purge: bool = False                 # at start, revoke the tasks its journal holds that
                                        # have not finished (Celery's --purge; docs/routing.md)
    # -- security (docs/security.md) ---------------------------------------------------
    keys: str = ""                      # the mesh's key directory (meshctl keys init): every
                                        # plane CurveZMQ-authenticated and encrypted; "" = none
    key_name: str = ""                  # which key pair of the directory this process uses
                                        # ("" = the only one of its kind: client for apps)
    insecure: bool = False              # without keys, allow a node beyond loopback anyway
    quota_tasks: int = 100_000          # tasks one sender (connection) may have held by a node
    quota_bytes: int = 256 * 1024 * 1024  # bytes of tasks one sender may have held by a node
    max_eta: float = 30 * 86400.0       # s ahead an eta/countdown may be; 0 = no limit
    queue_memory: int = 20_000          # queued tasks a node keeps in memory; beyond, plain
                                        # tasks wait in the journal (mesh/node/spill.py);
                                        # 0 = every queued task in memory
    # -- prefork pool -----------------------------------------------------------------
    concurrency: int = 0                # children; 0 means os.cpu_count()
    max_tasks_per_child: int = 0        # recycle a child after this many tasks; 0 = never
    max_memory_per_child: int = 0       # KiB of RSS after which a child is recycled; 0 = never
    time_limit: float | None = None     # hard limit (s): the child is killed, TimeLimitExceeded
    soft_time_limit: float | None = None  # soft limit (s): SoftTimeLimitExceeded in the task
    pool: str = "prefork"               # prefork (N children), threads (one child, N threads),
                                        # solo (one child, one task at a time); docs/pools.md
    autoscale: str = ""                 # "MAX,MIN": the pool grows while tasks wait and CPU
                                        # allows, shrinks when idle; "" = a fixed size
    autoscale_keepalive: float = 30.0   # s the pool must have had spare workers before it shrinks
    autoscale_max_cpu: float = 90.0     # % of the machine's CPU above which it does not grow
                                        # (100: CPU never holds growth back)
    async_concurrency: int = 100        # async def tasks one child runs at once (its event loop)
    autoreload: bool = False            # replace children when the app's source changes
    app: str = ""                       # the --app MODULE[:ATTR] (autoreload imports it again)
    # -- lifecycle --------------------------------------------------------------------
    shutdown_timeout: float = 30.0      # on SIGTERM, how long running tasks may finish
    workflow_stall: float = 10.0        # s a group (chord header) coordinated here waits
                                        # without a member's report before it asks the mesh
                                        # where its members are (doubling, up to 120 s)
    data_dir: str = ""                  # journal and results; "" = ~/.local/share/mesh/NAME
                                        # (or HOST-MESH-portPORT when no name is given)
    journal: bool = True                # keep accepted tasks and results in sqlite (see
                                        # mesh/journal.py); off: faster, but a node that dies
                                        # forgets what it held and keeps no results
    journal_fsync: bool = False         # fsync every journal commit (survives power loss too)
    result_expires: float = 86400.0     # s a finished task's result is kept in the journal
    replicas: int = 2                   # copies of each held task and result: 2 = the holder
                                        # and a backup node (rendezvous hashing), which runs
                                        # the task if the holder dies; 1 = the holder only
    events: bool = True                 # publish events on an XPUB socket (docs/events.md);
                                        # built only when someone subscribes
    loglevel: str = "INFO"
    # -- dashboard (mesh/web, docs/dashboard.md) ---------------------------------------
    http: str = ""                      # HOST:PORT (or PORT: loopback) for the dashboard, JSON
                                        # API, /metrics and /healthz; "" = no HTTP server
    http_token: str = ""                # when set, every HTTP request but /healthz needs it
                                        # (Authorization: Bearer, or ?token= once in a browser)
    # -- wire -------------------------------------------------------------------------
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE  # bytes; larger frames are refused
    # -- client -----------------------------------------------------------------------
    result_timeout: float | None = None  # default timeout of AsyncResult.get; None = forever

    def __post_init__(self) -> None:
        def bad(what: str) -> ConfigError:
            return ConfigError(what)
        if "%" in self.name:          # Celery's -n worker1@%h, in a unit moved over
            object.__setattr__(self, "name", expand_node_name(self.name))
        if len(self.name) > MAX_ID_LEN:   # (the wire's: a peer refuses every frame naming it)
            raise bad(f"name must be at most {MAX_ID_LEN} characters (nodes name each other in "
                      f"every message), got {len(self.name)}: {self.name[:40]!r}...")
        if self.bind == "":           # frozen: the derived default is set once, here
            host = "0.0.0.0" if self.keys or self.insecure else "127.0.0.1"
            object.__setattr__(self, "bind", f"tcp://{host}:{DEFAULT_PORT}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not _TYPE_CHECKS[str(f.type)](v):
                raise bad(f"{f.name} must be {_TYPE_NAMES[str(f.type)]}, got {type(v).__name__} {v!r}")
        if self.concurrency < 0:
            raise bad(f"concurrency must be >= 0, got {self.concurrency}")
        if self.pool not in POOLS:
            raise bad(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.async_concurrency < 1:
            raise bad(f"async_concurrency must be >= 1, got {self.async_concurrency}")
        if self.autoscale_keepalive < 0:
            raise bad(f"autoscale_keepalive must be >= 0 seconds, got {self.autoscale_keepalive}")
        if not 0 < self.autoscale_max_cpu <= 100:
            raise bad(f"autoscale_max_cpu must be a percentage in (0, 100], got {self.autoscale_max_cpu}")
        if self.autoscale:
            parse_autoscale(self.autoscale)
            if self.pool == "solo":
                raise bad("the solo pool runs one task at a time: it cannot autoscale "
                          "(use --pool prefork or threads with --autoscale)")
            if self.concurrency:
                raise bad("give --autoscale MAX,MIN or --concurrency N, not both "
                          "(autoscale starts with MIN workers)")
        if self.pool == "solo" and self.concurrency > 1:
            raise bad(f"the solo pool runs one task at a time (concurrency {self.concurrency} "
                      "given): use --pool prefork or threads for more")
        if self.max_tasks_per_child < 0 or self.max_memory_per_child < 0:
            raise bad("max_tasks_per_child and max_memory_per_child must be >= 0")
        for n in ("time_limit", "soft_time_limit"):
            v = getattr(self, n)
            # (as a task's own and a control's: --soft-time-limit inf failed every task,
            # OverflowError from the child's timer)
            if v is not None and not 0 < v < MAX_TIME_LIMIT:
                raise bad(f"{n} must be > 0 and under {MAX_TIME_LIMIT:g} seconds, got {v}")
        if self.result_expires <= 0:
            raise bad(f"result_expires must be > 0 seconds, got {self.result_expires}")
        if not self.workflow_stall > 0:
            raise bad(f"workflow_stall must be > 0 seconds, got {self.workflow_stall}")
        if self.shutdown_timeout < 0:
            raise bad("shutdown_timeout must be >= 0")
        if self.quota_tasks < 1 or self.quota_bytes < 1024:
            raise bad("quota_tasks must be >= 1 and quota_bytes >= 1024")
        if self.queue_memory < 0:
            raise bad(f"queue_memory must be >= 0 (0: no limit), got {self.queue_memory}")
        if self.max_eta < 0:
            raise bad(f"max_eta must be >= 0 seconds (0: no limit), got {self.max_eta}")
        if self.replicas not in (1, 2):
            raise bad(f"replicas must be 1 or 2, got {self.replicas}")
        if self.max_message_size < MIN_MAX_MESSAGE_SIZE:
            raise bad(f"max_message_size must be at least {MIN_MAX_MESSAGE_SIZE} bytes")
        for ep in (self.bind, *self.peers, *((self.advertise,) if self.advertise else ())):
            check_endpoint(ep)
        if self.queues or self.exclude_queues:
            from mesh.routing import check_queue
            for q in self.queues:
                check_queue(q, "queues")
            for q in self.exclude_queues:
                check_queue(q, "exclude_queues")
            if self.queues and not set(self.queues) - set(self.exclude_queues):
                raise bad(f"--exclude-queues {','.join(self.exclude_queues)} leaves none of "
                          f"--queues {','.join(self.queues)}: the node would take no task")
        if self.dead_node_reclaim is not None and not self.dead_node_reclaim > 0:
            raise bad(f"dead_node_reclaim must be > 0 seconds, got {self.dead_node_reclaim}")
        if self.profile not in ("lan", "local", "test"):
            raise bad(f"profile must be one of lan, local, test, got {self.profile!r}")
        if self.http:
            http_address(self.http)
        if self.loglevel.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise bad(f"loglevel must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {self.loglevel!r}")

    # -- derived ----------------------------------------------------------------------
    @property
    def node_name(self) -> str:
        return self.name or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def pool_size(self) -> int:
        """Workers at start: MIN with --autoscale, 1 for solo, else --concurrency (CPUs)."""
        if self.autoscale:
            return parse_autoscale(self.autoscale)[1]
        if self.pool == "solo":
            return 1
        return self.concurrency or os.cpu_count() or 1

    @property
    def autoscale_range(self) -> tuple[int, int] | None:
        """(MAX, MIN) with --autoscale, else None."""
        return parse_autoscale(self.autoscale) if self.autoscale else None

    @property
    def data_path(self) -> str:
        """--data-dir; else by --name; else by host and port, so a node restarted on
        the same port (its default name has a new pid) finds its journal again. A node
        names it by its mesh too (``mesh_data_path``, mesh/node/data_dir.py)."""
        if self.data_dir:
            return self.data_dir
        if self.name:
            return default_data_dir(self.name)
        return default_data_dir(f"{socket.gethostname()}-port{self._port}")

    @property
    def _port(self) -> str:
        return self.bind.rsplit(":", 1)[-1]

    def mesh_data_path(self, mesh: str) -> str:
        """The default data dir of a node of ``mesh`` named by host and port: the mesh
        in it too, so two apps served on one port in turn (a tutorial, then one's own
        app) never share a journal (mesh/node/data_dir.py)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", mesh)[:MESH_IN_PATH] or "mesh"
        if safe != mesh:    # cleaned or cut: two names must not meet in one dir
            safe += "-" + blake2b(mesh.encode("utf-8", "surrogatepass"),
                                  digest_size=4).hexdigest()
        return default_data_dir(f"{socket.gethostname()[:64]}-{safe}-port{self._port}")

    # -- building ---------------------------------------------------------------------
    @classmethod
    def build(cls, env: Mapping[str, str] | None = None,
              defaults: Mapping[str, Any] | None = None, **kwargs: Any) -> "Config":
        """Defaults, then ``defaults`` (what the app's settings say: app.conf), then
        MESH_* from ``env`` (os.environ by default), then kwargs. Keyword arguments
        whose value is None are ignored (unset CLI flags)."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in (defaults or {}).items():
            values[key] = _coerce(names[key], value, f"app.conf setting for {key}")
        env = os.environ if env is None else env
        for fname, f in names.items():
            raw = env.get("MESH_" + fname.upper())
            if raw is not None and raw != "":
                values[fname] = _parse(f, raw, "MESH_" + fname.upper())
                if fname in ("peers", "bind", "advertise"):     # say which variable is wrong
                    try:
                        for ep in (values[fname] if fname == "peers" else (values[fname],)):
                            check_endpoint(ep)
                    except ConfigError as e:
                        raise ConfigError(f"MESH_{fname.upper()}: {e}") from None
        for key, value in kwargs.items():
            if key not in names:
                import difflib
                hint = difflib.get_close_matches(key, names, n=1)
                raise ConfigError(f"unknown option {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
            if value is None:
                continue
            values[key] = _coerce(names[key], value, key)
        return cls(**values)


# MESH_* names of the project's own test and bench knobs (tests/, bench/), and the usual
# name of app.config_from_envvar's module: not warned about
OWN_ENV = ("TEST_", "HOPS", "BENCH_", "CHAOS_", "HANDOFF_CHAOS_", "SOAK_", "HOSTILE_",
           "WEB_SCREENSHOT", "SETTINGS")


def unknown_env(env: Mapping[str, str] | None = None) -> list[str]:
    """``MESH_*`` variables in ``env`` that nothing reads (a typo: ``MESH_REPLICA``),
    each with a hint: one line each, for the node to log (a variable is otherwise
    ignored without a word). Known: the options (``MESH_<FIELD>``), the app's settings
    read with ``namespace="MESH"`` (``MESH_TASK_ALWAYS_EAGER``: ``conf.check_name``),
    and ``OWN_ENV``."""
    from mesh.conf import check_name, setting_names
    env = os.environ if env is None else env
    fields = [f.name for f in dataclasses.fields(Config)]
    out = []
    for var in sorted(env):
        if not var.startswith("MESH_") or var[5:].startswith(OWN_ENV):
            continue
        name = var[5:].lower()
        if name in fields:
            continue
        try:
            check_name(name)
            continue
        except ConfigError:
            pass
        import difflib  # (only for a name nothing reads: meshnode calls this before its fork)
        hint = difflib.get_close_matches(name, [*fields, *setting_names()], n=1)
        out.append(f"environment variable {var} is not one mesh reads: ignored"
                   + (f" (did you mean MESH_{hint[0].upper()}?)" if hint else ""))
    return out


POOLS = ("prefork", "threads", "solo")
MAX_WORKERS = 1000              # the largest pool --autoscale and pool_grow may reach


def parse_autoscale(value: str) -> tuple[int, int]:
    """``"MAX,MIN"`` (or ``"MAX"``: MIN is 1) as (MAX, MIN); ConfigError if malformed."""
    hi, _, lo = value.partition(",")
    try:
        mx, mn = int(hi), int(lo) if lo.strip() else 1
    except ValueError:
        raise ConfigError(f"autoscale must look like MAX,MIN (e.g. 8,2), got {value!r}") from None
    if not 1 <= mn <= mx <= MAX_WORKERS:
        raise ConfigError(f"autoscale MAX,MIN needs 1 <= MIN <= MAX <= {MAX_WORKERS}, got {value!r}")
    return mx, mn


_TYPE_CHECKS = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # (not nan: every comparison with it is false, so it passed each ">= 0" check below:
    # --shutdown-timeout nan said "up to nan s" and was gossiped to the peers (meta
    # "stop"), --time-limit nan was no limit at all)
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v,
    "float | None": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                            and v == v),
    "tuple[str, ...]": lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v),
}
_TYPE_NAMES = {"str": "a string", "bool": "true or false", "int": "an integer",
               "float": "a number", "float | None": "a number or None",
               "tuple[str, ...]": "a list of tcp://HOST:PORT strings"}


def _coerce(f: dataclasses.Field[Any], value: Any, where: str) -> Any:
    if isinstance(value, str) and f.type not in ("str",):
        return _parse(f, value, where)
    if str(f.type) == "tuple[str, ...]":
        if isinstance(value, str):
            return _parse(f, value, where)
        try:
            return tuple(value)
        except TypeError:
            what = {"peers": "tcp://HOST:PORT strings", "queues": "queue names",
                    "exclude_queues": "queue names"}.get(f.name, "strings")
            raise ConfigError(f"{where} must be a list of {what} or a "
                              f"comma-separated string, got {type(value).__name__}") from None
    return value


def _parse(f: dataclasses.Field[Any], raw: str, where: str) -> Any:
    t = str(f.type)
    try:
        if t == "str":
            return raw
        if t == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if t == "int":
            return int(raw)
        if t in ("float", "float | None"):
            return float(raw)
        if t == "tuple[str, ...]":
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except ValueError as e:
        raise ConfigError(f"{where}: bad value {raw!r} ({e})") from None
    raise ConfigError(f"{where}: cannot parse {t} from text")


def advertised_endpoint(bound: str, advertise: str = "") -> str:
    """The endpoint other nodes and clients should use to reach a front door bound at
    ``bound`` (zmq's LAST_ENDPOINT). A wildcard bind advertises the first non-loopback
    IPv4 address of this machine (or loopback if it has none)."""
    if advertise:
        return advertise
    host, _, port = bound[6:].rpartition(":")
    if host not in ("0.0.0.0", "*", "[::]", "::"):
        return bound
    import ipaddress

    import psutil
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family.name == "AF_INET" and not ipaddress.ip_address(a.address).is_loopback:
                return f"tcp://{a.address}:{port}"
    return f"tcp://127.0.0.1:{port}"


def http_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (loopback) for ``--http``; ``[::1]:PORT`` for IPv6."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]")
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ConfigError(f"http address {value!r} must look like HOST:PORT or PORT "
                          "(e.g. 127.0.0.1:8080)")
    return host, int(port)


# a host name, an IPv4 address, an [IPv6] one (with its %zone), an interface name, or *
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_*:%[]")


def check_endpoint(ep: str) -> str:
    """Validate a ``tcp://host:port`` endpoint (port may be ``*`` for bind)."""
    if not isinstance(ep, str) or not ep.startswith("tcp://"):
        bare = isinstance(ep, str) and "://" not in ep and ep.rpartition(":")[2].isdigit()
        raise ConfigError(f"endpoint {ep!r} must look like tcp://HOST:PORT"
                          + (f" (did you mean 'tcp://{ep}'?)" if bare else ""))
    host, sep, port = ep[6:].rpartition(":")
    if not sep or not host:
        raise ConfigError(f"endpoint {ep!r} must look like tcp://HOST:PORT")
    odd = sorted(set(host) - _HOST_CHARS)
    if odd:
        raise ConfigError(f"endpoint {ep!r}: host {host!r} has characters no host name or "
                          f"address has ({' '.join(map(repr, odd))}); must look like "
                          "tcp://HOST:PORT, several separated by commas: tcp://H1:P1,tcp://H2:P2")
    if port != "*":
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ConfigError(f"endpoint {ep!r}: port must be 1..65535")
    return ep
