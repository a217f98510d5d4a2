from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=20, default="new")
    processed_by = models.CharField(max_length=200, blank=True)   # the node that did it
    receipt = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
