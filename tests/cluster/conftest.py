"""Fixtures for the cluster tests: several hosts in network namespaces (see netns.py).

* ``cluster``        -- ``cluster(n)``: a set-up :class:`netns.Cluster` of n hosts, torn
  down at the end of the test whatever happens
* ``module_cluster`` -- the same, shared by the tests of one module (closed after them)

Every test in this directory gets the ``cluster`` marker, and skips with the reason when
this machine cannot run them (not root, no ``ip``, namespaces refused). Namespaces left
by an earlier run that was killed are swept at the start; this run's are swept again at
the end of the session.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netns
import pytest
from netns import Cluster, ClusterFactory

CLUSTER_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    netns.sweep_run()       # whatever this run left (nothing, unless a teardown failed)


_swept: list[bool] = []


def _require_netns() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    if not _swept:
        _swept.append(True)
        netns.sweep_stale()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterFactory]:
    _require_netns()
    factory = ClusterFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    _require_netns()
    factory = ClusterFactory(tmp_path_factory.mktemp("cluster"))
    try:
        yield factory
    finally:
        factory.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure, add the last lines of every node's and agent's stderr to the report."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        clusters: dict[int, Cluster] = {}
        for value in getattr(item, "funcargs", {}).values():
            for c in (value.clusters if isinstance(value, ClusterFactory) else
                      [value] if isinstance(value, Cluster) else []):
                clusters[id(c)] = c
        for c in clusters.values():
            for h in c.hosts:
                for node in h.nodes:
                    title = f"meshnode {node.name} on host {h.name} ({node.endpoint}) stderr, last lines"
                    report.sections.append((title, node.stderr_tail(60)))
                tail = h.agent.stderr_tail(30)
                if tail:
                    report.sections.append((f"agent on host {h.name} stderr, last lines", tail))
    return report
