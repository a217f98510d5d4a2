"""Celery's guides moved over by their imports, on real nodes: "Next Steps", the shell
shortcuts of "Canvas", names of the "Calling", "Application" and "Periodic Tasks"
guides, and "Testing"'s ``start_worker``.

tests/integration/next_steps/proj is the guide's project, verbatim but for the import
line; its ``proj/celery.py`` ends with ``if __name__ == '__main__': app.start()``, so
``python -m proj.celery worker -l INFO`` is how that project starts a worker (and
``python -m proj.celery inspect registered`` asks the nodes). The client's lines are the
guides' pycon lines: ``~sig`` (``sig.apply_async().get()``), ``chunks(...).group()``
with ``skew``, and ``str(result)`` being the task's id.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    INTEGRATION_DIR,
    ROOT,
    NodeFactory,
    NodeProc,
    clean_env,
    free_port,
    wait_until,
)

NEXT_STEPS = INTEGRATION_DIR / "next_steps"


def _env(**extra: str) -> dict[str, str]:
    return clean_env(PYTHONPATH=os.pathsep.join([str(NEXT_STEPS), str(ROOT)]), **extra)


def _start(factory: NodeFactory, argv: list[str], cwd: Path, name: str) -> NodeProc:
    """A node started by ``argv`` (the app's own module, not meshnode), once it answers."""
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    data_dir = factory.base_dir / f"{name}.data"
    stderr_path = factory.base_dir / f"{name}.stderr"
    argv = [*argv, "-b", endpoint, "--no-mdns", "--data-dir", str(data_dir), "-n", name]
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=cwd,
                                env=_env(), start_new_session=True)
    node = NodeProc(name, endpoint, proc, stderr_path, data_dir, factory.control, argv, None)
    factory.nodes.append(node)
    assert factory._wait_ready(node, 30.0), node.stderr_tail()
    return node


@pytest.fixture(scope="module")
def worker(start_module_node: NodeFactory) -> Iterator[NodeProc]:
    """$ python -m proj.celery worker -l INFO -c 2   (Celery: celery -A proj worker)"""
    yield _start(start_module_node, [sys.executable, "-m", "proj.celery", "worker", "-l", "INFO",
                                     "-c", "2"], NEXT_STEPS, "next-steps")


def client(worker: NodeProc, code: str, cwd: Path = NEXT_STEPS) -> list[object]:
    """``code`` run as the guide's shell session; its last line printed as JSON."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90,
                       check=False, cwd=cwd, stdin=subprocess.DEVNULL,
                       env=_env(MESH_PEERS=worker.endpoint))
    assert p.returncode == 0, f"the script exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    out: list[object] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def test_app_start_runs_the_worker_and_the_other_commands(worker: NodeProc) -> None:
    # `if __name__ == '__main__': app.start()` ended in AttributeError: 'Mesh' object has no
    # attribute 'start'. The node it started loaded proj.celery:app with its include
    assert "tasks: proj.tasks.add, proj.tasks.mul, proj.tasks.xsum" in worker.stderr()
    assert client(worker, """
import json
from proj.tasks import add
print(json.dumps([add.delay(2, 2).get(timeout=30)]))
""") == [4]
    p = subprocess.run([sys.executable, "-m", "proj.celery", "inspect", "registered"],
                       capture_output=True, text=True, timeout=60, check=False, cwd=NEXT_STEPS,
                       stdin=subprocess.DEVNULL, env=_env(MESH_PEERS=worker.endpoint))
    assert p.returncode == 0, p.stderr
    assert "next-steps:" in p.stdout and "proj.tasks.xsum" in p.stdout, p.stdout


def test_app_start_stops_as_the_node_does(start_node: NodeFactory) -> None:
    node = _start(start_node, [sys.executable, "-m", "proj.celery", "worker", "-c", "1"],
                  NEXT_STEPS, "next-steps-stop")
    node.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0, node.stderr_tail()


def test_worker_main_of_a_script_run_as_a_file(start_node: NodeFactory, tmp_path: Path) -> None:
    # `python tasks.py` with app.worker_main(argv=['worker', '--loglevel=INFO']) (a Docker
    # entrypoint's habit), run from another directory: the node loads tasks:app, where
    # the script is
    (tmp_path / "wm_tasks.py").write_text(
        "from mesh import Mesh as Celery\n"
        "app = Celery('wm')\n\n"
        "@app.task\n"
        "def add(x, y):\n"
        "    return x + y\n\n"
        "if __name__ == '__main__':\n"
        "    import sys\n"
        "    app.worker_main(argv=['worker', '--loglevel=INFO', *sys.argv[1:]])\n")
    node = _start(start_node, [sys.executable, str(tmp_path / "wm_tasks.py"), "-c", "1"], ROOT,
                  "worker-main")
    assert "tasks: wm_tasks.add" in node.stderr()
    assert client(node, """
