import time

from mesh import shared_task  # was: from celery import shared_task
from mesh.utils.log import get_task_logger  # was: from celery.utils.log import get_task_logger

logger = get_task_logger(__name__)


class GatewayError(Exception):
    pass


@shared_task
def add(x, y):
    return x + y


@shared_task
def fan_out(n):
    """A task that sends tasks and waits for them (Celery allows it with
    disable_sync_subtasks=False; mesh does not forbid it)."""
    return sum(add.delay(i, i).get(timeout=30) for i in range(n))


@shared_task
def send_on(x):
    """A task that sends a task and returns its id (the usual fan-out)."""
    return add.delay(x, x).id


@shared_task
def boom(what):
    logger.info("boom %s", what)
    raise ValueError(f"boom {what}")


@shared_task(bind=True, autoretry_for=(GatewayError,), retry_backoff=False,
             default_retry_delay=0.2, max_retries=1)
def charge(self, order):
    if self.request.retries < 1:
        raise GatewayError(f"gateway down for {order}")
    return order


@shared_task
def sleeper(seconds):
    time.sleep(seconds)
    return seconds


@shared_task
def waits_on_add(timeout):
    """A task that waits on a task it sends (Celery refuses that by default): on a node
    whose every worker waits so, the task waited for stays queued until the timeout."""
    return add.delay(1, 1).get(timeout=timeout)


def _whoami():
    from mesh import current_task  # was: from celery import current_task
    return [current_task.request.id, current_task.name, current_task.request.hostname]


@shared_task
def whoami():
    """A task whose helper reads the running task (Celery's current_task)."""
    return _whoami()
