"""``manage.py safeship_health``: run the readiness checks of ``SAFESHIP["health"]``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run the readiness checks of settings.SAFESHIP['health']; exit 1 when one fails."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--kind", default="readiness", choices=["liveness", "readiness"])

    def handle(self, *args: Any, **options: Any) -> None:
        from safeship.integrations.django import safeship_options
        from safeship.observe.health import HealthRegistry

        registry = safeship_options().get("health")
        if not isinstance(registry, HealthRegistry):
            raise CommandError("settings.SAFESHIP['health'] is not a HealthRegistry")
        report = asyncio.run(registry.run(options["kind"]))
        self.stdout.write(json.dumps(report.to_dict(), indent=2))
        if report.status == "fail":
            raise CommandError(f"{options['kind']} checks failed")
