from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "django", "request_id": getattr(request, "request_id", None)})


urlpatterns = [path("hello", hello), path("admin/panel", hello)]
