from django.urls import path

from . import views

urlpatterns = [
    path("orders/", views.create_order, name="create-order"),
    path("orders/<int:order_id>/", views.order_detail, name="order"),
    path("orders/<int:order_id>/receipt/", views.request_receipt, name="request-receipt"),
    path("receipts/<str:result_id>/", views.receipt_status, name="receipt"),
]
