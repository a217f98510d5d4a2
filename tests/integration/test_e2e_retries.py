"""Retries on real nodes: self.retry, autoretry_for with backoff, max_retries, the
RETRY state, MaxRetriesExceededError."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import tasks_app
from harness import ClientHandle, NodeFactory, NodeProc, wait_until

from mesh import states
from mesh.exceptions import MaxRetriesExceededError


@pytest.fixture
def client(start_node: NodeFactory, make_client: Callable[..., ClientHandle]) -> ClientHandle:
    node: NodeProc = start_node(concurrency=2)
    return make_client(node)


def calls(path: Path) -> int:
    return int(path.read_text()) if path.exists() else 0


def test_self_retry_runs_again_until_it_succeeds(client: ClientHandle, tmp_path: Path) -> None:
    counter = tmp_path / "flaky"
    r = client.tasks.flaky.delay(str(counter), 2)
    assert r.get(timeout=30) == {"retries": 2}      # request.retries counts the retries
    assert calls(counter) == 3


def test_state_is_retry_while_waiting_to_run_again(client: ClientHandle, tmp_path: Path) -> None:
    counter = tmp_path / "slow-retry"
    r = client.tasks.flaky.delay(str(counter), 1, 3.0)   # one retry, 3 s later
    wait_until(lambda: r.state == states.RETRY, timeout=20, what="the RETRY state")
    assert not r.ready()
    assert r.get(timeout=30) == {"retries": 1}
    assert r.state == states.SUCCESS


def test_max_retries_then_the_exception_is_raised(client: ClientHandle) -> None:
    r = client.tasks.retry_then_fail.delay()
    with pytest.raises(ValueError, match="after 2 retries"):
        r.get(timeout=30)
    assert r.state == states.FAILURE


def test_retry_without_exc_ends_in_max_retries_exceeded(client: ClientHandle) -> None:
    r = client.tasks.retry_without_exc.delay()
    with pytest.raises(MaxRetriesExceededError):
        r.get(timeout=30)


def test_autoretry_for_with_backoff(client: ClientHandle, tmp_path: Path) -> None:
    counter = tmp_path / "auto"
    assert client.tasks.auto_flaky.delay(str(counter), 2).get(timeout=30) == 3


def test_autoretry_gives_up_after_max_retries(client: ClientHandle, tmp_path: Path) -> None:
    counter = tmp_path / "exhausted"
    with pytest.raises(KeyError):
        client.tasks.auto_exhausted.delay(str(counter)).get(timeout=30)
    assert calls(counter) == 2                          # the first run and one retry


def test_retry_in_a_plain_local_call_raises_the_exception() -> None:
    with pytest.raises(ValueError, match="after 0 retries"):
        tasks_app.retry_then_fail()


def test_a_retried_task_given_back_at_shutdown_keeps_its_retry_count(
        start_node: NodeFactory, make_client: Callable[..., ClientHandle], tmp_path: Path) -> None:
    import signal
    a = start_node(concurrency=1, profile="test")
    client = make_client(a)
    counter = tmp_path / "released-retry"
    # on a: fails once, retries 8 s later (b's start and the client learning it took
    # over 3 s on a loaded machine: the retry then ran on a before a was stopped)
    r = client.tasks.flaky.delay(str(counter), 1, 8.0)
    wait_until(lambda: r.state == states.RETRY, timeout=20, what="the RETRY state")
    b = start_node(concurrency=1, profile="test", peers=a.endpoint)
    wait_until(lambda: b.endpoint in {n["endpoint"] for n in client.app.client.nodes()},
               timeout=20, what="the client to learn b from a")
    a.send_signal(signal.SIGTERM)                           # the scheduled retry goes back
    assert r.get(timeout=30) == {"retries": 1}              # ran on b as retry 1, not 0
    assert r.node == b.name
    assert calls(counter) == 2


def test_close_fails_what_is_still_outstanding(client: ClientHandle, tmp_path: Path) -> None:
    from mesh.exceptions import MeshError
    gate = tmp_path / "never"
    r = client.app.send_task(tasks_app.wait_for_file.name, args=(str(gate),))
    wait_until(lambda: r.state == states.RECEIVED, timeout=20, what="the task to be received")
    client.app.close()
    with pytest.raises(MeshError, match="closed"):
        r.get(timeout=10)
    gate.touch()        # the node's child ends the task: the node stops at once at teardown,
    #                     not after the harness's 10 s grace (a running task delays a stop)


def test_an_outstanding_task_id_cannot_be_reused(client: ClientHandle, tmp_path: Path) -> None:
    from mesh.exceptions import ConfigError
    gate = tmp_path / "gate"
    r = client.app.send_task(tasks_app.wait_for_file.name, args=(str(gate),), task_id="same-id")
    wait_until(lambda: client.app.AsyncResult("same-id").state != states.UNKNOWN, timeout=20,
               what="the first task to be registered in the client")
    with pytest.raises(ConfigError, match="already outstanding"):
        client.app.send_task(tasks_app.add.name, args=(1, 2), task_id="same-id")
    gate.write_text("open")
    assert r.get(timeout=30) == "opened"


def test_retry_info_is_the_exception_it_retries_for(client: ClientHandle, tmp_path: Path) -> None:
    # Celery's RETRY meta: r.info is the exception the task retries for, r.traceback its
    # traceback, for the sender and for any process that looks it up; mesh gave None
    counter = tmp_path / "slow-retry"
    r = client.tasks.flaky.delay(str(counter), 1, 5.0)   # one retry, 5 s later
    wait_until(lambda: r.state == states.RETRY, timeout=20, what="the RETRY state")
    assert isinstance(r.info, OSError) and str(r.info) == "flaky, attempt 1"
    assert "OSError: flaky, attempt 1" in (r.traceback or "")
    from mesh import Mesh
    with Mesh("reader", peers=client.app.config.peers, mdns=False) as reader:
        other = reader.AsyncResult(r.id)
        assert other.state == states.RETRY
        assert isinstance(other.info, OSError) and str(other.info) == "flaky, attempt 1"
        assert "OSError: flaky, attempt 1" in (other.traceback or "")
    assert r.get(timeout=30) == {"retries": 1}
    assert r.info == {"retries": 1} and r.traceback is None
