"""The shop's own tests: `python manage.py test`.

They pass in both ways a project runs its tests:

* eager (``PROJ_EAGER=1``, settings.MESH_TASK_ALWAYS_EAGER): tasks run in this
  process as they are sent; no node needed;
* against real nodes (``MESH_PEERS=...``): nodes started with ``meshnode -A proj`` and
  ``PROJ_DB`` set to this run's test database file (``PROJ_TEST_DB``), so they see
  what the tests commit.

TransactionTestCase, not TestCase: the tests commit for real, so that on_commit
callbacks run (delay_on_commit) and nodes, in other processes, see the rows.
"""
import json
import time

from django.conf import settings
from django.test import TransactionTestCase

from mesh import current_app

from .models import Order

DEADLINE = 30.0    # s: nodes on a busy machine may take a while; we poll, never sleep blind


def wait_for(check, what):
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.05)


class OrderTests(TransactionTestCase):
    def post(self, url, data=None):
        return self.client.post(url, json.dumps(data or {}), content_type="application/json")

    def test_an_order_is_processed_after_its_transaction_commits(self):
        response = self.post("/orders/", {"item": "teapot", "quantity": 2})
        self.assertEqual(response.status_code, 201)
        order_id = response.json()["id"]

        def processed():
            body = self.client.get(f"/orders/{order_id}/").json()
            return body if body["status"] == "processed" else None

        body = wait_for(processed, f"order {order_id} to be processed")
        if settings.MESH_TASK_ALWAYS_EAGER:
            # ran here, on commit (an eager run's hostname is "eager@<this host>")
            self.assertTrue(body["processed_by"].startswith("eager@"), body)
        else:
            # ran on one of the mesh's nodes (those that answer a ping, Celery's way)
            nodes = current_app.control.inspect().ping() or {}
            self.assertIn(body["processed_by"], nodes)

    def test_a_rejected_order_leaves_nothing_behind(self):
        response = self.post("/orders/", {"item": "teapot", "quantity": 1000})
        self.assertEqual(response.status_code, 400)
        self.assertEqual(Order.objects.count(), 0)   # rolled back: no task was sent for it

    def test_a_receipt_through_djangos_tasks_framework(self):
        order_id = self.post("/orders/", {"item": "cup", "quantity": 3}).json()["id"]
        response = self.post(f"/orders/{order_id}/receipt/")
        self.assertEqual(response.status_code, 202)
        result_id = response.json()["result_id"]

        def done():
            body = self.client.get(f"/receipts/{result_id}/").json()
            return body if body["status"] in ("SUCCESSFUL", "FAILED") else None

        body = wait_for(done, f"receipt task {result_id}")
        self.assertEqual(body, {"result_id": result_id, "status": "SUCCESSFUL",
                                "receipt": "Receipt: 3 x cup"})
        self.assertEqual(Order.objects.get(pk=order_id).receipt, "Receipt: 3 x cup")

    def test_an_unknown_receipt_is_404(self):
        self.assertEqual(self.client.get("/receipts/no-such-id/").status_code, 404)
