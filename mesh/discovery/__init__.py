"""Discovery: how nodes and clients first hear of each other (mDNS via zeroconf; static
seeds are plain configuration). Discovery only introduces nodes; membership decides
who is alive."""
from mesh.discovery.mdns import Discovery, DiscoveryError

__all__ = ["Discovery", "DiscoveryError"]
