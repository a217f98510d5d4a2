"""The shop's tasks. ``shared_task`` (Celery's way) works in a reusable app that does
not import the project; ``@task`` is Django's Tasks framework, run on the mesh by
mesh.django.TaskBackend (settings.TASKS). Nodes import this module through
``app.autodiscover_tasks()``."""
from mesh import shared_task

from .models import Order

try:
    from django.tasks import task  # Django 6
except ImportError:
    from django_tasks import task  # the backport, before Django 6


@shared_task(bind=True)
def process_order(self, order_id):
    order = Order.objects.get(pk=order_id)
    order.status = "processed"
    order.processed_by = self.request.hostname or "local"
    order.save(update_fields=["status", "processed_by"])
    return {"order": order.pk, "status": order.status}


@task
def send_receipt(order_id):
    order = Order.objects.get(pk=order_id)
    order.receipt = f"Receipt: {order.quantity} x {order.item}"
    order.save(update_fields=["receipt"])
    return order.receipt
