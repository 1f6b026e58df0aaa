#!/usr/bin/env python
"""manage.py of the test Django site (``python tests/reach/apps/manage.py runserver``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.reach.apps.django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
