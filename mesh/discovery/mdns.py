"""mDNS discovery: nodes announce themselves as ``_meshnode._tcp.local.`` and find
each other (python-zeroconf, asyncio API).

mDNS only *introduces* nodes. It never decides that one is gone: a crashed node's
records stay in every cache for up to 75 minutes, so liveness belongs to membership.
A clean exit sends a goodbye (reported through ``on_goodbye``, as a hint only).

What a node announces, in the TXT record (RFC 6763 key=value strings):

=========  ============================================================================
``id``     the node id, verbatim (the service instance name is a DNS-safe form of it)
``proto``  the wire protocol version (:data:`mesh.wire.protocol.PROTOCOL_VERSION`)
``ep``     the front door, ``tcp://HOST:PORT``; a wildcard host (``0.0.0.0``, ``*``,
           ``::``) means "any of my addresses": the receiver picks one of the A records
``boot``   random per :meth:`Discovery.start`; a restarted node always looks new
``seq``    bumped by :meth:`Discovery.reannounce`, so peers see an update
``mesh``   the mesh the node belongs to (its app's name; absent means ``""``): nodes and
           clients only join, or send work to, nodes of their own mesh (docs/routing.md)
=========  ============================================================================

plus any extra properties the node passes in. The SRV record carries the port.

Interfaces follow the bind address (:func:`interfaces_for_bind`): a node bound to
127.x announces on loopback only, so a one-machine mesh needs no root and sends
nothing to the network; a node bound to one IP announces on that interface; a node
bound to a wildcard announces on all interfaces and advertises all their addresses.

Everything runs in the caller's asyncio loop. ``browse_sync`` is for code without a
loop (meshctl, ``Mesh()`` with no peers): it runs a private loop in a short thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from zeroconf import (
    BadTypeInNameException,
    DNSQuestionType,
    InterfaceChoice,
    IPVersion,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from mesh.discovery.records import (  # noqa: F401  (re-exported: mesh.discovery.mdns.X)
    _SAFE_LABEL as _SAFE_LABEL,
)
from mesh.discovery.records import (
    _WILDCARD_HOSTS as _WILDCARD_HOSTS,
)
from mesh.discovery.records import (
    DEFAULT_SETTLE as DEFAULT_SETTLE,
)
from mesh.discovery.records import (
    EVERY_NODE_SETTLE as EVERY_NODE_SETTLE,
)
from mesh.discovery.records import (
    MAX_LABEL as MAX_LABEL,
)
from mesh.discovery.records import (
    MAX_TXT_ENTRY as MAX_TXT_ENTRY,
)
from mesh.discovery.records import (
    RESERVED_KEYS as RESERVED_KEYS,
)
from mesh.discovery.records import (
    RESOLVE_ATTEMPTS as RESOLVE_ATTEMPTS,
)
from mesh.discovery.records import (
    RESOLVE_TIMEOUT as RESOLVE_TIMEOUT,
)
from mesh.discovery.records import (
    SERVICE_TYPE as SERVICE_TYPE,
)
from mesh.discovery.records import (
    DiscoveryError as DiscoveryError,
)
from mesh.discovery.records import (
    FoundCallback as FoundCallback,
)
from mesh.discovery.records import (
    GoodbyeCallback as GoodbyeCallback,
)
from mesh.discovery.records import (
    Interfaces as Interfaces,
)
from mesh.discovery.records import (
    MalformedRecord as MalformedRecord,
)
from mesh.discovery.records import (
    Peer as Peer,
)
from mesh.discovery.records import (
    _check_port as _check_port,
)
from mesh.discovery.records import (
    _format_endpoint as _format_endpoint,
)
from mesh.discovery.records import (
    _ip as _ip,
)
from mesh.discovery.records import (
    _local_networks as _local_networks,
)
from mesh.discovery.records import (
    _resolve_host as _resolve_host,
)
from mesh.discovery.records import (
    choose_address as choose_address,
)
from mesh.discovery.records import (
    compatible as compatible,
)
from mesh.discovery.records import (
    instance_name as instance_name,
)
from mesh.discovery.records import (
    interfaces_for_bind as interfaces_for_bind,
)
from mesh.discovery.records import (
    is_loopback_only as is_loopback_only,
)
from mesh.discovery.records import (
    local_ipv4_addresses as local_ipv4_addresses,
)
from mesh.discovery.records import (
    parse_peer as parse_peer,
)
from mesh.discovery.records import (
    parse_properties as parse_properties,
)
from mesh.discovery.records import (
    split_endpoint as split_endpoint,
)
from mesh.security.text import safe_logger
from mesh.wire.protocol import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION

log = safe_logger("mesh.discovery")


def _make_zeroconf(interfaces: Interfaces) -> AsyncZeroconf:
    try:
        # Lists and IPVersion: a list picks its own IP version; All/Default use IPv4
        # (IPv6 on "all interfaces" logs errors for ::1 on many hosts).
        if isinstance(interfaces, list):
            return AsyncZeroconf(interfaces=list(interfaces))
        return AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    except (OSError, RuntimeError, ValueError) as e:
        raise DiscoveryError(f"cannot start mDNS on {interfaces}: {e}") from e


# ---- the browsing half, shared by Discovery and browse() --------------------------------

class _Watcher:
    """Browses for mesh nodes and resolves each service it hears of, calling
    ``on_found`` for every complete, well-formed, compatible peer (other than
    ``ignore_id``) and ``on_goodbye`` when a known peer's service is withdrawn."""

    def __init__(self, aiozc: AsyncZeroconf, interfaces: Interfaces, on_found: FoundCallback,
                 on_goodbye: GoodbyeCallback | None = None, ignore_id: str | None = None,
                 ignore_name: Callable[[], str | None] = lambda: None) -> None:
        self.zc: Zeroconf = aiozc.zeroconf
        self.on_found = on_found
        self.on_goodbye = on_goodbye
        self.ignore_id = ignore_id
        self.ignore_name = ignore_name
        self.loopback_only = is_loopback_only(interfaces)
        self._local_nets: list[ipaddress.IPv4Network] | None = None
        self.known: dict[str, str] = {}                  # service name -> node id
        self.pending: dict[str, asyncio.Task[None]] = {}  # service name -> resolver
        self._warned: set[tuple[str, str]] = set()
        self.browser: AsyncServiceBrowser | None = None
        self.activity = asyncio.Event()   # set when a resolution ends (found or not)

    def start(self) -> None:
        # QM questions (answers multicast): with several processes sharing
        # 127.0.0.1:5353 through SO_REUSEPORT, a unicast (QU) answer reaches only one.
        self.browser = AsyncServiceBrowser(self.zc, SERVICE_TYPE, handlers=[self._on_change],
                                           question_type=DNSQuestionType.QM)

    async def close(self) -> None:
        if self.browser is not None:
            browser, self.browser = self.browser, None
            await browser.async_cancel()
        tasks = list(self.pending.values())
        self.pending.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if self.browser is None:
            return
        if state_change is ServiceStateChange.Removed:
            task = self.pending.pop(name, None)
            if task is not None:
                task.cancel()
            node_id = self.known.pop(name, None)
            if node_id is not None and self.on_goodbye is not None:
                log.debug("mDNS goodbye from %s (%s)", node_id, name)
                try:
                    self.on_goodbye(node_id)
                except Exception:
                    log.exception("on_goodbye(%r) failed", node_id)
            return
        if name.lower() == (self.ignore_name() or "").lower():
            return
        old = self.pending.pop(name, None)
        if old is not None:
            old.cancel()                 # newer records supersede a resolution under way
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self.pending[name] = task

    async def _resolve(self, service_type: str, name: str) -> None:
        try:
            info = None
            for attempt in range(RESOLVE_ATTEMPTS):
                info = AsyncServiceInfo(service_type, name)
                if await info.async_request(self.zc, RESOLVE_TIMEOUT * 1000,
                                            question_type=DNSQuestionType.QM):
                    break
                info = None
                log.debug("no complete answer for %s (attempt %d)", name, attempt + 1)
            if info is None:
                log.info("mDNS: could not resolve %s; ignoring it until its records change", name)
                return
            self._found(name, info)
        except asyncio.CancelledError:
            raise
        except Exception:
            # never let one bad service take discovery down
            log.exception("mDNS: failed to process service %s", name)
        finally:
            if self.pending.get(name) is asyncio.current_task():
                del self.pending[name]
            self.activity.set()

    def _found(self, name: str, info: AsyncServiceInfo) -> None:
        if self._local_nets is None:
            self._local_nets = [] if self.loopback_only else _local_networks()
        try:
            peer = parse_peer(info.properties, info.parsed_addresses(), self.loopback_only,
                              self._local_nets)
        except MalformedRecord as e:
            self._warn_once(name, info.text, f"ignoring mDNS service {name!r}: {e}")
            return
        if peer.node_id == self.ignore_id:
            return
        if not compatible(peer.props):
            self._warn_once(name, info.text,
                            f"ignoring node {peer.node_id} at {peer.endpoint}: it speaks protocol "
                            f"{peer.props.get('proto')}, this node {MIN_PROTOCOL_VERSION}.."
                            f"{PROTOCOL_VERSION}")
            return
        self.known[name] = peer.node_id
        try:
            self.on_found(peer.node_id, peer.endpoint, peer.props)
        except Exception:
            log.exception("on_found(%r, %r) failed", peer.node_id, peer.endpoint)

    def _warn_once(self, name: str, text: bytes, message: str) -> None:
        key = (name, text.hex())
        if key in self._warned:
            return
        if len(self._warned) > 1000:
            self._warned.clear()
        self._warned.add(key)
        log.warning("%s", message)


