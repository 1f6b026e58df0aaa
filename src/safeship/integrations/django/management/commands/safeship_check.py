"""``manage.py safeship_check``: build the protected application; a bad setting fails."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Validate settings.SAFESHIP by building the protected WSGI application."

    def handle(self, *args: Any, **options: Any) -> None:
        from safeship.integrations.django import get_wsgi_application, safeship_options

        try:
            get_wsgi_application()
        except (TypeError, ValueError) as exc:
            raise CommandError(f"settings.SAFESHIP is invalid: {exc}") from exc
        names = ", ".join(sorted(safeship_options())) or "defaults"
        self.stdout.write(f"safeship: protected application builds ({names})")
