"""Tasks that look at the child's database connection, and Django Tasks framework
tasks for the backend's tests."""
import asyncio
import os

from django.db import connection

from mesh import shared_task

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

# The node opens a connection before it forks its children (as an app that queries
# at import time would); the fixup must keep children from using it.
NODE_CONNECTION = None
if os.environ.get("DSITE_CONNECT_IN_NODE"):
    connection.ensure_connection()
    NODE_CONNECTION = connection.connection


class Unusual(Exception):
    pass


@shared_task
def connection_state():
    """The child's connection as a task finds it."""
    raw = connection.connection
    return {
        "pid": os.getpid(),
        "open": raw is not None,
        "raw": id(raw) if raw is not None else None,
        "inherited": NODE_CONNECTION is not None and raw is NODE_CONNECTION,
        "autocommit": connection.get_autocommit(),
    }


@shared_task
def leave_autocommit_off():
    """A task that leaves its connection half-configured (autocommit off)."""
    connection.set_autocommit(False)
    return {"pid": os.getpid(), "raw": id(connection.connection)}


@shared_task
def mark(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


@task
def multiply(x, y):
    return x * y


@task(priority=50)
def urgent(x):
    return x


@task
def fail(message):
    raise Unusual(message)


@task(takes_context=True)
def attempt(context, x):
    return {"attempt": context.attempt, "id": context.task_result.id, "x": x}


@task
async def acoro(x):
    await asyncio.sleep(0)
    return x + 1


@task
def not_json():
    return object()
