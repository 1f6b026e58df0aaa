"""JSON error bodies for the control plane: ``{"error": code, "detail": message}``."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("safeship.server")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "too_many_requests",
    503: "unavailable",
}


def error_response(
    status: int, detail: object, *, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": code or _CODES.get(status, "error"), "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, exc.detail, headers=getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
        for e in exc.errors()
    ]
    return error_response(422, problems)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("server.database_unavailable: %s", type(exc).__name__)
    return error_response(
        503,
        "the database is unavailable; retry shortly",
        code="database_unavailable",
        headers={"Retry-After": "5"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa.exc.OperationalError, _database_error)
    app.add_exception_handler(sa.exc.InterfaceError, _database_error)
    app.add_exception_handler(sa.exc.TimeoutError, _database_error)
