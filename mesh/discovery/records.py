"""What mDNS discovery announces and reads, without I/O: the service's names and TXT
properties, endpoints and the addresses to pick from, the interfaces a bind address
means (mesh/discovery/mdns.py does the announcing and browsing)."""
from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ifaddr
from zeroconf import InterfaceChoice

from mesh.digest import sha256
from mesh.security.text import safe_logger
from mesh.wire.protocol import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION

log = safe_logger("mesh.discovery")

SERVICE_TYPE = "_meshnode._tcp.local."
RESERVED_KEYS = frozenset({"id", "proto", "ep", "boot", "seq"})
MAX_TXT_ENTRY = 255          # one TXT string, "key=value", is length-prefixed by one byte
MAX_LABEL = 63               # one DNS label
RESOLVE_TIMEOUT = 3.0        # s, one attempt to get SRV+TXT+A of a service
RESOLVE_ATTEMPTS = 3         # then give up until the service's records change
DEFAULT_SETTLE = 0.3         # s, browse(): stop once nothing new was found for this long
# s, a look meant to see every node (meshctl): past zeroconf's second query (~1 s after
# its first), so one answer lost or late under load does not drop that node from the
# look (a loaded CI run: `meshctl ping` answered for one of two nodes, six times)
EVERY_NODE_SETTLE = 1.3
_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", ""})
_SAFE_LABEL = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")

#: ``on_found(node_id, endpoint, props)``: a peer's service was added or updated.
FoundCallback = Callable[[str, str, dict[str, str]], None]
#: ``on_goodbye(node_id)``: a peer's service was withdrawn (a hint, not a death).
GoodbyeCallback = Callable[[str], None]
#: What python-zeroconf takes: a list of IPs, or InterfaceChoice.All / .Default.
Interfaces = list[str] | InterfaceChoice


class DiscoveryError(RuntimeError):
    """mDNS could not be started (no usable interface, socket error, ...)."""


class MalformedRecord(ValueError):
    """A peer's TXT record is not one we can use."""


@dataclass(frozen=True)
class Peer:
    """A resolved peer service."""
    node_id: str
    endpoint: str
    props: dict[str, str]


# ---- pure helpers ---------------------------------------------------------------------

