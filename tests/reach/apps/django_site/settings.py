"""A minimal Django site using safeship's integration."""

from __future__ import annotations

import os

from safeship.observe.health import HealthRegistry

SECRET_KEY = os.environ.get("DJANGO_TEST_SECRET", "django-tests-only-not-a-real-secret-7Qx2")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "tests.reach.apps.django_site.urls"
INSTALLED_APPS = ["safeship.integrations.django"]
MIDDLEWARE = ["safeship.integrations.django.RequestIdMiddleware"]
DATABASES: dict[str, object] = {}
USE_TZ = True
SAFESHIP = {
    "api_keys": [os.environ.get("REACH_KEY", "ss_reach_key_for_tests_only_0123456789")],
    "protected_prefixes": ["/admin"],
    "max_body_bytes": 1024,
    "health": HealthRegistry(),
}
