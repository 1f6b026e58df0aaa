from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.urls import path

from tests.reach.apps.django_site.shop import views

logger = logging.getLogger("reach.django")


def hello(request: HttpRequest) -> JsonResponse:
    logger.info("app.hello", extra={"path": request.path})
    return JsonResponse({"hello": "django", "request_id": getattr(request, "request_id", None)})


urlpatterns = [
    path("hello", hello),
    path("admin/panel", hello),
    path("orders", views.place_order),
    path("checkout", views.checkout),
]
