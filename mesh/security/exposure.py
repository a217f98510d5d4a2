"""Without keys, a node stays on loopback unless told otherwise (``--insecure``).

A node without keys trusts whoever reaches its port: anyone may run tasks, read
results and events, shut it down, or speak membership. So without keys the default
bind is loopback (``tcp://127.0.0.1:7700``: friendlier than refusing to start), and a
bind, advertised address or mDNS interface beyond loopback is refused with a message
saying how to make keys, unless ``--insecure`` says the network is trusted.
"""
from __future__ import annotations

import ipaddress

from mesh.config import Config

HOWTO = ("make the mesh's keys with `meshctl keys init DIR` and start every node with "
         "--keys DIR (MESH_KEYS=DIR), or pass --insecure on a network you trust")


def is_loopback(host: str) -> bool:
    """Whether a host (from tcp://HOST:PORT, or an interface IP) is loopback only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False          # a wildcard (*, 0.0.0.0) or a name: beyond loopback


def host_of(endpoint: str) -> str:
    return endpoint.removeprefix("tcp://").rpartition(":")[0]


def exposure(config: Config) -> str | None:
    """What a node with ``config`` would expose beyond loopback without keys (None:
    nothing, or it has keys, or --insecure)."""
    if config.keys or config.insecure:
        return None
    if not is_loopback(host_of(config.bind)):
        return f"binding {config.bind} beyond loopback"
    if config.advertise and not is_loopback(host_of(config.advertise)):
        return f"advertising {config.advertise} beyond loopback"
    if config.mdns:
        beyond = [i for i in config.mdns_interfaces if not is_loopback(i)]
        if beyond:
            return f"announcing on mDNS on {', '.join(beyond)}"
    return None


def refusal(config: Config) -> str | None:
    """The message a node without keys gives instead of exposing itself, or None."""
    what = exposure(config)
    if what is None:
        return None
    return f"refusing {what} without keys: {HOWTO}"
