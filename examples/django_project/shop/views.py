import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Order
from .tasks import process_order, send_receipt

try:
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:
    from django_tasks.exceptions import TaskResultDoesNotExist

MAX_QUANTITY = 100


@csrf_exempt          # a JSON API; a form view would keep CSRF protection
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body or b"{}")
    with transaction.atomic():
        order = Order.objects.create(item=str(data.get("item", "")),
                                     quantity=int(data.get("quantity", 1)))
        # sent only if the transaction commits: a node never looks for an order that
        # was rolled back, nor one not committed yet
        process_order.delay_on_commit(order.pk)
        if order.quantity > MAX_QUANTITY:
            transaction.set_rollback(True)
            return JsonResponse({"error": f"at most {MAX_QUANTITY} per order"}, status=400)
    return JsonResponse({"id": order.pk, "status": order.status}, status=201)


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"id": order.pk, "item": order.item, "status": order.status,
                         "processed_by": order.processed_by, "receipt": order.receipt})


@csrf_exempt
@require_POST
def request_receipt(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    result = send_receipt.enqueue(order.pk)       # Django's Tasks framework
    return JsonResponse({"result_id": result.id, "status": result.status}, status=202)


@require_GET
def receipt_status(request: HttpRequest, result_id: str) -> JsonResponse:
    try:
        result = send_receipt.get_result(result_id)
    except TaskResultDoesNotExist:
        return JsonResponse({"error": "no such task"}, status=404)
    body = {"result_id": result.id, "status": result.status}
    if result.status == "SUCCESSFUL":
        body["receipt"] = result.return_value
    elif result.status == "FAILED":
        body["error"] = result.errors[-1].exception_class_path
    return JsonResponse(body)