import json
from wm_tasks import add
print(json.dumps([add.delay(2, 3).get(timeout=30)]))
""", cwd=tmp_path) == [5]


def test_the_canvas_guides_shortcuts(worker: NodeProc) -> None:
    # ~sig: TypeError (bad operand type for unary ~); chunks(...).group(): AttributeError
    # ('group' object has no attribute 'group'); str(result): '<AsyncResult ID STATE>'
    # where Celery gives the id (a web view's {"task_id": str(r)})
    (map_, starmap, skewed, countdowns, untouched, ids) = client(worker, """
import json
from mesh import group
from proj.tasks import add, xsum
map_ = ~xsum.map([list(range(10)), list(range(100))])
starmap = ~add.starmap(zip(range(10), range(10)))
c = add.chunks(zip(range(6), range(6)), 2)
g = c.group()
g.skew(start=1, stop=10)
countdowns = [t.options.get("countdown") for t in g.tasks]
untouched = [t.options.get("countdown") for t in c.tasks]
skewed = g().get(timeout=30)
r = add.delay(1, 1)
gr = group(add.s(1, 1), add.s(2, 2)).apply_async()
r.get(timeout=30)
ids = [str(r) == r.id, f"{r}" == r.id, str(gr) == gr.id]
print(json.dumps([map_, starmap, skewed, countdowns, untouched, ids]))
""")
    assert map_ == [45, 4950]
    assert starmap == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert skewed == [[0, 2], [4, 6], [8, 10]]
    assert countdowns == [1.0, 2.0, 3.0] and untouched == [None, None, None]
    assert ids == [True, True, True]


GUIDES_APP = """\
from mesh import Mesh as Celery
app = Celery('guides')
app.conf.timezone = 'Europe/Oslo'


@app.task
def where():
    task = app.current_worker_task
    return [task.name if task else None, str(app.now().tzinfo)]
"""


def test_the_app_and_task_names_of_the_calling_and_application_guides(
        start_node: NodeFactory, tmp_path: Path) -> None:
    # the Calling guide's `except add.OperationalError` around delay(), app.now(),
    # app.timezone, app.uses_utc_timezone(), app.current_worker_task, app.finalize():
    # each an AttributeError
    (tmp_path / "guides.py").write_text(GUIDES_APP)
    node = start_node(app="guides", env={"PYTHONPATH": str(tmp_path)}, concurrency=1)
    assert client(node, """
import json
from guides import app, where
app.finalize()
try:
    r = where.delay()
except where.OperationalError as exc:
    raise SystemExit(f'Sending task raised: {exc!r}')
print(json.dumps([r.get(timeout=30), str(app.timezone), app.uses_utc_timezone(),
                  app.now().utcoffset() == app.timezone.utcoffset(app.now().replace(tzinfo=None)),
                  where.apply().get()[0], app.current_worker_task,
                  where.MaxRetriesExceededError.__name__, where.OperationalError.__name__]))
""", cwd=tmp_path) == [["guides.where", "Europe/Oslo"], "Europe/Oslo", False, True, None, None,
                       "MaxRetriesExceededError", "OperationalError"]


PERIODIC_APP = """\
import os
from datetime import timedelta
from mesh import Mesh as Celery
from mesh.schedules import schedule
app = Celery('periodic_guide')


@app.on_after_configure.connect
def setup_periodic_tasks(sender, **kwargs):
    sender.add_periodic_task(schedule(timedelta(seconds=1), relative=True), test.s('sched'),
                             name='relative schedule')


@app.task
def test(arg):
    with open(os.environ['GUIDE_LOG'], 'a') as f:
        f.write(arg + '\\n')


app.conf.beat_schedule = {
    'every-second-by-the-clock': {
        'task': 'periodic_guide.test',
        'schedule': 1.0,
        'args': ('entry',),
        'relative': True,
    },
}
"""


def test_the_periodic_guides_relative_entries_run(start_node: NodeFactory, tmp_path: Path) -> None:
    # Celery's 'relative': True (an interval run by the clock, what mesh's intervals are)
    # stopped the node at start ("'relative' is not supported"), and schedule(...,
    # relative=True) was a TypeError
    (tmp_path / "periodic_guide.py").write_text(PERIODIC_APP)
    log = tmp_path / "runs"
    node = start_node(app="periodic_guide", concurrency=1, profile="test",
                      env={"PYTHONPATH": str(tmp_path), "GUIDE_LOG": str(log)})
    wait_until(lambda: log.exists() and {"entry", "sched"} <= set(log.read_text().split()),
               timeout=60, what="both entries to run")
    assert node.proc.poll() is None


CELERY_TESTING_GUIDE = """\
import unittest
from mesh import Mesh as Celery
from mesh.testing import start_worker      # was: from celery.contrib.testing.worker import ...