# ---- the node side ----------------------------------------------------------------------

class Discovery:
    """Announce this node and report the others, inside the node's asyncio loop.

    ``on_found(node_id, endpoint, props)`` runs in the loop each time a peer's
    service is added or updated (a restart, a new endpoint, a reannounce), never for
    this node itself. ``on_goodbye(node_id)`` (optional) runs when a peer withdrew its
    service: a hint that it stopped cleanly, never a verdict that it is dead.

    ``interfaces=None`` derives them from the endpoint (:func:`interfaces_for_bind`).
    ``props`` are extra TXT properties (str -> str, keys other than the reserved
    id/proto/ep/boot/seq).
    """

    def __init__(self, node_id: str, endpoint: str, on_found: FoundCallback,
                 interfaces: Interfaces | None = None, *,
                 on_goodbye: GoodbyeCallback | None = None,
                 props: Mapping[str, str] | None = None) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        host, port = split_endpoint(endpoint)
        self.port = _check_port(endpoint, port)
        self.node_id = node_id
        self.endpoint = endpoint
        self.on_found = on_found
        self.on_goodbye = on_goodbye
        self.interfaces: Interfaces = (interfaces_for_bind(endpoint) if interfaces is None
                                       else list(interfaces) if not isinstance(interfaces, InterfaceChoice)
                                       else interfaces)
        self.extra = dict(props or {})
        bad = RESERVED_KEYS.intersection(self.extra)
        if bad:
            raise ValueError(f"props may not set reserved key(s) {sorted(bad)}")
        self._wildcard = host in _WILDCARD_HOSTS or ((ip := _ip(host)) is not None and ip.is_unspecified)
        self.label = instance_name(node_id)
        self.service_name = f"{self.label}.{SERVICE_TYPE}"   # may change on a name conflict
        self._boot = ""
        self._seq = 0
        self._check_txt(self._properties())
        self._aiozc: AsyncZeroconf | None = None
        self._watcher: _Watcher | None = None
        self._info: AsyncServiceInfo | None = None
        self._announcing: asyncio.Future[Any] | None = None
        self._lock = asyncio.Lock()

    # -- what we announce -----------------------------------------------------------
    def _properties(self) -> dict[str, str]:
        return {**self.extra, "id": self.node_id, "proto": str(PROTOCOL_VERSION),
                "ep": self.endpoint, "boot": self._boot or "0" * 12, "seq": str(self._seq)}

    @staticmethod
    def _check_txt(props: Mapping[str, str]) -> None:
        for k, v in props.items():
            if not k or "=" in k:
                raise ValueError(f"bad TXT key {k!r}")
            size = len(k.encode()) + 1 + len(v.encode("utf-8", "surrogatepass"))
            if size > MAX_TXT_ENTRY:
                raise ValueError(f"TXT property {k!r} is {size} bytes as key=value; the limit is "
                                 f"{MAX_TXT_ENTRY} (is the node id too long?)")

    def _addresses(self) -> list[str]:
        if self._wildcard:
            return local_ipv4_addresses()
        if isinstance(self.interfaces, list) and is_loopback_only(self.interfaces):
            host, _ = split_endpoint(self.endpoint)
            ip = _resolve_host(host)
            return [str(ip)] if ip is not None and ip.version == 4 and ip.is_loopback else ["127.0.0.1"]
        if isinstance(self.interfaces, list):
            return list(self.interfaces)
        host, _ = split_endpoint(self.endpoint)
        ip = _resolve_host(host)
        return [str(ip)] if ip is not None else local_ipv4_addresses()

    def _make_info(self, name: str, server: str | None = None) -> AsyncServiceInfo:
        return AsyncServiceInfo(SERVICE_TYPE, name, port=self.port, properties=self._properties(),
                                server=server, parsed_addresses=self._addresses())

    @property
    def running(self) -> bool:
        return self._aiozc is not None

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Open mDNS, start browsing, and register this node. Returns once the name
        was probed (about 1 s) and the first announcement is on its way; the other
        announcements go on in the background. Raises DiscoveryError if mDNS cannot
        run on the chosen interfaces."""
        async with self._lock:
            if self._aiozc is not None:
                return
            self._boot = secrets.token_hex(6)
            self._seq = 0
            aiozc = _make_zeroconf(self.interfaces)
            self._aiozc = aiozc
            try:
                self._watcher = _Watcher(aiozc, self.interfaces, self.on_found, self.on_goodbye,
                                         ignore_id=self.node_id,
                                         ignore_name=lambda: self.service_name)
                self._watcher.start()
                info = self._make_info(f"{self.label}.{SERVICE_TYPE}")
                self.service_name = info.name
                self._announcing = asyncio.ensure_future(
                    await aiozc.async_register_service(info, allow_name_change=True))
                self._info = info
                if info.name != f"{self.label}.{SERVICE_TYPE}":
                    log.warning("mDNS: another service already uses the name %r; announcing node %s "
                                "as %r. Node ids must be unique in a mesh.",
                                self.label, self.node_id, info.name)
                    self.service_name = info.name
                log.info("mDNS: announcing node %s (%s) on %s", self.node_id, self.endpoint,
                         self.interfaces if isinstance(self.interfaces, list) else "all interfaces")
            except BaseException as e:
                await self._close()
                if isinstance(e, (OSError, BadTypeInNameException)):
                    raise DiscoveryError(f"cannot announce node {self.node_id}: {e}") from e
                raise

    async def reannounce(self, props: Mapping[str, str] | None = None) -> None:
        """Announce again, with a new ``seq`` (and ``props`` replacing the extra
        properties if given), so every peer sees an update and calls on_found:
        for when this node may have been given up on (after a partition, say)."""
        async with self._lock:
            if self._aiozc is None or self._info is None:
                raise RuntimeError("Discovery.reannounce() before start()")
            if props is not None:
                extra = dict(props)
                bad = RESERVED_KEYS.intersection(extra)
                if bad:
                    raise ValueError(f"props may not set reserved key(s) {sorted(bad)}")
                old_extra, self.extra = self.extra, extra
                try:
                    self._check_txt(self._properties())
                except ValueError:
                    self.extra = old_extra
                    raise
            self._seq += 1
            await self._cancel_announcing()
            info = self._make_info(self._info.name, server=self._info.server)
            self._announcing = asyncio.ensure_future(await self._aiozc.async_update_service(info))
            self._info = info

    async def stop(self) -> None:
        """Withdraw this node (the goodbye packets are sent before this returns,
        about 0.25 s) and close mDNS. Safe to call twice, or after a failed start."""
        async with self._lock:
            await self._close()

    async def _cancel_announcing(self) -> None:
        fut, self._announcing = self._announcing, None
        if fut is not None and not fut.done():
            fut.cancel()
        if fut is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await fut

    async def _close(self) -> None:
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        watcher, self._watcher = self._watcher, None
        info, self._info = self._info, None
        try:
            if watcher is not None:
                await watcher.close()
            await self._cancel_announcing()
            if info is not None:
                try:
                    goodbye = await aiozc.async_unregister_service(info)
                    await goodbye
                except Exception as e:  # noqa: BLE001 -- a failed goodbye must not stop the close
                    log.warning("mDNS: goodbye for %s failed: %s", self.node_id, e)
        finally:
            await aiozc.async_close()


# ---- the client side --------------------------------------------------------------------

def mesh_of(props: Mapping[str, str]) -> str:
    """The mesh a node's TXT record says it belongs to."""
    return props.get("mesh", "")


