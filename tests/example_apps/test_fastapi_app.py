"""examples/fastapi_app: the real ASGI app (lifespan included) through Starlette's test
client, awaiting results of tasks run by a real node (meshnode -A examples.fastapi_app.worker)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="FastAPI is a test extra: pip install -e '.[test]'")

from harness import NodeFactory, NodeProc, wait_until


@pytest.fixture(scope="module")
def node(start_module_node: NodeFactory) -> NodeProc:
    return start_module_node(app="examples.fastapi_app.worker")


@pytest.fixture(scope="module")
def client(node: NodeProc) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from examples.fastapi_app.main import create_api
    with TestClient(create_api(peers=[node.endpoint])) as c:     # runs the lifespan
        yield c


def test_a_handler_awaits_the_result(client: Any) -> None:
    response = client.post("/add", json={"x": 2, "y": 3})
    assert response.status_code == 200 and response.json() == {"result": 5}


def test_the_tasks_own_exception_reaches_the_handler(client: Any) -> None:
    ok = client.post("/reserve", json={"item": "mug", "quantity": 2})
    assert ok.json() == {"item": "mug", "reserved": 2}
    refused = client.post("/reserve", json={"item": "mug", "quantity": 50})
    assert refused.status_code == 409 and refused.json() == {"detail": "only 10 mug left"}


def test_a_job_is_followed_by_id(client: Any) -> None:
    job_id = client.post("/jobs", params={"seconds": 0.2}).json()["id"]

    def done() -> Any:
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["state"] == "SUCCESS" else None
    assert wait_until(done, 30, f"job {job_id}") == {"id": job_id, "state": "SUCCESS", "result": 0.2}
    assert client.get("/jobs/no-such-job").status_code == 404


def test_the_submitting_worker_sees_a_running_job_as_started(client: Any) -> None:
    """(A user trial, uvicorn --workers 2) another worker sees a running task as
    STARTED (its node answers the lookup); the worker that submitted it saw RECEIVED
    until the end unless the task has track_started, so a page polling /jobs/{id}
    showed RECEIVED and STARTED in turn. The example's slow task has it."""
    job_id = client.post("/jobs", params={"seconds": 2.0}).json()["id"]
    assert wait_until(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "STARTED",
                      30, f"job {job_id} to be STARTED in the worker that sent it")
    assert wait_until(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "SUCCESS",
                      30, f"job {job_id} to end")


def test_the_lifespan_closes_the_mesh_client(node: NodeProc) -> None:
    from fastapi.testclient import TestClient

    from examples.fastapi_app.main import create_api
    api = create_api(peers=[node.endpoint])
    with TestClient(api) as c:
        assert c.post("/add", json={"x": 1, "y": 1}).json() == {"result": 2}
        mesh = api.state.mesh
        assert mesh._client is not None
    assert mesh._client is None       # closed at shutdown: its I/O thread is gone

