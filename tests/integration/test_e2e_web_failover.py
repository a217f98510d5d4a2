"""A web app's "job status by id" while a node is killed: the example FastAPI app
(examples/fastapi_app) in two processes, as two web workers are: one submits jobs and
exits, the other is asked about them by id while the node holding some of them is
killed with -9. (Found by a user trial: the asking worker answered 404, "no task",
for tasks the mesh had and was about to run, because the killed holder did not
answer and its backup said UNKNOWN for the copies it keeps.)"""
from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="FastAPI is a test extra: pip install -e '.[test]'")

from harness import NodeFactory, run_python, wait_until

from mesh.wire.protocol import ControlReply

pytestmark = pytest.mark.timeout(120)

APP = "examples.fastapi_app.worker"
SECONDS = 3.0

SUBMIT = """
import json, sys
from fastapi.testclient import TestClient
from examples.fastapi_app.main import create_api
with TestClient(create_api(peers=sys.argv[1].split(","))) as web:
    ids = [web.post("/jobs", params={"seconds": float(sys.argv[2])}).json()["id"]
           for _ in range(int(sys.argv[3]))]
print(json.dumps(ids))
"""


def _running(node: Any) -> set[str]:
    reply = node.request("active")
    assert isinstance(reply, ControlReply) and reply.ok, reply
    return {t["id"] for t in reply.payload}


def test_a_job_looked_up_while_its_node_is_killed_is_never_reported_unknown(
        start_node: NodeFactory) -> None:
    from fastapi.testclient import TestClient

    from examples.fastapi_app.main import create_api
    a = start_node(app=APP, name="wa")
    b = start_node(app=APP, name="wb", peers=a.endpoint)
    for n in (a, b):   # both alive, and each copies the tasks it holds to the other
        wait_until(lambda: "kept in two copies" in n.stderr(), 30,  # noqa: B023
                   f"{n.name} to keep two copies")
    peers = f"{a.endpoint},{b.endpoint}"
    # the submitting web worker: sends 6 jobs and exits (2 children per node: a runs two)
    ids = json.loads(run_python(SUBMIT, peers, str(SECONDS), "6").stdout.strip().splitlines()[-1])
    on_a = wait_until(lambda: _running(a) & set(ids) or None, 20, "a job running on a")

    with TestClient(create_api(peers=[a.endpoint, b.endpoint])) as web:   # the other worker
        assert web.get("/jobs/no-such-job").status_code == 404    # (knows the members now)
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        seen: dict[str, list[Any]] = {i: [] for i in ids}
        done: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while len(done) < len(ids) and time.monotonic() < deadline:
            for job in ids:
                if job in done:
                    continue
                r = web.get(f"/jobs/{job}")
                body = r.json()
                got = body.get("state") if r.status_code == 200 else r.status_code
                if not seen[job] or seen[job][-1] != got:
                    seen[job].append(got)
                if got == "SUCCESS":
                    done[job] = body["result"]
            time.sleep(0.1)
    print("running on a when it was killed:", sorted(on_a), "\nstates seen:", seen)
    assert all(404 not in s for s in seen.values()), \
        f"a job the mesh had was reported as 'no task' (404): {seen}"
    assert done == {i: SECONDS for i in ids}, seen
