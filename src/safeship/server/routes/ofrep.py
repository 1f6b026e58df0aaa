"""OFREP, the OpenFeature Remote Evaluation Protocol, on the control plane.

``POST /ofrep/v1/evaluate/flags/{key}`` evaluates one flag and ``POST /ofrep/v1/evaluate/flags``
every flag (with an ``ETag``; ``If-None-Match`` answers 304), for the OpenFeature OFREP
providers of any language. The body is ``{"context": {...}}``: ``targetingKey`` becomes
Unleash's ``userId``; ``sessionId``, ``remoteAddress``, ``environment``, ``appName`` and
``currentTime`` keep their meaning; every other field is a custom property.

Values: a flag without variants answers ``true``/``false``; a flag with variants answers its
variant's payload (``string``/``csv`` text, ``number``, ``json`` parsed) or the variant's
name without a payload, and no value while it is off (the provider then uses the caller's
default). Errors use the protocol's shapes and codes: ``FLAG_NOT_FOUND`` (404),
``PARSE_ERROR``, ``INVALID_CONTEXT`` and ``TARGETING_KEY_MISSING`` (400); 401/403 for keys.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from safeship.errors import SafeshipError
from safeship.flags._flagset import FlagSet
from safeship.flags._model import Variant
from safeship.server.flag_feed import ServedSnapshot
from safeship.server.routes.unleash_api import SdkReader, context_etag, etag_matches, served

router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"])
_STANDARD = ("sessionId", "remoteAddress", "environment", "appName", "currentTime", "userId")
#: Strategies whose answer hashes the user id: without one the result would be arbitrary.
_USER_HASHED = frozenset({"gradualRolloutUserId"})
MAX_CONTEXT_FIELDS = 200
FlagKey = Annotated[str, Path(min_length=1, max_length=200)]


class OfrepError(SafeshipError):
    """An OFREP error answer (raised inside this module only, answered by the route)."""

    def __init__(self, status: int, code: str, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.code = code
        self.details = details


class EvaluationSuccess(BaseModel):
    key: str
    reason: str
    variant: str
    value: Any = None
    metadata: dict[str, bool | str | float]


class EvaluationFailure(BaseModel):
    key: str
    errorCode: str  # noqa: N815 - the protocol's names
    errorDetails: str  # noqa: N815


class BulkFailure(BaseModel):
    errorCode: str  # noqa: N815
    errorDetails: str  # noqa: N815


class BulkEvaluation(BaseModel):
    flags: list[dict[str, Any]]


_REQUEST_BODY = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "context": {
                            "type": "object",
                            "description": "targetingKey and other fields of the context.",
                        }
                    },
                }
            }
        },
    }
}


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise OfrepError(400, "PARSE_ERROR", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise OfrepError(400, "PARSE_ERROR", 'the body must be an object: {"context": {...}}')
    return body


def unleash_context(body: dict[str, Any]) -> dict[str, Any]:
    """The OFREP evaluation context as an Unleash context (``targetingKey`` is ``userId``)."""
    context = body.get("context", {})
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "context must be an object")
    if len(context) > MAX_CONTEXT_FIELDS:
        raise OfrepError(400, "INVALID_CONTEXT", f"context has over {MAX_CONTEXT_FIELDS} fields")
    result: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    for key, value in context.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            raise OfrepError(
                400,
                "INVALID_CONTEXT",
                f"context.{key[:100]}: a text, number or boolean is expected, not a structure",
            )
        if key == "targetingKey":
            if not isinstance(value, str):
                raise OfrepError(400, "INVALID_CONTEXT", "context.targetingKey must be text")
            result["userId"] = value
        elif key in _STANDARD:
            result[key] = value
        else:
            properties[key] = value
    if properties:
        result["properties"] = properties
    return result


@dataclass(frozen=True, slots=True)
class FlagFacts:
    """What OFREP needs of a flag's definition, read once per snapshot (not per request)."""

    enabled: bool
    has_variants: bool
    #: A strategy hashes ``userId`` whatever the context holds.
    hashes_user: bool
    #: A strategy hashes ``userId`` when the context has no ``sessionId`` (``default``).
    hashes_user_without_session: bool

    @classmethod
    def of(cls, feature: dict[str, Any]) -> FlagFacts:
        strategies = [s for s in feature.get("strategies") or [] if isinstance(s, dict)]
        hashes_user = without_session = False
        for strategy in strategies:
            name = strategy.get("name")
            parameters = strategy.get("parameters") or {}
            if name in _USER_HASHED:
                hashes_user = True
            elif name == "flexibleRollout" and str(parameters.get("rollout", "100")) not in (
                "0",
                "100",
            ):
                stickiness = parameters.get("stickiness") or "default"
                hashes_user = hashes_user or stickiness == "userId"
                without_session = without_session or stickiness == "default"
        return cls(
            enabled=bool(feature.get("enabled")),
            has_variants=bool(feature.get("variants"))
            or any(s.get("variants") for s in strategies),
            hashes_user=hashes_user,
            hashes_user_without_session=without_session,
        )

    def hashes_missing_id(self, context: dict[str, Any]) -> bool:
        """Whether the flag's answer hashes a user id that ``context`` does not hold."""
        if not self.enabled or context.get("userId") is not None:
            return False
        return self.hashes_user or (
            self.hashes_user_without_session and context.get("sessionId") is None
        )


