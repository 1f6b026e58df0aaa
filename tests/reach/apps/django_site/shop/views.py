"""Views writing through Django's ORM: an order and its outbox event in one transaction,
a flag read from a FlagClient and a call through a breaker."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from safeship.integrations.django import outbox_connection
from safeship.outbox import stage
from safeship.resilience import Breaker, BreakerOpen, ConsecutiveFailures

from .models import Order

#: Set by the process that serves the views (the test) before the first request.
FLAGS: dict[str, object] = {}
payments = Breaker("payments", window=ConsecutiveFailures(2), open_duration=60, register=False)


class DeclinedError(RuntimeError):
    pass


def place_order(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body or b"{}")
    with transaction.atomic():
        order = Order.objects.create(item=body["item"])
        stage(
            outbox_connection(),
            aggregate_type="order",
            aggregate_id=str(order.pk),
            type="order.placed",
            payload={"item": order.item, "request_id": getattr(request, "request_id", None)},
        )
        if body.get("fail"):
            raise DeclinedError("the business rule failed after the event was staged")
    return JsonResponse({"id": order.pk})


def checkout(request: HttpRequest) -> JsonResponse:
    client = FLAGS["client"]
    new = client.is_enabled("checkout-v2", {"userId": request.GET.get("user", "")})  # type: ignore[attr-defined]

    def charge() -> str:
        if request.GET.get("gateway") == "down":
            raise ConnectionError("payment gateway unreachable")
        return "charged"

    try:
        result = payments.call(charge)
    except BreakerOpen:
        return JsonResponse({"checkout_v2": new, "payment": "breaker open"}, status=503)
    except ConnectionError:
        return JsonResponse({"checkout_v2": new, "payment": "failed"}, status=502)
    return JsonResponse({"checkout_v2": new, "payment": result})
