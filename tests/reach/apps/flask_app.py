"""A Flask app protected by the Safeship extension (served by gunicorn in the tests)."""

from __future__ import annotations

import logging
import os

from flask import Flask, request

from safeship.integrations.flask import Safeship, request_id
from safeship.observe.health import HealthRegistry

logger = logging.getLogger("reach.flask")
app = Flask(__name__)
app.config["SAFESHIP"] = {"max_body_bytes": 1024, "protected_prefixes": ["/api"]}
Safeship(
    app,
    health=HealthRegistry(),
    api_keys=[os.environ.get("REACH_KEY", "ss_reach_key_for_tests_only_0123456789")],
)


@app.route("/hello", methods=["GET", "POST"])
def hello() -> dict[str, object]:
    logger.info("app.hello", extra={"size": len(request.get_data())})
    return {"hello": "flask", "request_id": request_id()}


@app.route("/api/secret")
def secret() -> dict[str, str]:
    return {"secret": "yes"}
