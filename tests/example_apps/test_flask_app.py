"""examples/flask_app: the Flask test client against the real app, tasks on a real node
(meshnode -A examples.flask_app.make_mesh), and in eager mode."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask", reason="Flask is a test extra: pip install -e '.[test]'")

from harness import NodeFactory, NodeProc, wait_until


@pytest.fixture(scope="module")
def node(start_module_node: NodeFactory) -> NodeProc:
    return start_module_node(app="examples.flask_app.make_mesh")


@pytest.fixture
def client(node: NodeProc) -> Iterator[Any]:
    from examples.flask_app import create_app
    flask_app = create_app({"TESTING": True, "MESH_PEERS": [node.endpoint]})
    yield flask_app.test_client()
    flask_app.extensions["mesh"].close()


def result_of(client: Any, result_id: str) -> Any:
    def ready() -> Any:
        body = client.get(f"/result/{result_id}").get_json()
        return body if body["ready"] else None
    return wait_until(ready, 30, f"task {result_id}")


def test_a_view_sends_a_task_and_another_reads_its_result(client: Any) -> None:
    result_id = client.post("/add", json={"a": 2, "b": 40}).get_json()["result_id"]
    assert result_of(client, result_id) == {"ready": True, "state": "SUCCESS", "value": 42}


def test_tasks_run_inside_the_flask_app_context_on_the_node(client: Any, node: NodeProc) -> None:
    result_id = client.post("/greet", json={"name": "Ada"}).get_json()["result_id"]
    value = result_of(client, result_id)["value"]
    assert value == {"text": "Hello, Ada!", "flask_app": "examples.flask_app", "node": node.name}


def test_eager_mode_runs_tasks_in_the_request_with_the_app_context() -> None:
    from examples.flask_app import create_app
    flask_app = create_app({"TESTING": True, "GREETING": "Hi",
                            "MESH": {"task_always_eager": True}})
    try:
        client = flask_app.test_client()
        result_id = client.post("/greet", json={"name": "Bo"}).get_json()["result_id"]
        assert flask_app.extensions["mesh"].AsyncResult(result_id) is not None
    finally:
        flask_app.extensions["mesh"].close()