#: Facts per served snapshot (by identity; the newest few kept, each snapshot immutable).
_facts_by_snapshot: OrderedDict[int, tuple[ServedSnapshot, dict[str, FlagFacts]]] = OrderedDict()
_MAX_SNAPSHOTS = 4


def flag_facts(snapshot: ServedSnapshot, key: str) -> FlagFacts:
    """``key``'s facts in ``snapshot`` (which holds ``key``), worked out on first use."""
    entry = _facts_by_snapshot.get(id(snapshot))
    if entry is None or entry[0] is not snapshot:
        entry = (snapshot, {})
        _facts_by_snapshot[id(snapshot)] = entry
        while len(_facts_by_snapshot) > _MAX_SNAPSHOTS:
            _facts_by_snapshot.popitem(last=False)
    facts = entry[1].get(key)
    if facts is None:
        facts = entry[1][key] = FlagFacts.of(snapshot.flags.feature(key))
    return facts


def _payload_value(variant: Variant) -> Any:
    payload = variant.payload
    if payload is None:
        return variant.name
    kind, raw = payload.get("type"), payload.get("value")
    try:
        if kind == "json":
            return json.loads(str(raw))
        if kind == "number":
            number = float(str(raw))
            return int(number) if number.is_integer() and "." not in str(raw) else number
    except ValueError:
        raise OfrepError(
            400, "PARSE_ERROR", f"variant {variant.name!r}: payload does not parse"
        ) from None
    return raw


def evaluate(snapshot: ServedSnapshot, key: str, context: dict[str, Any]) -> dict[str, Any]:
    """One flag's OFREP answer for ``context``; raises `OfrepError` for the error shapes."""
    flags: FlagSet = snapshot.flags
    if key not in flags:
        raise OfrepError(404, "FLAG_NOT_FOUND", f"no flag named {key!r}")
    facts = flag_facts(snapshot, key)
    if facts.hashes_missing_id(context):
        raise OfrepError(
            400, "TARGETING_KEY_MISSING", f"flag {key!r} is rolled out by targetingKey"
        )
    enabled = flags.is_enabled(key, context)
    metadata: dict[str, bool | str | float] = {"enabled": enabled, "version": snapshot.version}
    if not facts.has_variants:
        reason = "DISABLED" if not facts.enabled else "TARGETING_MATCH"
        if facts.enabled and not enabled:
            reason = "DEFAULT"
        variant_name = "on" if enabled else "off"
        return {
            "key": key,
            "reason": reason,
            "variant": variant_name,
            "value": enabled,
            "metadata": metadata,
        }
    variant = flags.variant(key, context)
    if not variant.feature_enabled or not variant.enabled:
        reason = "DISABLED" if not facts.enabled else "DEFAULT"
        return {"key": key, "reason": reason, "variant": variant.name, "metadata": metadata}
    return {
        "key": key,
        "reason": "SPLIT",
        "variant": variant.name,
        "value": _payload_value(variant),
        "metadata": metadata,
    }


def _failure(exc: OfrepError, key: str | None) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": exc.code, "errorDetails": exc.details}
    if key is not None:
        body = {"key": key, **body}
    return JSONResponse(body, status_code=exc.status)


@router.post(
    "/evaluate/flags/{key}",
    response_model=None,
    summary="OFREP: evaluate one flag for a context",
    openapi_extra=_REQUEST_BODY,
    responses={
        200: {"model": EvaluationSuccess},
        400: {
            "model": EvaluationFailure,
            "description": "PARSE_ERROR, INVALID_CONTEXT or TARGETING_KEY_MISSING",
        },
        404: {"model": EvaluationFailure, "description": "FLAG_NOT_FOUND"},
    },
)
async def evaluate_flag(request: Request, key: FlagKey, _: SdkReader) -> Response:
    try:
        context = unleash_context(_parse_body(await request.body()))
        return JSONResponse(evaluate(await served(request), key, context))
    except OfrepError as exc:
        return _failure(exc, key)


@router.post(
    "/evaluate/flags",
    response_model=None,
    summary="OFREP: evaluate every flag for a context (ETag / If-None-Match)",
    openapi_extra=_REQUEST_BODY,
    responses={
        200: {"model": BulkEvaluation},
        304: {"description": "Unchanged since the ETag sent in If-None-Match."},
        400: {"model": BulkFailure, "description": "PARSE_ERROR or INVALID_CONTEXT"},
    },
)
async def evaluate_flags(request: Request, _: SdkReader) -> Response:
    raw = await request.body()
    try:
        context = unleash_context(_parse_body(raw))
    except OfrepError as exc:
        return _failure(exc, None)
    snapshot = await served(request)
    etag = context_etag(snapshot.version, context)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    results: list[dict[str, Any]] = []
    for name in snapshot.flags.names():
        try:
            results.append(evaluate(snapshot, name, context))
        except OfrepError as exc:
            results.append({"key": name, "errorCode": exc.code, "errorDetails": exc.details})
    return JSONResponse({"flags": results}, headers={"ETag": etag})
