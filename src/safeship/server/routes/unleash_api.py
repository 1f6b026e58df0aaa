"""Unleash's client and frontend APIs on the control plane, for stock Unleash SDKs.

An Unleash SDK configured with ``url=http://<control plane>/api`` and a safeship key in
its ``Authorization`` header works unchanged:

- ``GET /api/client/features``: every flag in Unleash's client format (segments and
  dependencies as Unleash serves them), filtered by ``project`` and ``namePrefix``, with an
  ``ETag`` (``If-None-Match`` answers 304). Read keys.
- ``POST /api/client/register`` and ``POST /api/client/metrics``: the SDK's start-up
  announcement and its evaluation counts (which feed the flags' usage records and
  ``safeship_sdk_flag_evaluations_total``). Read keys.
- ``GET``/``POST /api/frontend``: the flags that are on for one context, evaluated here, for
  browser SDKs; a ``frontend`` key is enough (it reaches nothing else).

Answers come from the served snapshot (`safeship.server.flag_feed`): no database read per
request. Keys are checked as everywhere else, brute-force limit included.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, Security
from fastapi.security import APIKeyHeader
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from safeship.server.deps import authenticate_key, client_ip
from safeship.server.flag_feed import (
    FeatureQuery,
    FeedUnavailableError,
    FlagFeed,
    ServedSnapshot,
)
from safeship.server.inputs import JsonObject, Text
from safeship.server.keys import Principal, Scope
from safeship.server.sdk_clients import Registration, SdkClientStore
from safeship.web._keys import presented_key

logger = logging.getLogger("safeship.server")
router = APIRouter(tags=["unleash"])
_token = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    description="A safeship key as Unleash SDKs send it (also X-API-Key or Bearer).",
)
MAX_TOGGLES_PER_REPORT = 10_000
SDK_EVALUATIONS = Counter(
    "safeship_sdk_flag_evaluations",
    "Flag evaluations reported by Unleash SDKs (POST /api/client/metrics), by result.",
    ["flag", "result"],
)
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Count = Annotated[int, Field(ge=0, le=2**53)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="safeship"'})


async def sdk_principal(request: Request, scope: Scope) -> Principal:
    """The caller of an SDK route: a key in ``Authorization`` (raw, as Unleash SDKs send
    it, or Bearer) or ``X-API-Key``; sessions are not accepted here."""
    presented = presented_key(request.scope.get("headers", ()), raw_authorization=True)
    if presented is None:
        raise _unauthorized("an API key (Authorization or X-API-Key) is required")
    principal = await authenticate_key(request, presented)
    if principal is None:
        raise _unauthorized("invalid API key")
    if not principal.can(scope):
        raise HTTPException(403, f"this route needs a {scope} key")
    return principal


def _needs(scope: Scope) -> Any:
    async def check(
        request: Request, _token: Annotated[str | None, Security(_token)] = None
    ) -> Principal:
        return await sdk_principal(request, scope)

    return Depends(check)


SdkReader = Annotated[Principal, _needs("read")]
FrontendReader = Annotated[Principal, _needs("frontend")]


def flag_feed(request: Request) -> FlagFeed:
    feed: FlagFeed = request.app.state.flag_feed
    return feed


async def served(request: Request) -> ServedSnapshot:
    """The current snapshot; the very first request loads it off the event loop. 503
    while none could be loaded (never an empty flag set, which would turn SDKs' flags off)."""
    feed = flag_feed(request)
    if feed.ready:
        return feed.snapshot()
    try:
        return await run_in_threadpool(feed.snapshot)
    except FeedUnavailableError as exc:
        raise HTTPException(
            503, f"flags not loaded yet: {exc}; retry shortly", headers={"Retry-After": "2"}
        ) from None


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    return any(
        tag.strip() == "*" or tag.strip().removeprefix("W/") == wanted
        for tag in if_none_match.split(",")
    )


# -- client API -------------------------------------------------------------------------


class ClientFeatures(BaseModel):
    version: int
    features: list[dict[str, Any]]
    segments: list[dict[str, Any]]
    query: dict[str, Any]
    meta: dict[str, Any]


@router.get(
    "/api/client/features",
    response_model=None,
    summary="Every flag in Unleash's client format (for Unleash server SDKs)",
    responses={
        200: {"model": ClientFeatures},
        304: {"description": "Unchanged since the ETag sent in If-None-Match."},
    },
)
async def client_features(
    request: Request,
    _: SdkReader,
    project: Annotated[
        list[Name] | None, Query(max_length=50, description="Only flags of these projects.")
    ] = None,
    name_prefix: Annotated[
        str | None, Query(alias="namePrefix", max_length=200, description="Only these names.")
    ] = None,
) -> Response:
    snapshot = await served(request)
    query = FeatureQuery(tuple(sorted(set(project or ()))), name_prefix or None)
    # the body and its ETag are made once per snapshot and query: a 304 and a 200 both
    # cost a cache lookup here, no JSON and no hashing
    made = snapshot.features_body(query)
    if etag_matches(request.headers.get("if-none-match"), made.etag):
        return Response(status_code=304, headers={"ETag": made.etag})
    return Response(made.body, media_type="application/json", headers={"ETag": made.etag})


class ClientRegistration(BaseModel):
    """What an Unleash SDK announces at start-up (fields it adds beyond these are ignored)."""

    model_config = ConfigDict(extra="ignore")
    appName: Annotated[Text, Field(min_length=1, max_length=200)]  # noqa: N815 - Unleash's name
    instanceId: Annotated[Text, Field(max_length=200)] | None = None  # noqa: N815
    sdkVersion: Annotated[Text, Field(max_length=200)] | None = None  # noqa: N815
    environment: Annotated[Text, Field(max_length=200)] | None = None
    strategies: list[Annotated[Text, Field(max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    started: Annotated[Text, Field(max_length=100)] | None = None
    interval: Annotated[int, Field(ge=0, le=2**31)] | None = None


class ToggleCounts(BaseModel):
    model_config = ConfigDict(extra="ignore")
    yes: Count = 0
    no: Count = 0
    variants: dict[Name, Count] = Field(default_factory=dict, max_length=1000)


class MetricsBucket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    start: Annotated[Text, Field(max_length=100)] | None = None
    stop: Annotated[Text, Field(max_length=100)] | None = None
    toggles: dict[Name, ToggleCounts] = Field(
        default_factory=dict, max_length=MAX_TOGGLES_PER_REPORT
    )


class ClientMetrics(BaseModel):
    model_config = ConfigDict(extra="ignore")
    appName: Annotated[Text, Field(min_length=1, max_length=200)]  # noqa: N815
    instanceId: Annotated[Text, Field(max_length=200)] | None = None  # noqa: N815
    environment: Annotated[Text, Field(max_length=200)] | None = None
    bucket: MetricsBucket


class SdkClient(BaseModel):
    app_name: str
    instance_id: str
    sdk_version: str | None
    environment: str | None
    strategies: list[str]
    started: str | None
    interval_ms: int | None
    registered_at: str
    last_seen_at: str
    evaluations: int


def sdk_clients(request: Request) -> SdkClientStore:
    clients: SdkClientStore = request.app.state.sdk_clients
    return clients


def _registration(body: ClientRegistration) -> Registration:
    return Registration(
        app_name=body.appName,
        instance_id=body.instanceId or "",
        sdk_version=body.sdkVersion,
        environment=body.environment,
        strategies=tuple(body.strategies),
        started=body.started,
        interval_ms=body.interval,
    )


@router.post(
    "/api/client/register",
    status_code=202,
    response_class=Response,
    summary="An Unleash SDK announces itself (app, instance, SDK version, strategies)",
)
async def client_register(request: Request, body: ClientRegistration, _: SdkReader) -> Response:
    await run_in_threadpool(sdk_clients(request).register, _registration(body))
    logger.info(
        "unleash.client_registered",
        extra={
            "app": body.appName,
            "instance": body.instanceId,
            "sdk_version": body.sdkVersion,
            "client": client_ip(request),
        },
    )
    return Response(status_code=202)


async def _record_metrics(request: Request, body: ClientMetrics) -> None:
    snapshot = await served(request)
    known = set(snapshot.flags.names())
    used: list[str] = []
    counted: dict[str, ToggleCounts] = {}
    total = 0
    for name, counts in body.bucket.toggles.items():
        total += counts.yes + counts.no
        if name not in known:  # unknown names never become metric labels or chart rows
            continue
        if counts.yes:
            SDK_EVALUATIONS.labels(name, "on").inc(counts.yes)
        if counts.no:
            SDK_EVALUATIONS.labels(name, "off").inc(counts.no)
        if counts.yes or counts.no:
            used.append(name)
            counted[name] = counts
    await run_in_threadpool(
        sdk_clients(request).reported, body.appName, body.instanceId or "", total, counts=counted
    )
    if used:
        store = flag_feed(request).store
        await run_in_threadpool(store.mark_evaluated, used)


@router.post(
    "/api/client/metrics",
    status_code=202,
    response_class=Response,
    summary="An Unleash SDK reports its evaluation counts (feeds usage records and metrics)",
)
async def client_metrics(request: Request, body: ClientMetrics, _: SdkReader) -> Response:
    await _record_metrics(request, body)
    return Response(status_code=202)


@router.get(
    "/api/v1/sdk/clients",
    response_model=list[SdkClient],
    summary="The SDK instances that registered or reported, seen most recently first",
)
async def list_sdk_clients(request: Request, _: SdkReader) -> list[SdkClient]:
    rows = await run_in_threadpool(sdk_clients(request).newest)
    return [
        SdkClient(
            **{
                **row,
                "strategies": [str(s) for s in row["strategies"] or []],
                "registered_at": row["registered_at"].isoformat(),
                "last_seen_at": row["last_seen_at"].isoformat(),
            }
        )
        for row in rows
    ]


# -- frontend API -----------------------------------------------------------------------


class FrontendVariant(BaseModel):
    name: str
    enabled: bool
    feature_enabled: bool
    featureEnabled: bool  # noqa: N815 - both spellings, as Unleash serves them
    payload: dict[str, Any] | None = None


class FrontendToggle(BaseModel):
    name: str
    enabled: bool
    variant: FrontendVariant
    impressionData: bool  # noqa: N815


class FrontendToggles(BaseModel):
    toggles: list[FrontendToggle]


class FrontendBody(BaseModel):
    context: JsonObject = Field(default_factory=dict)


#: Query parameters ``GET /api/frontend`` reads as context fields (``properties[x]`` too).
_CONTEXT_PARAMS = ("userId", "sessionId", "remoteAddress", "environment", "appName", "currentTime")
MAX_CONTEXT_PARAMS = 100


def frontend_toggles(snapshot: ServedSnapshot, context: dict[str, Any]) -> FrontendToggles:
    """The flags that are on for ``context``, with their variants, as Unleash's frontend
    API answers (flags that are off are left out)."""
    flags = snapshot.flags
    toggles = []
    for name in flags.names():
        if not flags.is_enabled(name, context):
            continue
        variant = flags.variant(name, context)
        toggles.append(
            FrontendToggle(
                name=name,
                enabled=True,
                variant=FrontendVariant(
                    name=variant.name,
                    enabled=variant.enabled,
                    feature_enabled=variant.feature_enabled,
                    featureEnabled=variant.feature_enabled,
                    payload=dict(variant.payload) if variant.payload is not None else None,
                ),
                impressionData=bool(flags.feature(name).get("impressionData", False)),
            )
        )
    return FrontendToggles(toggles=toggles)


def _query_context(request: Request) -> dict[str, Any]:
    params = request.query_params
    if len(params) > MAX_CONTEXT_PARAMS:
        raise HTTPException(422, [{"field": "query", "problem": "too many context fields"}])
    context: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for key, value in params.multi_items():
        if len(key) > 200 or len(value) > 1000:
            raise HTTPException(422, [{"field": f"query.{key[:50]}", "problem": "too long"}])
        if key in _CONTEXT_PARAMS:
            context[key] = value
        elif key.startswith("properties[") and key.endswith("]"):
            properties[key[11:-1]] = value
        else:
            properties[key] = value
    if properties:
        context["properties"] = properties
    return context


def _with_address(request: Request, context: dict[str, Any]) -> dict[str, Any]:
    if "remoteAddress" not in context:
        context = {**context, "remoteAddress": client_ip(request)}
    return context


def context_etag(version: int, context: dict[str, Any]) -> str:
    """An ETag for the answers to one context at one store version."""
    canonical = json.dumps(context, sort_keys=True, default=str, separators=(",", ":"))
    return f'"{version}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"'


@router.get(
    "/api/frontend",
    response_model=None,
    summary="The flags on for a context (query: userId, sessionId, properties[x]...)",
    responses={
        200: {"model": FrontendToggles},
        304: {"description": "Unchanged since the ETag sent in If-None-Match."},
    },
)
async def frontend_get(
    request: Request,
    _: FrontendReader,
    userId: Annotated[str | None, Query(max_length=1000)] = None,  # noqa: N803
    sessionId: Annotated[str | None, Query(max_length=1000)] = None,  # noqa: N803
) -> Response:
    del userId, sessionId  # read with the other fields by _query_context
    context = _with_address(request, _query_context(request))
    snapshot = await served(request)
    etag = context_etag(snapshot.version, context)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    toggles = frontend_toggles(snapshot, context)
    return Response(
        toggles.model_dump_json().encode(), media_type="application/json", headers={"ETag": etag}
    )


@router.post(
    "/api/frontend",
    response_model=FrontendToggles,
    summary="The flags on for the context in the body",
)
async def frontend_post(request: Request, body: FrontendBody, _: FrontendReader) -> FrontendToggles:
    context = _with_address(request, dict(body.context))
    return frontend_toggles(await served(request), context)


@router.post(
    "/api/frontend/client/metrics",
    status_code=202,
    response_class=Response,
    summary="A frontend SDK reports its evaluation counts",
)
async def frontend_metrics(request: Request, body: ClientMetrics, _: FrontendReader) -> Response:
    await _record_metrics(request, body)
    return Response(status_code=202)


@router.post(
    "/api/frontend/client/register",
    status_code=202,
    response_class=Response,
    summary="A frontend SDK announces itself",
)
async def frontend_register(
    request: Request, body: ClientRegistration, _: FrontendReader
) -> Response:
    await run_in_threadpool(sdk_clients(request).register, _registration(body))
    return Response(status_code=202)
