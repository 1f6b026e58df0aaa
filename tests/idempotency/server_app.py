"""The service the kill -9 test runs under uvicorn (configured through the environment)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from safeship.idempotency import (
    IdempotencyMiddleware,
    RedisStore,
    SqlStore,
    Store,
    idempotent,
    principal_from_header,
)

MARKER = Path(os.environ["IDEM_TEST_MARKER"])
STORE_URL = os.environ["IDEM_TEST_STORE"]


def _store() -> Store:
    if STORE_URL.startswith("redis://"):
        import redis.asyncio

        return RedisStore(
            redis.asyncio.Redis.from_url(STORE_URL), prefix=os.environ["IDEM_TEST_PREFIX"]
        )
    from tests.idempotency.conftest import sql_engine

    return SqlStore(sql_engine(STORE_URL))


def _charged(route: str) -> int:
    lines = MARKER.read_text().splitlines() if MARKER.exists() else []
    return lines.count(route)


async def reconcile(key: str, scope: Any) -> JSONResponse | None:
    """Ask the ledger (here, the marker file) whether the charge went through."""
    return (
        JSONResponse({"charged": True, "by": "reconcile"}, status_code=201)
        if _charged("reconciled")
        else None
    )


app = FastAPI()


def _record_charge(route: str) -> None:
    with MARKER.open("a") as marker:
        marker.write(route + "\n")


async def _charge(route: str) -> dict[str, str]:
    _record_charge(route)  # a few bytes to a local file: written before the kill
    await asyncio.sleep(60)  # killed here
    return {"charged": route}


@app.post("/charge")
@idempotent(lease=1.0)
async def charge(request: Request) -> dict[str, str]:
    return await _charge("plain")


@app.post("/charge-reconciled")
@idempotent(lease=1.0, reconcile=reconcile)
async def charge_reconciled(request: Request) -> dict[str, str]:
    return await _charge("reconciled")


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


app.add_middleware(IdempotencyMiddleware, store=_store(), principal=principal_from_header("x-key"))
