"""The resilience logger and the ALERT level (45) shared with ``safeship.observe``."""

from __future__ import annotations

import logging

ALERT = 45
"""Between ERROR (40) and CRITICAL (50): something a person should look at now."""

if logging.getLevelName(ALERT) == f"Level {ALERT}":
    logging.addLevelName(ALERT, "ALERT")

logger = logging.getLogger("safeship.resilience")
