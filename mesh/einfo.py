"""``ExceptionInfo``: an exception with its traceback, as Celery (billiard) passes it to
``task_failure``/``task_retry`` receivers and to ``on_failure``/``on_retry`` handlers
(the ``einfo`` argument)."""
from __future__ import annotations

import sys
import traceback as _traceback
from types import TracebackType

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class ExceptionInfo:
    """``type``, ``exception`` and ``tb`` (the traceback object) of an exception, and
    ``traceback``, its formatted text; ``str(einfo)`` is that text. Made inside an
    ``except`` block it describes the exception being handled."""

    __slots__ = ("type", "exception", "tb", "traceback", "internal")

    def __init__(self, exc_info: ExcInfo | None = None, internal: bool = False):
        if exc_info is None:
            current = sys.exc_info()
            if current[1] is None:
                raise ValueError("ExceptionInfo() outside an except block needs exc_info")
            exc_info = (current[0], current[1], current[2])
        assert exc_info is not None
        self.type: type[BaseException] = exc_info[0]
        self.exception: BaseException = exc_info[1]
        self.tb: TracebackType | None = exc_info[2]
        self.traceback: str = "".join(_traceback.format_exception(*exc_info))
        self.internal = internal

    @classmethod
    def of(cls, exc: BaseException) -> "ExceptionInfo":
        """The info of an exception object (raised or not)."""
        return cls((type(exc), exc, exc.__traceback__))

    @property
    def exc_info(self) -> ExcInfo:
        return self.type, self.exception, self.tb

    def __str__(self) -> str:
        return self.traceback

    def __repr__(self) -> str:
        return f"<ExceptionInfo: {self.exception!r}>"


def raised_at(e: BaseException) -> str:
    """`` (at FILE line N)``: the innermost line of the app's own code in ``e``'s
    traceback (not the interpreter's, installed packages' or mesh's), where an
    exception at import (a bad setting read, a missing dependency) comes from; ""
    when there is none (a SyntaxError says where itself)."""
    import os
    outside = [os.path.join(os.path.realpath(p), "") for p in
               {sys.prefix, sys.base_prefix, sys.exec_prefix,
                os.path.dirname(os.path.abspath(__file__))}]
    for frame in reversed(_traceback.extract_tb(e.__traceback__)):
        path = frame.filename
        if not path.startswith("<") and not os.path.realpath(path).startswith(tuple(outside)):
            return f" (at {path} line {frame.lineno})"
    return ""


# Celery's packages, still imported by code moved over (a line not changed yet)
CELERY_PACKAGES = {
    "celery": "a Celery import left in code moved to mesh: mesh has the same names "
              "(from mesh import Mesh as Celery, shared_task; mesh.exceptions, "
              "mesh.schedules, mesh.utils.log...: docs/migrating-from-celery.md)",
    "kombu": "kombu is Celery's transport: mesh declares no queues (delete task_queues "
             "and its kombu import; -Q/queue= route as before: docs/routing.md)",
    "django_celery_beat": "a Celery package: take it out of INSTALLED_APPS; put its "
                          "entries in CELERY_BEAT_SCHEDULE (docs/django.md)",
    "django_celery_results": "a Celery package: take it out of INSTALLED_APPS; results "
                             "live on the nodes (docs/django.md)",
}


def failure_text(e: BaseException) -> str:
    """``Type: message (at FILE line N)``, one line for an exception raised while the
    app's code was imported, and what to do when it is a Celery package that is
    missing (``No module named 'celery'``)."""
    text = f"{type(e).__name__}: {e}{raised_at(e)}"
    name = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
    hint = CELERY_PACKAGES.get((name or "").partition(".")[0])
    return f"{text}: {hint}" if hint else text
