"""The Django app config, so ``manage.py`` finds safeship's commands."""

from __future__ import annotations

from django.apps import AppConfig


class SafeshipConfig(AppConfig):
    name = "safeship.integrations.django"
    label = "safeship"
    verbose_name = "safeship"
