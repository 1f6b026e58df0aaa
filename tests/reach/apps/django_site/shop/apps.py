from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):  # type: ignore[misc]
    name = "tests.reach.apps.django_site.shop"
    label = "shop"
