"""Test helpers: a node's components run in the test's own process and event loop
(``running_node``), with a solo pool instead of forked children (``SoloPool``);
``until`` waits in the loop for a condition; ``start_worker`` is Celery's (a node for an
app in a thread, for a test suite: mesh/testing/worker.py)."""
from mesh.testing.node import SoloExecutor, running_node, solo_components, until
from mesh.testing.solo import SoloPool
from mesh.testing.worker import start_worker

__all__ = ["SoloExecutor", "SoloPool", "running_node", "solo_components", "start_worker",
           "until"]
