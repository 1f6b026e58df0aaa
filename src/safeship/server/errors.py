"""JSON error bodies for the control plane: ``{"error": code, "detail": message}``.

A 422 always has the same shape, whichever layer refused the input: ``detail`` is a list
of ``{"field": "body.definition.strategies[0]", "problem": "..."}``. The OpenAPI schema
documents that shape (not FastAPI's default), so clients and fuzzers see the real one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from safeship.errors import SafeshipError
from safeship.server.inputs import NestedValueError

logger = logging.getLogger("safeship.server")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    422: "invalid",
    428: "precondition_required",
    429: "too_many_requests",
    503: "unavailable",
}

FIELD_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "FieldProblem",
    "type": "object",
    "required": ["field", "problem"],
    "properties": {
        "field": {"type": "string", "description": "Where: body.name, query.limit, ..."},
        "problem": {"type": "string", "description": "What was wrong and what is allowed."},
    },
}
INVALID_SCHEMA: dict[str, Any] = {
    "title": "Invalid",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "enum": ["invalid"]},
        "detail": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
    },
}


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {}},
}


def error_response(
    status: int, detail: object, *, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": code or _CODES.get(status, "error"), "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


class ApiProblem(SafeshipError):  # noqa: N818 - an answer, raised to leave the route
    """An error answer with fields beyond ``error`` and ``detail`` (``current_version``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.fields = dict(fields or {})
        self.headers = headers


async def _api_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    body = {"error": _CODES.get(exc.status, "error"), "detail": exc.detail, **exc.fields}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def invalid(field: str, problem: str) -> HTTPException:
    """A 422 for one bad input, in the same shape as the schema's own refusals."""
    return HTTPException(422, [{"field": field, "problem": problem}])


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: object = exc.detail
    if exc.status_code == 422 and not isinstance(detail, list):
        detail = [{"field": "", "problem": str(detail)}]
    return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, [_problem(e) for e in exc.errors()])


def _problem(error: Any) -> dict[str, str]:
    """One refusal as ``{"field", "problem"}``; a nested value's path extends the field."""
    field = ".".join(str(part) for part in error.get("loc", ()))
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, NestedValueError) and cause.path:
        joiner = "" if cause.path.startswith("[") else "."
        return {"field": f"{field}{joiner}{cause.path}", "problem": cause.problem}
    return {"field": field, "problem": str(error.get("msg", ""))}


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("server.database_unavailable", extra={"error": type(exc).__name__})
    return error_response(
        503,
        "the database is unavailable; retry shortly",
        code="database_unavailable",
        headers={"Retry-After": "5"},
    )


async def _integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    """A write that lost a race to a concurrent one (a name taken meanwhile): 409."""
    logger.info("server.write_conflict", extra={"error": type(exc).__name__})
    return error_response(409, "a concurrent change conflicts with this one; read and retry")


async def _data_error(_request: Request, exc: Exception) -> JSONResponse:
    """A value the database refused (its type's range, a character it cannot store): 422."""
    logger.warning("server.value_refused_by_database", extra={"error": type(exc).__name__})
    problem = "a value the database cannot store (out of range, or a NUL character)"
    return error_response(422, [{"field": "", "problem": problem}])


def _document_unreadable_bodies(schema: dict[str, Any]) -> None:
    """Every operation that reads a body may answer 400 when the body is not JSON."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                operation.setdefault("responses", {}).setdefault(
                    "400",
                    {
                        "description": "The body could not be read as JSON.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                )


def _documented_errors(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with the 422 body the handlers really send."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = INVALID_SCHEMA
                schemas["ValidationError"] = FIELD_PROBLEM_SCHEMA
            schemas.setdefault("Error", ERROR_SCHEMA)
            _document_unreadable_bodies(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa.exc.OperationalError, _database_error)
    app.add_exception_handler(sa.exc.InterfaceError, _database_error)
    app.add_exception_handler(sa.exc.TimeoutError, _database_error)
    app.add_exception_handler(sa.exc.IntegrityError, _integrity_error)
    app.add_exception_handler(sa.exc.DataError, _data_error)
    app.openapi = _documented_errors(app)  # type: ignore[method-assign]