async def browse(timeout: float, interfaces: Interfaces | None = None, *,
                 settle: float = DEFAULT_SETTLE, mesh: str | None = None,
                 meshes: set[str] | None = None,
                 ignored: set[str] | None = None) -> dict[str, str]:
    """Find mesh nodes once: ``{node_id: endpoint}``. Returns as soon as at least
    one node was found and nothing new appeared for ``settle`` seconds, or at
    ``timeout`` (``{}`` if none answered). ``interfaces=None`` means all interfaces
    (loopback included). ``mesh``: only nodes of that mesh (others are ignored).
    ``meshes``: filled with the meshes of the nodes returned; ``ignored``: with
    those of the nodes left out for being of another mesh.
    Raises DiscoveryError if mDNS cannot run."""
    ifaces: Interfaces = InterfaceChoice.All if interfaces is None else (
        interfaces if isinstance(interfaces, InterfaceChoice) else list(interfaces))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found: dict[str, str] = {}
    last_new = loop.time()

    def on_found(node_id: str, endpoint: str, props: dict[str, str]) -> None:
        nonlocal last_new
        if mesh is not None and mesh_of(props) != mesh:
            if ignored is not None:
                ignored.add(mesh_of(props))
            log.debug("mDNS: ignoring node %s at %s: it belongs to mesh %r, not %r", node_id,
                      endpoint, mesh_of(props), mesh)
            return
        if found.get(node_id) != endpoint:
            found[node_id] = endpoint
            last_new = loop.time()
            if meshes is not None:
                meshes.add(mesh_of(props))

    aiozc = _make_zeroconf(ifaces)
    watcher = _Watcher(aiozc, ifaces, on_found)
    try:
        watcher.start()
        while True:
            now = loop.time()
            if now >= deadline:
                break
            quiet_for = now - last_new
            if found and not watcher.pending and quiet_for >= settle:
                break
            # wake when a resolution ends, when the settle time is up, or at the deadline
            wait = deadline - now
            if found and quiet_for < settle:
                wait = min(wait, settle - quiet_for)
            watcher.activity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watcher.activity.wait(), wait)
    finally:
        try:
            await watcher.close()
        finally:
            await aiozc.async_close()
    return dict(found)


def browse_sync(timeout: float, interfaces: Interfaces | None = None, *,
                settle: float = DEFAULT_SETTLE, mesh: str | None = None,
                meshes: set[str] | None = None,
                ignored: set[str] | None = None) -> dict[str, str]:
    """:func:`browse` for code without an event loop (a CLI, a plain thread, or
    even a thread whose loop is running: the work runs on a private loop in a
    short-lived thread of its own, so the caller's loop state is left alone)."""
    result: dict[str, str] = {}
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.update(asyncio.run(browse(timeout, interfaces, settle=settle, mesh=mesh,
                                             meshes=meshes, ignored=ignored)))
        except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread below
            error.append(e)

    t = threading.Thread(target=run, name="mesh-mdns-browse", daemon=True)
    started = time.monotonic()
    t.start()
    t.join()
    if error:
        raise error[0]
    log.debug("mDNS browse found %d node(s) in %.2f s", len(result), time.monotonic() - started)
    return result