app = Celery('guide_tests')


@app.task
def multiply(x, y):
    return x * y


@app.task
def xsum(numbers):
    return sum(numbers)


class MyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.celery_worker = start_worker(app, perform_ping_check=False)
        cls.celery_worker.__enter__()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.celery_worker.__exit__(None, None, None)

    def test_multiply(self):
        self.assertEqual(multiply.delay(4, 4).get(timeout=10), 16)

    def test_a_chord(self):
        from mesh import chord
        self.assertEqual(chord(multiply.s(i, i) for i in range(4))(xsum.s()).get(timeout=10), 14)
"""


def test_the_testing_guides_start_worker(tmp_path: Path) -> None:
    # `from celery.contrib.testing.worker import start_worker` had no counterpart: a test
    # suite's setUpClass started a worker for the app in its own process; now
    # mesh.testing.start_worker does (a real node in a thread, the solo pool), its
    # tasks defined in the test module itself
    (tmp_path / "test_guide.py").write_text(CELERY_TESTING_GUIDE)
    p = subprocess.run([sys.executable, "-m", "unittest", "-v", "test_guide"], capture_output=True,
                       text=True, timeout=120, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL,
                       env=_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Ran 2 tests" in p.stderr and "OK" in p.stderr


TASKS_GUIDE_APP = """\
from mesh import Mesh as Celery, states
from mesh.exceptions import Ignore
app = Celery('tasks_guide')


@app.task(bind=True)
def get_tweets(self, user):
    timeline = ['tweet of ' + user]
    if not self.request.called_directly:
        self.update_state(state=states.SUCCESS, meta=timeline)
    raise Ignore()


@app.task(bind=True)
def custom_fail(self):
    self.update_state(state=states.FAILURE, meta={'exc_type': 'ValueError',
                                                  'exc_message': ['bad', 'input'],
                                                  'exc_module': 'builtins'})
    raise Ignore()


@app.task(bind=True)
def ignored(self):
    raise Ignore()
"""


def test_the_tasks_guides_update_state_then_ignore(start_node: NodeFactory, tmp_path: Path) -> None:
    # the Tasks guide's Ignore recipe: update_state(state=SUCCESS, meta=...) then raise
    # Ignore(), so the result is what update_state stored; and the FAILURE form with
    # Celery's exc_type/exc_message. mesh refused the final states (the task failed with
    # ConfigError "update_state cannot set SUCCESS")
    (tmp_path / "tasks_guide.py").write_text(TASKS_GUIDE_APP)
    node = start_node(app="tasks_guide", env={"PYTHONPATH": str(tmp_path)}, concurrency=1)
    out = client(node, """
import json
from mesh.exceptions import ResultIgnored
from tasks_guide import app, get_tweets, custom_fail, ignored
r = get_tweets.delay('bob')
value = r.get(timeout=30)
other = app.AsyncResult(r.id)
failed = custom_fail.delay()
err = failed.get(timeout=30, propagate=False)
i = ignored.delay()
try:
    i.get(timeout=30)
    said = None
except ResultIgnored:
    said = i.state
print(json.dumps([value, r.state, other.state, other.result, type(err).__name__, list(err.args),
                  failed.state, said]))
""", cwd=tmp_path)
    assert out == [["tweet of bob"], "SUCCESS", "SUCCESS", ["tweet of bob"], "ValueError",
                   ["bad", "input"], "FAILURE", "IGNORED"]


def test_a_route_with_only_celerys_broker_keys_says_it_routes_nothing(start_node: NodeFactory) -> None:
    # the Routing guide's routes by exchange and routing_key (a broker binds them to a
    # queue): mesh routes by queue only, and such a route sent the task to the default
    # queue without a word
    node = start_node(app="tasks_app", concurrency=1)
    p = subprocess.run([sys.executable, "-c", """
import tasks_app
tasks_app.app.conf.task_routes = {'tasks_app.add': {'exchange': 'media',
                                                    'routing_key': 'media.video'}}
print(sum(tasks_app.add.delay(i, i).get(timeout=30) for i in range(3)))
"""], capture_output=True, text=True, timeout=90, check=False, cwd=ROOT,
                       stdin=subprocess.DEVNULL, env=clean_env(MESH_PEERS=node.endpoint))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["6"]
    said = [ln for ln in p.stderr.splitlines() if "names no queue" in ln]
    assert len(said) == 1, p.stderr
    assert "task_routes['tasks_app.add']" in said[0], said
    assert "routing_key='media.video'" in said[0] and "add 'queue': NAME" in said[0]
