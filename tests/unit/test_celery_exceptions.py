"""``from celery.exceptions import X`` moves by its import: every name of Celery's
``celery.exceptions.__all__`` (Celery 5.x) is in mesh.exceptions, with Celery's
relations where mesh raises it."""
from __future__ import annotations

import builtins
import sys

import pytest

import mesh.exceptions as mx

CELERY_ALL = (
    "reraise", "CeleryWarning", "AlwaysEagerIgnored", "DuplicateNodenameWarning",
    "FixupWarning", "NotConfigured", "SecurityWarning", "CeleryError",
    "ImproperlyConfigured", "SecurityError", "OperationalError", "TaskPredicate", "Ignore",
    "Reject", "Retry", "TaskError", "QueueNotFound", "IncompleteStream", "NotRegistered",
    "AlreadyRegistered", "TimeoutError", "MaxRetriesExceededError", "TaskRevokedError",
    "InvalidTaskError", "ChordError", "BackendError", "BackendGetMetaError",
    "BackendStoreError", "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError",
    "Terminated", "CPendingDeprecationWarning", "CDeprecationWarning", "WorkerShutdown",
    "WorkerTerminate", "CeleryCommandException")


@pytest.mark.parametrize("name", CELERY_ALL)
def test_every_name_of_celery_exceptions_is_there(name: str) -> None:
    assert hasattr(mx, name), name


def test_the_relations_code_relies_on() -> None:
    assert mx.CeleryError is mx.MeshError                   # catches what mesh raises
    assert mx.ImproperlyConfigured is mx.ConfigError
    for pred in (mx.Retry, mx.Ignore, mx.Reject, mx.Replace):
        assert issubclass(pred, mx.TaskPredicate) and issubclass(pred, mx.CeleryError)
    for exc in (mx.TaskRevokedError, mx.NotRegistered, mx.TimeoutError, mx.ChordError,
                mx.SecurityError, mx.BackendStoreError, mx.QueueNotFound):
        assert issubclass(exc, mx.CeleryError), exc
    # Celery's TaskError is the base of the errors about a task: `except TaskError`
    # caught none of them (mesh's TaskError was only a remote type not importable here)
    for exc in (mx.TimeoutError, mx.NotRegistered, mx.TaskRevokedError,
                mx.MaxRetriesExceededError, mx.ChordError, mx.InvalidTaskError):
        assert issubclass(exc, mx.TaskError), exc
        assert str(exc("task x[1] was revoked")) == "task x[1] was revoked"
    for exc in (mx.QueueNotFound, mx.IncompleteStream, mx.AlreadyRegistered):
        assert issubclass(exc, mx.TaskError), exc
    assert issubclass(mx.NotRegistered, KeyError) and issubclass(mx.QueueNotFound, KeyError)
    assert issubclass(mx.TimeoutError, builtins.TimeoutError)
    assert issubclass(mx.WorkerShutdown, SystemExit) and mx.SystemTerminate is mx.WorkerTerminate
    assert issubclass(mx.AlwaysEagerIgnored, mx.CeleryWarning)
    assert issubclass(mx.CeleryWarning, UserWarning)
    assert issubclass(mx.CDeprecationWarning, DeprecationWarning)
    assert mx.CeleryCommandException("bad", exit_code=2).exit_code == 2
    assert set(mx.CELERY_ONLY) <= set(CELERY_ALL) | {"SystemTerminate"}


def test_reraise_is_celerys() -> None:
    try:
        raise ValueError("first")
    except ValueError:
        tb = sys.exc_info()[2]
    err = KeyError("second")
    with pytest.raises(KeyError) as info:
        mx.reraise(KeyError, err, tb)
    assert info.value is err
