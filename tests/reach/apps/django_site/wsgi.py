from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.reach.apps.django_site.settings")

from safeship.integrations.django import get_wsgi_application

application = get_wsgi_application()
