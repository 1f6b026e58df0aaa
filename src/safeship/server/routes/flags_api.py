"""Flags in the JSON API: list, read, create, change, roll out, target, kill switch, history.

Edits carry the version they were made against: ``If-Match: "<version>"`` (the ``ETag`` of
``GET /api/v1/flags/{name}``) or ``"version"`` in the body. A flag changed since answers
``412`` (If-Match) or ``409`` (body), with ``current_version`` in the error body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response
from pydantic import AfterValidator, BaseModel, Field

from safeship.flags._authoring import FlagDefinitionError
from safeship.flags._model import FlagStateError
from safeship.flags.store import (
    FlagExistsError,
    FlagInUseError,
    FlagNotFoundError,
    FlagRecord,
    FlagVersionError,
)
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.errors import ApiProblem, invalid
from safeship.server.inputs import (
    Body,
    Flag,
    JsonObject,
    Number,
    Reason,
    Text,
    UtcDatetime,
    Whole,
    storable_text,
)
from safeship.server.state import ControlPlane, plane
from safeship.settings import flag_key

router = APIRouter(prefix="/api/v1/flags", tags=["flags"])
_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "no flag has that name"}}
FlagName = Annotated[str, AfterValidator(storable_text), Path(min_length=1, max_length=200)]
QueryReason = Annotated[
    str | None, AfterValidator(lambda v: v and storable_text(v)), Query(max_length=2000)
]
IfMatch = Annotated[
    str | None,
    Header(
        max_length=200,
        description='The ETag read (`"7"`): refuse with 412 if the flag changed since.',
    ),
]
Version = Annotated[
    Whole | None,
    Field(ge=1, description="The version read: refuse with 409 if the flag changed since."),
]


class FlagOut(BaseModel):
    name: str
    enabled: bool
    rollout_percent: float | None
    summary: str
    definition: dict[str, Any]
    description: str | None
    owner: str | None
    safe_value: bool
    lifetime_days: int | None
    version: int
    created_at: str
    updated_at: str
    updated_by: str
    last_evaluated_at: str | None
    overridden_by_env: str | None = Field(
        description="The SAFESHIP_FLAG_* value forcing this flag in the control plane's "
        "environment, if any."
    )


class FlagList(BaseModel):
    version: int
    killed_at: str | None
    flags: list[FlagOut]


class NewFlag(Body):
    name: Text = Field(
        min_length=1,
        max_length=200,
        description="1-200 characters of A-Z a-z 0-9 - _ . ~ ! * ' ( ) :",
    )
    description: Text | None = Field(default=None, max_length=2000)
    owner: Text | None = Field(default=None, max_length=200)
    safe_value: Flag = False
    lifetime_days: Whole | None = Field(default=None, ge=1, le=3650)
    definition: JsonObject | None = Field(
        default=None, description="An Unleash feature definition; default: off, on for all."
    )
    reason: Reason = None


class FlagUpdate(Body):
    definition: JsonObject | None = None
    description: Text | None = Field(default=None, max_length=2000)
    owner: Text | None = Field(default=None, max_length=200)
    safe_value: Flag | None = None
    lifetime_days: Whole | None = Field(default=None, ge=1, le=3650)
    version: Version = None
    reason: Reason = None


class ReasonBody(Body):
    reason: Reason = None


class EditBody(Body):
    version: Version = None
    reason: Reason = None


class RolloutBody(EditBody):
    percent: Number = Field(ge=0, le=100)
    stickiness: Text | None = Field(default=None, min_length=1, max_length=100)


class TargetBody(EditBody):
    values: list[Annotated[Text, Field(max_length=200)]] = Field(max_length=10_000)
    field: Text = Field(default="userId", min_length=1, max_length=100)


class ScheduleBody(EditBody):
    enable_at: UtcDatetime | None = None
    disable_at: UtcDatetime | None = None


class KillResult(BaseModel):
    changed: dict[str, bool]


class EvaluateBody(Body):
    name: Text = Field(min_length=1, max_length=200)
    context: JsonObject = Field(default_factory=dict)


class Evaluation(BaseModel):
    name: str
    enabled: bool
    variant: dict[str, Any]


def flag_out(cp: ControlPlane, record: FlagRecord) -> FlagOut:
    override = cp.settings.flag_overrides.get(flag_key(record.name))
    return FlagOut(**record.to_dict(), overridden_by_env=override.describe() if override else None)


@contextmanager
def translated_errors(*, if_match: bool = False) -> Iterator[None]:
    """Store errors as HTTP answers: 404 unknown, 409 exists or in use, 412/409 stale
    version (412 when the version came in ``If-Match``), 422 invalid input."""
    try:
        yield
    except FlagNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except (FlagExistsError, FlagInUseError) as exc:
        raise HTTPException(409, str(exc)) from None
    except FlagVersionError as exc:
        raise ApiProblem(
            412 if if_match else 409,
            str(exc),
            fields={"current_version": exc.current},
            headers={"ETag": etag(exc.current)},
        ) from None
    except FlagDefinitionError as exc:
        raise invalid(f"body.{exc.field}" if exc.field else "body", exc.problem) from None


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None, body_version: int | None) -> int | None:
    """The version an edit was made against: ``If-Match`` first, else the body's."""
    if if_match is None:
        return body_version
    tags = [tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")]
    if "*" in tags:
        return body_version
    versions = [int(tag) for tag in tags if tag.isascii() and tag.isdigit() and len(tag) < 19]
    return versions[0] if versions else 0  # no version at all never matches: 412


def _change(
    request: Request,
    fn: Callable[[ControlPlane], FlagRecord],
    *,
    if_match: bool = False,
    response: Response | None = None,
) -> FlagOut:
    cp = plane(request)
    with translated_errors(if_match=if_match):
        out = flag_out(cp, fn(cp))
    if response is not None:
        response.headers["ETag"] = etag(out.version)
    return out


@router.get("", response_model=FlagList, summary="Every flag with its state")
def list_flags(request: Request, _: ReadPrincipal) -> FlagList:
    cp = plane(request)
    records = cp.flags.all()
    killed = cp.flags.killed_at()
    return FlagList(
        version=cp.flags.version(),
        killed_at=killed.isoformat() if killed else None,
        flags=[flag_out(cp, r) for r in records],
    )


@router.post(
    "",
    response_model=FlagOut,
    status_code=201,
    summary="Create a flag",
    responses={409: {"description": "exists"}},
)
def create_flag(request: Request, body: NewFlag, who: AdminPrincipal) -> FlagOut:
    return _change(
        request,
        lambda cp: cp.flags.create(
            body.name,
            actor=who.actor,
            definition=body.definition,
            description=body.description,
            owner=body.owner,
            safe_value=body.safe_value,
            lifetime_days=body.lifetime_days,
            reason=body.reason,
        ),
    )


@router.get("/stale", summary="Flags to clean up")
def stale(
    request: Request, _: ReadPrincipal, days: Annotated[int, Query(ge=1, le=3650)] = 30
) -> list[dict[str, Any]]:
    return plane(request).flags.stale(settled_days=days)


@router.get("/export", summary="The whole state in Unleash's format")
def export(request: Request, _: ReadPrincipal) -> dict[str, Any]:
    return plane(request).flags.export_unleash()


@router.post("/import", summary="Create or replace flags from Unleash's format")
def import_state(
    request: Request,
    state: JsonObject,
    who: AdminPrincipal,
    reason: QueryReason = None,
) -> dict[str, list[str]]:
    with translated_errors():
        return {
            "imported": plane(request).flags.import_unleash(state, actor=who.actor, reason=reason)
        }


@router.post("/kill", response_model=KillResult, summary="Kill switch: every flag to safe value")
def kill(request: Request, body: ReasonBody, who: AdminPrincipal) -> KillResult:
    return KillResult(changed=plane(request).flags.kill(actor=who.actor, reason=body.reason))


@router.post(
    "/restore",
    response_model=KillResult,
    summary="Undo the last kill switch",
    responses={409: {"description": "the kill switch is not engaged"}},
)
def restore(request: Request, body: ReasonBody, who: AdminPrincipal) -> KillResult:
    try:
        changed = plane(request).flags.restore(actor=who.actor, reason=body.reason)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return KillResult(changed=changed)


@router.post(
    "/evaluate",
    response_model=Evaluation,
    summary="Evaluate a flag for a context, as the store stands now",
    responses={503: {"description": "the stored flag state cannot be compiled"}},
)
def evaluate(request: Request, body: EvaluateBody, _: ReadPrincipal) -> Evaluation:
    from safeship.flags._flagset import FlagSet

    state = plane(request).flags.state()[1]
    try:
        flagset = FlagSet.from_unleash(state)
    except FlagStateError as exc:  # only a state written around the store can be this bad
        raise HTTPException(503, f"the stored flag state cannot be compiled: {exc}") from None
    variant = flagset.variant(body.name, body.context)
    return Evaluation(
        name=body.name,
        enabled=flagset.is_enabled(body.name, body.context),
        variant={
            "name": variant.name,
            "enabled": variant.enabled,
            "feature_enabled": variant.feature_enabled,
            "payload": variant.payload,
        },
    )


@router.get(
    "/{name}",
    response_model=FlagOut,
    summary="One flag; its ETag is the version to send back in If-Match",
    responses=_UNKNOWN,
)
def get_flag(request: Request, response: Response, name: FlagName, _: ReadPrincipal) -> FlagOut:
    return _change(request, lambda cp: cp.flags.get(name), response=response)


_STALE: dict[int | str, dict[str, Any]] = {
    **_UNKNOWN,
    409: {"description": "exists, in use, or the body's version is not the current one"},
    412: {"description": "the If-Match version is not the current one"},
}


@router.put(
    "/{name}",
    response_model=FlagOut,
    summary="Change a flag's definition or metadata (fields left out stay as they are)",
    responses=_STALE,
)
@router.patch(
    "/{name}",
    response_model=FlagOut,
    summary="Change a flag's definition or metadata (the same as PUT)",
    responses=_STALE,
    operation_id="patch_flag",
)
def update_flag(
    request: Request,
    response: Response,
    name: FlagName,
    body: FlagUpdate,
    who: AdminPrincipal,
    if_match: IfMatch = None,
) -> FlagOut:
    metadata = body.model_dump(
        include={"description", "owner", "safe_value", "lifetime_days"}, exclude_none=True
    )
    definition = body.definition

    def edit(feature: dict[str, Any]) -> dict[str, Any]:
        return dict(definition) if definition is not None else feature

    return _change(
        request,
        lambda cp: cp.flags.change(
            name,
            edit,
            actor=who.actor,
            action="flag.update",
            reason=body.reason,
            metadata=metadata,
            expected_version=expected_version(if_match, body.version),
        ),
        if_match=if_match is not None,
        response=response,
    )


class DeleteBody(Body):
    version: Version = None
    reason: Reason = None


@router.delete("/{name}", status_code=204, summary="Delete a flag", responses=_STALE)
def delete_flag(
    request: Request,
    name: FlagName,
    who: AdminPrincipal,
    reason: QueryReason = None,
    if_match: IfMatch = None,
    body: DeleteBody | None = None,
) -> None:
    version = expected_version(if_match, body.version if body else None)
    with translated_errors(if_match=if_match is not None):
        plane(request).flags.delete(
            name,
            actor=who.actor,
            reason=(body.reason if body and body.reason else reason),
            expected_version=version,
        )


def _edit(
    request: Request,
    response: Response,
    if_match: str | None,
    body: EditBody,
    apply: Callable[[ControlPlane, int | None], FlagRecord],
) -> FlagOut:
    version = expected_version(if_match, body.version)
    return _change(
        request, lambda cp: apply(cp, version), if_match=if_match is not None, response=response
    )


@router.post("/{name}/enable", response_model=FlagOut, summary="Turn a flag on", responses=_STALE)
def enable(
    request: Request,
    response: Response,
    name: FlagName,
    body: EditBody,
    who: AdminPrincipal,
    if_match: IfMatch = None,
) -> FlagOut:
    return _edit(
        request,
        response,
        if_match,
        body,
        lambda cp, v: cp.flags.set_enabled(
            name, True, actor=who.actor, reason=body.reason, expected_version=v
        ),
    )


@router.post("/{name}/disable", response_model=FlagOut, summary="Turn a flag off", responses=_STALE)
def disable(
    request: Request,
    response: Response,
    name: FlagName,
    body: EditBody,
    who: AdminPrincipal,
    if_match: IfMatch = None,
) -> FlagOut:
    return _edit(
        request,
        response,
        if_match,
        body,
        lambda cp, v: cp.flags.set_enabled(
            name, False, actor=who.actor, reason=body.reason, expected_version=v
        ),
    )


@router.post(
    "/{name}/rollout",
    response_model=FlagOut,
    summary="Roll out to a percentage",
    responses=_STALE,
)
def rollout(
    request: Request,
    response: Response,
    name: FlagName,
    body: RolloutBody,
    who: AdminPrincipal,
    if_match: IfMatch = None,
) -> FlagOut:
    return _edit(
        request,
        response,
        if_match,
        body,
        lambda cp, v: cp.flags.rollout(
            name,
            body.percent,
            actor=who.actor,
            stickiness=body.stickiness,
            reason=body.reason,
            expected_version=v,
        ),
    )


@router.post(
    "/{name}/target",
    response_model=FlagOut,
    summary="Turn on for listed ids",
    responses=_STALE,
)
def target(
    request: Request,
    response: Response,
    name: FlagName,
    body: TargetBody,
    who: AdminPrincipal,
    if_match: IfMatch = None,
) -> FlagOut:
    return _edit(
        request,
        response,
        if_match,
        body,
        lambda cp, v: cp.flags.target(
            name,
            body.values,
            actor=who.actor,
            field=body.field,
            reason=body.reason,
            expected_version=v,
        ),
    )


@router.post(
    "/{name}/schedule",
    response_model=FlagOut,
    summary="Enable at / disable at",
    responses=_STALE,
)
def schedule(
    request: Request,
    response: Response,
    name: FlagName,
    body: ScheduleBody,
    who: AdminPrincipal,
    if_match: IfMatch = None,
) -> FlagOut:
    return _edit(
        request,
        response,
        if_match,
        body,
        lambda cp, v: cp.flags.schedule(
            name,
            actor=who.actor,
            enable_at=body.enable_at,
            disable_at=body.disable_at,
            reason=body.reason,
            expected_version=v,
        ),
    )


@router.get("/{name}/history", summary="Audit trail of one flag")
def history(
    request: Request,
    name: FlagName,
    _: ReadPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    return [r.to_dict() for r in plane(request).flags.history(name, limit=limit)]
