"""A small FastAPI service with one route per behaviour under test."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from safeship.idempotency import (
    IdempotencyMiddleware,
    RouteOptions,
    Store,
    idempotent,
    principal_from_header,
)
from safeship.idempotency._http import ResponseLike

BIG = 8 * 1024 * 1024


@dataclass
class Service:
    app: FastAPI
    runs: Counter[str] = field(default_factory=Counter)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    reconcile_answer: list[ResponseLike | None] = field(default_factory=list)

    def client(self, api_key: str = "alice") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        return httpx.AsyncClient(
            transport=transport, base_url="http://test", headers={"x-api-key": api_key}
        )


def make_service(store: Store, *, default: RouteOptions | None = None) -> Service:
    app = FastAPI()
    service = Service(app)
    runs = service.runs

    async def reconcile(key: str, scope: Any) -> ResponseLike | None:
        runs["reconcile"] += 1
        return service.reconcile_answer.pop(0) if service.reconcile_answer else None

    @app.post("/orders")
    @idempotent()
    async def create_order(request: Request) -> JSONResponse:
        runs["orders"] += 1
        body = await request.json()
        number = runs["orders"]
        return JSONResponse(
            {"id": number, "item": body.get("item"), "caller": request.headers["x-api-key"]},
            status_code=201,
            headers={"location": f"/orders/{number}", "set-cookie": "session=secret"},
        )

    @app.post("/slow")
    @idempotent(lease=0.3)
    async def slow() -> dict[str, int]:
        runs["slow"] += 1
        service.entered.set()
        await service.gate.wait()
        return {"done": runs["slow"]}

    @app.post("/slow-held")  # the default lease: a stalled loop cannot make it lapse
    @idempotent()
    async def slow_held() -> dict[str, int]:
        runs["slow"] += 1
        service.entered.set()
        await service.gate.wait()
        return {"done": runs["slow"]}

    @app.post("/boom")
    @idempotent()
    async def boom() -> dict[str, str]:
        runs["boom"] += 1
        raise RuntimeError("the charge may or may not have gone through")

    @app.post("/boom-briefly")
    @idempotent(unknown_ttl=0.5)
    async def boom_briefly() -> dict[str, str]:
        runs["boom-briefly"] += 1
        raise RuntimeError("the charge may or may not have gone through")

    @app.post("/reconciled")
    @idempotent(reconcile=reconcile)
    async def reconciled() -> dict[str, int]:
        runs["reconciled"] += 1
        if runs["reconciled"] == 1:
            raise RuntimeError("cut off")
        return {"run": runs["reconciled"]}

    @app.post("/validate")
    @idempotent()
    async def validate(request: Request) -> dict[str, int]:
        runs["validate"] += 1
        body = await request.json()
        if "amount" not in body:
            raise HTTPException(422, "amount is required")
        return {"amount": body["amount"]}

    @app.post("/fail")
    @idempotent()
    async def fail() -> JSONResponse:
        runs["fail"] += 1
        return JSONResponse({"error": "db down"}, status_code=503)

    @app.post("/fail-stored")
    @idempotent(store_server_errors=True)
    async def fail_stored() -> JSONResponse:
        runs["fail-stored"] += 1
        return JSONResponse({"error": "declined"}, status_code=500)

    @app.post("/stream")
    @idempotent()
    async def stream() -> StreamingResponse:
        runs["stream"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"first part, ", b"second part, ", b"the whole of it"):
                await asyncio.sleep(0)
                yield part

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.post("/big")
    @idempotent()
    async def big() -> Response:
        runs["big"] += 1
        return Response(b"x" * BIG, status_code=201, headers={"location": "/exports/1"})

    @app.post("/optional")
    @idempotent(required=False)
    async def optional() -> dict[str, int]:
        runs["optional"] += 1
        return {"run": runs["optional"]}

    @app.post("/plain")
    async def plain() -> dict[str, int]:
        runs["plain"] += 1
        return {"run": runs["plain"]}

    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        principal=principal_from_header("x-api-key"),
        default=default,
    )
    return service
