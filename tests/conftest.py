"""Fixtures shared by the test suites.

Integration fixtures run the real programs (see tests/integration/harness.py):

* ``free_port``    -- a loopback TCP port that was free a moment ago
* ``start_node``   -- ``start_node(**flags)`` starts a ``meshnode``; stopped at teardown
* ``start_module_node`` -- the same, for nodes shared by one test module
* ``make_client``  -- ``make_client(*nodes)``: a client app pointed at those nodes,
  with the test tasks registered on it (``c.tasks.add.delay(2, 3)``); closed at teardown
* ``raw_dealer``   -- ``raw_dealer(endpoint)``: a bare zmq DEALER for speaking garbage

When a test fails, the stderr of the nodes it used is added to its report; with
``MESH_TEST_KEEP=DIR`` its whole directory (journals, full node logs) is also copied
to DIR once its nodes are stopped (see tests/integration/harness.py).

The suite runs in parallel (pytest-xdist, ``-n``, scripts/test.sh): most tests wait on
real processes, not on the CPU. Tests that browse or announce real mDNS on loopback
see every node announced on this machine, so they run one at a time, whichever
worker runs them (a file lock: ``_one_mdns_test_at_a_time``).
"""
from __future__ import annotations

import fcntl
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, settings

# Hypothesis's timing checks (a slow example, a slow draw) fail a property test on a
# loaded machine (CI under load, parallel workers) without saying anything about mesh:
# off for every property test; each test's own settings still apply on top of these.
settings.register_profile("mesh", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mesh")

# pytest rewrites the asserts of every test module it imports and caches the result
# in __pycache__ (*-pytest-*.pyc), unless bytecode writing is off: with
# PYTHONDONTWRITEBYTECODE set (as in CI sandboxes) every pytest process, each xdist
# worker, rewrote all ~130 test modules again: 12.2 s of CPU to collect tests/unit and
# tests/integration, 5.1 s with the cache (`pytest --collect-only -q`, 2026-12-02).
# The rewritten modules are written here, as scripts/setup.sh compiles mesh/ and
# tests/ (what a module imports at run time is compiled already); the programs the
# tests start keep the environment's setting. pytest writes each file atomically.
sys.dont_write_bytecode = False

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
if str(INTEGRATION_DIR) not in sys.path:   # tasks_app and harness, under the names nodes use
    sys.path.insert(0, str(INTEGRATION_DIR))

from harness import ClientHandle, NodeFactory, NodeProc, keep_failed, make_client_app
from harness import free_port as _free_port

from mesh.client.control import ControlClient


@pytest.fixture(scope="session")
def control() -> Iterator[ControlClient]:
    with ControlClient() as cc:
        yield cc


@pytest.fixture
def free_port() -> int:
    return _free_port()


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def start_node(request: pytest.FixtureRequest, tmp_path: Path,
               control: ControlClient) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path, control)
    yield factory
    factory.close()
    if request.node.stash.get(FAILED, False):
        kept = keep_failed(tmp_path, request.node.nodeid)
        if kept is not None:
            print(f"\n[MESH_TEST_KEEP] {request.node.nodeid}: kept in {kept}", file=sys.stderr)


@pytest.fixture(scope="module")
def start_module_node(tmp_path_factory: pytest.TempPathFactory,
                      control: ControlClient) -> Iterator[NodeFactory]:
    factory = NodeFactory(tmp_path_factory.mktemp("nodes"), control)
    yield factory
    factory.close()


@pytest.fixture
def make_client(start_node: NodeFactory) -> Iterator[Callable[..., ClientHandle]]:
    # depends on start_node so that clients close before the nodes they talk to stop
    import tasks_app
    clients: list[ClientHandle] = []

    def make(*nodes: NodeProc | str, **options: Any) -> ClientHandle:
        endpoints = [n.endpoint if isinstance(n, NodeProc) else n for n in nodes]
        client = make_client_app(endpoints, tasks_app, **options)   # keys=DIR, ...
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.close()


@pytest.fixture
def raw_dealer() -> Iterator[Callable[[str], zmq.Socket[bytes]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []

    def make(endpoint: str) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoint)
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close(linger=0)
    ctx.term()


# tests that announce or browse real mDNS on the machine's loopback are marked `mdns`
MDNS_LOCK = Path(tempfile.gettempdir()) / "mesh-tests-mdns.lock"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``mdns`` tests first (the others keep their order): with the work-stealing
    schedule below they are all in the first worker's share and run one after another
    there, instead of a worker waiting on another's at the lock."""
    items.sort(key=lambda item: item.get_closest_marker("mdns") is None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``-n N`` runs with xdist's work-stealing schedule (``--dist worksteal``) unless
    another ``--dist`` than the default is asked for. Each worker gets a contiguous
    share of the tests and takes half of another's rest when it runs out. With the
    default round robin, the mdns tests (run one at a time, a file lock) were spread
    over every worker, which waited for each other's at the lock: 20 to 45 s of setup
    each in a CI run (tests/integration/test_e2e_discovery.py, test_e2e_membership.py);
    and a module's shared nodes (``start_module_node``) were started on every worker
    that got one of its tests."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import WorkStealingScheduling
    return WorkStealingScheduling(config, log)


@pytest.fixture(autouse=True)
def _one_mdns_test_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``mdns`` run one at a time across the xdist workers (a file lock:
    xdist's own grouping does not hold with pytest 9), so none sees another's nodes.
    Only those tests: locking their whole modules held a worker waiting up to ~45 s at
    a time in a default run, for tests that use no mDNS."""
    if request.node.get_closest_marker("mdns") is None:
        yield
        return
    with open(MDNS_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and report.when in ("setup", "call"):
        item.stash[FAILED] = True
        for value in getattr(item, "funcargs", {}).values():
            nodes = (value.nodes if isinstance(value, NodeFactory)
                     else [value] if isinstance(value, NodeProc) else [])
            for node in nodes:
                report.sections.append((f"meshnode {node.name} ({node.endpoint}) stderr, last lines",
                                        node.stderr_tail(60)))
    return report


@pytest.fixture
def mesh_keys(tmp_path: Path) -> Path:
    """A fresh key directory (``meshctl keys init``): the mesh pair, client "default",
    admin "operator". Start nodes with ``start_node(keys=mesh_keys)``."""
    from mesh.security.keys import init
    path = tmp_path / "keys"
    init(str(path))
    return path
