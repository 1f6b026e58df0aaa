"""Unleash's delta and streaming endpoints: ``GET /api/client/delta`` (polling in delta
format) and ``GET /api/client/streaming`` (server-sent events).

``/api/client/delta`` answers ``{"events": [hydration]}`` with the same ``ETag`` scheme as
``/api/client/features`` (``If-None-Match`` answers 304), for SDKs polling in delta format.

For SDKs in streaming mode (Node ``experimentalMode: {type: "streaming"}``). On connect the
stream sends ``unleash-connected`` with a ``hydration`` event (every flag and segment);
after each store change it sends ``unleash-updated`` with a fresh ``hydration`` of the new
version, so a change reaches the SDK as soon as the control plane's snapshot has it (push
from PostgreSQL or Redis, else within the 1 s poll). Events carry the store version as
their SSE ``id``. Comments keep idle connections alive; a stream ends after
``MAX_STREAM_SECONDS`` so a revoked key stops at the next reconnect, and at most
``MAX_STREAMS`` streams are open per process (503 beyond, and the SDK falls back to
polling). The route is left out of the OpenAPI document: an endless body cannot be fuzzed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from safeship.server.flag_feed import FeatureQuery, ServedSnapshot
from safeship.server.routes.unleash_api import SdkReader, etag_matches, flag_feed, served

router = APIRouter(tags=["unleash"])
MAX_STREAMS = 500
MAX_STREAM_SECONDS = 300.0
KEEPALIVE_SECONDS = 15.0
#: How often a stream looks at the (in-memory) snapshot for a new version.
CHECK_SECONDS = 0.1
_open = 0


def hydration_events(snapshot: ServedSnapshot) -> dict[str, object]:
    """Every flag and segment of ``snapshot`` as one ``hydration`` delta event."""
    query = FeatureQuery()
    return {
        "events": [
            {
                "type": "hydration",
                "eventId": snapshot.version,
                "features": [f for f in snapshot.features if query.admits(f)],
                "segments": snapshot.segments,
            }
        ]
    }


def hydration(snapshot: ServedSnapshot, event: str) -> bytes:
    """One SSE message: ``event`` with a hydration of ``snapshot``."""
    body = json.dumps(hydration_events(snapshot), separators=(",", ":"))
    return f"event: {event}\nid: {snapshot.version}\ndata: {body}\n\n".encode()


async def _events(request: Request, first: ServedSnapshot) -> AsyncIterator[bytes]:
    global _open
    feed = flag_feed(request)
    _open += 1
    try:
        yield hydration(first, "unleash-connected")
        sent, started, quiet_since = first.version, time.monotonic(), time.monotonic()
        while time.monotonic() - started < MAX_STREAM_SECONDS:
            await asyncio.sleep(CHECK_SECONDS)
            if await request.is_disconnected():
                return
            current = feed.snapshot()
            if current.version != sent:
                sent, quiet_since = current.version, time.monotonic()
                yield hydration(current, "unleash-updated")
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield b": keep-alive\n\n"
    finally:
        _open -= 1


@router.get("/api/client/streaming", include_in_schema=False)
async def client_streaming(request: Request, _: SdkReader) -> StreamingResponse:
    if _open >= MAX_STREAMS:
        raise HTTPException(503, "too many open streams; poll /api/client/features instead")
    first = await served(request)
    return StreamingResponse(
        _events(request, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/api/client/delta",
    response_model=None,
    summary="Every flag as one hydration event (Unleash's delta polling format)",
    responses={
        200: {"description": "{events: [{type: hydration, eventId, features, segments}]}"},
        304: {"description": "Unchanged since the ETag sent in If-None-Match."},
    },
)
async def client_delta(request: Request, _: SdkReader) -> Response:
    snapshot = await served(request)
    etag = f'"delta:{snapshot.version}"'
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    body = json.dumps(hydration_events(snapshot), separators=(",", ":")).encode()
    return Response(body, media_type="application/json", headers={"ETag": etag})