def split_endpoint(endpoint: str) -> tuple[str, str]:
    """``tcp://HOST:PORT`` -> (host, port); brackets of an IPv6 host are removed."""
    if not isinstance(endpoint, str) or not endpoint.startswith("tcp://"):
        raise ValueError(f"endpoint {endpoint!r} must look like tcp://HOST:PORT")
    host, sep, port = endpoint[6:].rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"endpoint {endpoint!r} must look like tcp://HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _check_port(endpoint: str, port: str) -> int:
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r}: port must be 1..65535 (a bound port, not '*')")
    return int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _resolve_host(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP literal as is; a host name through the resolver (e.g. localhost)."""
    ip = _ip(host)
    if ip is not None:
        return ip
    try:
        return _ip(socket.gethostbyname(host))
    except OSError:
        return None


def interfaces_for_bind(endpoint: str) -> Interfaces:
    """The interfaces to announce on for a node bound to ``endpoint``.

    127.x (or ::1, localhost) -> ``["127.0.0.1"]``: loopback only (python-zeroconf
    cannot use ::1, so an IPv6-loopback node is announced over IPv4 loopback);
    one IP -> ``[that IP]``; a wildcard or a name that does not resolve ->
    ``InterfaceChoice.All`` (every interface, loopback included).
    """
    host, _ = split_endpoint(endpoint)
    if host in _WILDCARD_HOSTS:
        return InterfaceChoice.All
    ip = _resolve_host(host)
    if ip is None or ip.is_unspecified:
        return InterfaceChoice.All
    if ip.is_loopback:
        return ["127.0.0.1"]
    return [str(ip)]


def is_loopback_only(interfaces: Interfaces) -> bool:
    return isinstance(interfaces, list) and bool(interfaces) and all(
        (ip := _ip(i)) is not None and ip.is_loopback for i in interfaces)


def instance_name(node_id: str) -> str:
    """A DNS-SD instance label for ``node_id``: the id itself when it is short,
    lower-case and plain (``[a-z0-9][a-z0-9_-]*``, at most 63 bytes), else a
    sanitised prefix plus 8 hex digits of its SHA-256, so different ids stay
    different (DNS names compare case-insensitively; dots would split the label).
    Deterministic: a restarted node takes the same name."""
    if len(node_id) <= MAX_LABEL and _SAFE_LABEL.match(node_id):
        return node_id
    digest = sha256(node_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    safe = re.sub(r"[^a-z0-9_-]+", "-", node_id.lower()).strip("-_")[:MAX_LABEL - 9]
    return f"{safe}-{digest}" if safe else f"node-{digest}"


def local_ipv4_addresses() -> list[str]:
    """This host's IPv4 addresses (those python-zeroconf uses for InterfaceChoice.All),
    non-loopback first."""
    addrs = {str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips
             if ip.is_IPv4 and isinstance(ip.ip, str)}
    return sorted(addrs, key=lambda a: (a.startswith("127."), a))


def _local_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str):
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.IPv4Network(f"{ip.ip}/{ip.network_prefix}", strict=False))
    return nets


def choose_address(addresses: Sequence[str], loopback_only: bool,
                   local_nets: Sequence[ipaddress.IPv4Network] = ()) -> str | None:
    """Which advertised address of a wildcard-bound peer to connect to.

    Listening on loopback only, a loopback address (the peer is on this host) is
    the one we can reach; otherwise a non-loopback one, preferably on one of our
    own subnets (a peer's 127.0.0.1 is its own loopback, not ours)."""
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ip for a in addresses if (ip := _ip(a)) is not None and ip.version == 4]
    if not ips:
        ips = [ip for a in addresses if (ip := _ip(a)) is not None]
        if not ips:
            return None
    loop = [ip for ip in ips if ip.is_loopback]
    other = [ip for ip in ips if not ip.is_loopback and not ip.is_unspecified]
    if loopback_only and loop:
        return str(loop[0])
    for ip in other:
        if any(ip in net for net in local_nets):
            return str(ip)
    if other:
        return str(other[0])
    return str(loop[0]) if loop else None


def _format_endpoint(host: str, port: str) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def parse_properties(raw: Mapping[bytes, bytes | None]) -> dict[str, str]:
    """TXT properties as text; raises MalformedRecord when they are not UTF-8."""
    out: dict[str, str] = {}
    for k, v in raw.items():
        try:
            out[k.decode("utf-8")] = "" if v is None else v.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecord(f"TXT property {k!r} is not UTF-8") from None
    return out


def parse_peer(raw: Mapping[bytes, bytes | None], addresses: Sequence[str],
               loopback_only: bool, local_nets: Sequence[ipaddress.IPv4Network] = ()) -> Peer:
    """Validate a peer's TXT record and work out the endpoint to connect to.
    Raises MalformedRecord with the reason."""
    props = parse_properties(raw)
    node_id = props.get("id", "")
    if not node_id:
        raise MalformedRecord("no 'id' property")
    proto_text = props.get("proto", "")
    if not (proto_text.isascii() and proto_text.isdigit()):
        raise MalformedRecord(f"'proto' must be an integer, got {proto_text!r}")
    ep = props.get("ep", "")
    try:
        host, port = split_endpoint(ep)
        _check_port(ep, port)
    except ValueError as e:
        raise MalformedRecord(f"bad 'ep': {e}") from None
    if host in _WILDCARD_HOSTS or ((ip := _ip(host)) is not None and ip.is_unspecified):
        chosen = choose_address(addresses, loopback_only, local_nets)
        if chosen is None:
            raise MalformedRecord(f"'ep' {ep!r} is a wildcard and the service has no address")
        ep = _format_endpoint(chosen, port)
    return Peer(node_id, ep, props)


def compatible(props: Mapping[str, str]) -> bool:
    """Does this peer speak a protocol version we accept?"""
    try:
        return MIN_PROTOCOL_VERSION <= int(props.get("proto", "")) <= PROTOCOL_VERSION
    except ValueError:
        return False
