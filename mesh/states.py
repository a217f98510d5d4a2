"""Task states, with Celery's names.

``UNKNOWN`` is mesh's own: an id that no node knows (Celery would say PENDING).
A task may also report states of its own with ``update_state`` (``"PROGRESS"``): they
are not final, like STARTED. ``IGNORED`` (the task raised Ignore) is final in mesh
(Celery keeps it out of its ready states, where a waiter would wait for ever). A task
that raised Reject ends in FAILURE with the Reject as its exception: in mesh's monitor,
REJECTED means that a node gave a task back (mesh.monitor).
"""
from __future__ import annotations

PENDING = "PENDING"      # sent by this client, not yet acknowledged by a node
RECEIVED = "RECEIVED"    # a node acknowledged it and holds it
STARTED = "STARTED"      # a child is running it
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
REVOKED = "REVOKED"
IGNORED = "IGNORED"      # the task raised Ignore: final, no result
UNKNOWN = "UNKNOWN"
# internal, never a task's state: a child tells its node that the task called
# ``self.replace(sig)`` (the Result's value is the signature's map; docs/protocol.md)
REPLACED = "REPLACED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, IGNORED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})   # get() raises the task's exception
ALL_STATES = READY_STATES | UNREADY_STATES | {UNKNOWN}
