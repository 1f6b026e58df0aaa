"""A minimal Django site using safeship's integration."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from safeship.observe.health import HealthRegistry

SECRET_KEY = os.environ.get("DJANGO_TEST_SECRET", "django-tests-only-not-a-real-secret-7Qx2")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "tests.reach.apps.django_site.urls"
WSGI_APPLICATION = "tests.reach.apps.django_site.wsgi.application"  # runserver serves it
INSTALLED_APPS = ["safeship.integrations.django", "tests.reach.apps.django_site.shop"]
MIDDLEWARE = ["safeship.integrations.django.RequestIdMiddleware"]
DATABASES: dict[str, object] = {}
# REACH_DJANGO_DB: a PostgreSQL URL (psycopg 3) or a SQLite file, for the ORM + outbox tests.
_DB = urlsplit(os.environ.get("REACH_DJANGO_DB", ""))
if _DB.scheme.startswith("postgres"):
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _DB.path.lstrip("/"),
        "USER": _DB.username or "postgres",
        "HOST": _DB.hostname or "127.0.0.1",
        "PORT": _DB.port or 5432,
    }
elif _DB.path:
    DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": _DB.path}
USE_TZ = True
SAFESHIP = {
    "api_keys": [os.environ.get("REACH_KEY", "ss_reach_key_for_tests_only_0123456789")],
    "protected_prefixes": ["/admin"],
    "max_body_bytes": 1024,
    "health": HealthRegistry(),
}
