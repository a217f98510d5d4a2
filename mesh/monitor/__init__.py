"""Monitoring, subscriber side: receive every node's events and keep a picture of the
mesh (see receiver)."""
from mesh.monitor.receiver import *  # noqa: F401,F403
from mesh.monitor.receiver import __all__  # noqa: F401
