"""The test tasks (tasks_app) plus receivers for every signal a child sends, for
test_e2e_signals. Nodes load it as ``--app signals_app``.

Each receiver appends one JSON line per call to ``$SIGNALS_TEST_DIR/signals.jsonl``
(one write with O_APPEND per line, so lines from several children never mix):
``{"signal", "pid", "sender", ...}`` plus what the test checks of its arguments.
With ``SIGNALS_TEST_RAISE=1`` another receiver of every signal raises first, to show
that a raising receiver changes nothing.
"""
from __future__ import annotations

import json
import os
from typing import Any

import tasks_app
from tasks_app import *  # noqa: F403  (the same tasks, under their tasks_app names)

from mesh import signals

app = tasks_app.app

RECORDS = "signals.jsonl"


def _record(name: str, sender: Any, **fields: Any) -> None:
    directory = os.environ.get("SIGNALS_TEST_DIR")
    if not directory:
        return
    line = json.dumps({"signal": name, "pid": os.getpid(),
                       "sender": getattr(sender, "name", sender), **fields}, default=repr)
    fd = os.open(os.path.join(directory, RECORDS), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _raise(signal: Any = None, **kw: Any) -> None:
    raise RuntimeError(f"receiver of {signal.name} raised on purpose")


if os.environ.get("SIGNALS_TEST_RAISE") == "1":
    for _sig in (signals.worker_process_init, signals.worker_process_shutdown,
                 signals.task_prerun, signals.task_postrun, signals.task_success,
                 signals.task_failure, signals.task_retry, signals.task_revoked):
        _sig.connect(_raise)


@signals.worker_process_init.connect
def on_process_init(sender: Any = None, **kw: Any) -> None:
    _record("worker_process_init", sender, ppid=os.getppid())


@signals.worker_process_shutdown.connect
def on_process_shutdown(sender: Any = None, pid: int = 0, exitcode: Any = None, **kw: Any) -> None:
    _record("worker_process_shutdown", sender, arg_pid=pid, exitcode=exitcode)


@signals.task_prerun.connect
def on_prerun(sender: Any = None, task_id: str = "", task: Any = None, args: Any = None,
              kwargs: Any = None, **kw: Any) -> None:
    _record("task_prerun", sender, task_id=task_id, task=task.name, args=args, kwargs=kwargs,
            request_id=task.request.id)


@signals.task_postrun.connect
def on_postrun(sender: Any = None, task_id: str = "", task: Any = None, args: Any = None,
               kwargs: Any = None, retval: Any = None, state: str = "", **kw: Any) -> None:
    _record("task_postrun", sender, task_id=task_id, task=task.name, args=args, kwargs=kwargs,
            retval=retval if not isinstance(retval, BaseException) else repr(retval), state=state)


@signals.task_success.connect
def on_success(sender: Any = None, result: Any = None, **kw: Any) -> None:
    _record("task_success", sender, result=result, task_id=sender.request.id)


@signals.task_failure.connect
def on_failure(sender: Any = None, task_id: str = "", exception: Any = None, args: Any = None,
               kwargs: Any = None, traceback: Any = None, einfo: Any = None, **kw: Any) -> None:
    _record("task_failure", sender, task_id=task_id, exception=type(exception).__name__,
            message=str(exception), args=args, kwargs=kwargs,
            traceback_is_tb=type(traceback).__name__ == "traceback",
            einfo_exception_is_it=einfo.exception is exception, einfo_text=einfo.traceback)


@signals.task_retry.connect
def on_retry(sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None,
             **kw: Any) -> None:
    _record("task_retry", sender, task_id=request.id, retries=request.retries,
            reason=type(reason).__name__, reason_exc=repr(getattr(reason, "exc", None)),
            einfo_type=einfo.type.__name__)


@signals.task_revoked.connect
def on_revoked(sender: Any = None, request: Any = None, terminated: Any = None, signum: Any = None,
               expired: Any = None, **kw: Any) -> None:
    _record("task_revoked", sender, task_id=request.id, terminated=terminated, signum=signum,
            expired=expired)


@app.task(bind=True, name="signals_app.headers")
def headers(self: Any) -> dict[str, Any]:
    """The headers this call arrived with (what before_task_publish receivers added)."""
    return dict(self.request.headers)
