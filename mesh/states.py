"""Task states, with Celery's names.

``UNKNOWN`` is mesh's own: an id that no node knows (Celery would say PENDING).
"""
from __future__ import annotations

PENDING = "PENDING"      # sent by this client, not yet acknowledged by a node
RECEIVED = "RECEIVED"    # a node acknowledged it and holds it
STARTED = "STARTED"      # a child is running it
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
RETRY = "RETRY"
REVOKED = "REVOKED"
UNKNOWN = "UNKNOWN"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY})
EXCEPTION_STATES = frozenset({FAILURE, RETRY, REVOKED})
ALL_STATES = READY_STATES | UNREADY_STATES | {UNKNOWN}
