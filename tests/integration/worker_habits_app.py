"""A Celery project's startup hooks, moved over by their imports (``from celery.signals
import setup_logging, celeryd_init, ...`` -> ``from mesh.signals import ...``), for
test_e2e_worker_habits. Nodes load it as ``--app worker_habits_app``.

Each receiver appends one JSON line to ``$HABITS_DIR/habits.jsonl``. With
``HABITS_SETUP_LOGGING=1`` a ``setup_logging`` receiver configures logging itself (the
Django-settings LOGGING recipe), writing ``HABITS <level> <logger> <message>`` lines
to ``$HABITS_DIR/own.log``; with ``HABITS_OWN_HANDLERS=1`` the app adds a handler of its
own to the root logger as it is imported (``OWN <level> <logger> <message>`` lines, to
the same file) and sets ``worker_hijack_root_logger = False``.
"""
from __future__ import annotations

import json
import logging
import logging.config
import os
from typing import Any

from mesh import Mesh as Celery
from mesh.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_after_setup,
    celeryd_init,
    import_modules,
    setup_logging,
    task_received,
    worker_ready,
)
from mesh.utils.log import get_task_logger

app = Celery("habits")
logger = get_task_logger(__name__)


def _record(name: str, **fields: Any) -> None:
    directory = os.environ.get("HABITS_DIR")
    if not directory:
        return
    line = json.dumps({"signal": name, "pid": os.getpid(), **fields}, default=repr)
    fd = os.open(os.path.join(directory, "habits.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


if os.environ.get("HABITS_SETUP_LOGGING") == "1":
    @setup_logging.connect
    def own_logging(loglevel: Any = None, logfile: Any = None, **kw: Any) -> None:
        _record("setup_logging", loglevel=loglevel, logfile=logfile)
        logging.config.dictConfig({
            "version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "HABITS %(levelname)s %(name)s %(message)s"}},
            "handlers": {"own": {"class": "logging.FileHandler", "formatter": "plain",
                                 "filename": os.path.join(os.environ["HABITS_DIR"], "own.log")}},
            "root": {"handlers": ["own"], "level": "INFO"},
        })


if os.environ.get("HABITS_OWN_HANDLERS") == "1":
    # an app that set up its logging as it is imported, and keeps it
    app.conf.worker_hijack_root_logger = False
    _own = logging.FileHandler(os.path.join(os.environ["HABITS_DIR"], "own.log"))
    _own.setFormatter(logging.Formatter("OWN %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(_own)
    logging.getLogger().setLevel(logging.INFO)


@after_setup_logger.connect
def root_ready(logger: Any = None, loglevel: Any = None, logfile: Any = None, **kw: Any) -> None:
    _record("after_setup_logger", logger=logger.name, loglevel=loglevel, logfile=logfile)


@after_setup_task_logger.connect
def task_logger_ready(logger: Any = None, **kw: Any) -> None:
    _record("after_setup_task_logger", logger=logger.name)


@import_modules.connect
def imported(sender: Any = None, **kw: Any) -> None:
    _record("import_modules", sender=sender.main)


@celeryd_init.connect
def init(sender: Any = None, instance: Any = None, conf: Any = None, options: Any = None,
         **kw: Any) -> None:
    _record("celeryd_init", sender=sender, instance=instance.name,
            concurrency=options["concurrency"], conf=conf is app.conf)


@celeryd_after_setup.connect
def after_setup(sender: Any = None, instance: Any = None, conf: Any = None, **kw: Any) -> None:
    _record("celeryd_after_setup", sender=sender, instance=instance.name,
            conf=conf is app.conf)


if os.environ.get("HABITS_AT_START") == "1":
    @worker_ready.connect
    def at_start(sender: Any = None, **kw: Any) -> None:
        # Celery's recipe for a task run as a worker starts
        _record("at_start", task_id=sender.app.send_task(f"{__name__}.say", args=("at start",)).id)


@task_received.connect
def received(sender: Any = None, request: Any = None, **kw: Any) -> None:
    _record("task_received")


@app.task
def say(text: str) -> str:
    logger.warning("task says %s", text)
    return text


@app.task(bind=True)
def steps(self: Any, n: int, pause: float) -> int:
    import time
    for i in range(n):
        self.update_state(state="PROGRESS", meta={"current": i, "total": n})
        time.sleep(pause)
    return n


@app.task(time_limit=1)
def overruns() -> None:
    import time
    time.sleep(60)


@app.task(rate_limit="1/m")
def slowly(x: int) -> int:
    return x
