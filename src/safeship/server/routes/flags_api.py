"""Flags in the JSON API: list, read, create, change, roll out, target, kill switch, history."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from safeship.flags.authoring import FlagDefinitionError
from safeship.flags.store import FlagExistsError, FlagNotFoundError, FlagRecord
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.state import ControlPlane, plane
from safeship.settings import flag_key

router = APIRouter(prefix="/api/v1/flags", tags=["flags"])
FlagName = Annotated[str, Path(min_length=1, max_length=200)]
Reason = Field(default=None, max_length=2000, description="Why, for the audit trail.")


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


class NewFlag(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    owner: str | None = Field(default=None, max_length=200)
    safe_value: bool = False
    lifetime_days: int | None = Field(default=None, ge=1, le=3650)
    definition: dict[str, Any] | None = Field(
        default=None, description="An Unleash feature definition; default: off, on for all."
    )
    reason: str | None = Reason


class FlagUpdate(BaseModel):
    definition: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=2000)
    owner: str | None = Field(default=None, max_length=200)
    safe_value: bool | None = None
    lifetime_days: int | None = Field(default=None, ge=1, le=3650)
    reason: str | None = Reason


class ReasonBody(BaseModel):
    reason: str | None = Reason


class RolloutBody(BaseModel):
    percent: float = Field(ge=0, le=100)
    stickiness: str = Field(default="default", min_length=1, max_length=100)
    reason: str | None = Reason


class TargetBody(BaseModel):
    values: list[Annotated[str, Field(max_length=200)]] = Field(max_length=10_000)
    field: str = Field(default="userId", min_length=1, max_length=100)
    reason: str | None = Reason


class ScheduleBody(BaseModel):
    enable_at: datetime | None = None
    disable_at: datetime | None = None
    reason: str | None = Reason


class KillResult(BaseModel):
    changed: dict[str, bool]


class EvaluateBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    context: dict[str, Any] = Field(default_factory=dict)


class Evaluation(BaseModel):
    name: str
    enabled: bool
    variant: dict[str, Any]


def flag_out(cp: ControlPlane, record: FlagRecord) -> FlagOut:
    override = cp.settings.flag_overrides.get(flag_key(record.name))
    return FlagOut(**record.to_dict(), overridden_by_env=override.describe() if override else None)


@contextmanager
def translated_errors() -> Iterator[None]:
    """Store errors as HTTP answers: 404 unknown, 409 exists, 422 invalid definition."""
    try:
        yield
    except FlagNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except FlagExistsError as exc:
        raise HTTPException(409, str(exc)) from None
    except FlagDefinitionError as exc:
        raise HTTPException(422, str(exc)) from None


def _change(request: Request, fn: Callable[[ControlPlane], FlagRecord]) -> FlagOut:
    cp = plane(request)
    with translated_errors():
        return flag_out(cp, fn(cp))


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
            actor=who.name,
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
    state: dict[str, Any],
    who: AdminPrincipal,
    reason: Annotated[str | None, Query(max_length=2000)] = None,
) -> dict[str, list[str]]:
    with translated_errors():
        return {
            "imported": plane(request).flags.import_unleash(state, actor=who.name, reason=reason)
        }


@router.post("/kill", response_model=KillResult, summary="Kill switch: every flag to safe value")
def kill(request: Request, body: ReasonBody, who: AdminPrincipal) -> KillResult:
    return KillResult(changed=plane(request).flags.kill(actor=who.name, reason=body.reason))


@router.post(
    "/restore",
    response_model=KillResult,
    summary="Undo the last kill switch",
    responses={409: {"description": "the kill switch is not engaged"}},
)
def restore(request: Request, body: ReasonBody, who: AdminPrincipal) -> KillResult:
    try:
        changed = plane(request).flags.restore(actor=who.name, reason=body.reason)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return KillResult(changed=changed)


@router.post(
    "/evaluate",
    response_model=Evaluation,
    summary="Evaluate a flag for a context, as the store stands now",
)
def evaluate(request: Request, body: EvaluateBody, _: ReadPrincipal) -> Evaluation:
    from safeship.flags.flagset import FlagSet

    state = plane(request).flags.state()[1]
    flagset = FlagSet.from_unleash(state)
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


@router.get("/{name}", response_model=FlagOut, summary="One flag")
def get_flag(request: Request, name: FlagName, _: ReadPrincipal) -> FlagOut:
    return _change(request, lambda cp: cp.flags.get(name))


@router.put("/{name}", response_model=FlagOut, summary="Replace a flag's definition or metadata")
def update_flag(request: Request, name: FlagName, body: FlagUpdate, who: AdminPrincipal) -> FlagOut:
    metadata = body.model_dump(
        include={"description", "owner", "safe_value", "lifetime_days"}, exclude_none=True
    )
    definition = body.definition

    def edit(feature: dict[str, Any]) -> dict[str, Any]:
        return dict(definition) if definition is not None else feature

    return _change(
        request,
        lambda cp: cp.flags.change(
            name, edit, actor=who.name, action="flag.update", reason=body.reason, metadata=metadata
        ),
    )


@router.delete("/{name}", status_code=204, summary="Delete a flag")
def delete_flag(
    request: Request,
    name: FlagName,
    who: AdminPrincipal,
    reason: Annotated[str | None, Query(max_length=2000)] = None,
) -> None:
    with translated_errors():
        plane(request).flags.delete(name, actor=who.name, reason=reason)


@router.post("/{name}/enable", response_model=FlagOut, summary="Turn a flag on")
def enable(request: Request, name: FlagName, body: ReasonBody, who: AdminPrincipal) -> FlagOut:
    return _change(
        request, lambda cp: cp.flags.set_enabled(name, True, actor=who.name, reason=body.reason)
    )


@router.post("/{name}/disable", response_model=FlagOut, summary="Turn a flag off")
def disable(request: Request, name: FlagName, body: ReasonBody, who: AdminPrincipal) -> FlagOut:
    return _change(
        request, lambda cp: cp.flags.set_enabled(name, False, actor=who.name, reason=body.reason)
    )


@router.post("/{name}/rollout", response_model=FlagOut, summary="Roll out to a percentage")
def rollout(request: Request, name: FlagName, body: RolloutBody, who: AdminPrincipal) -> FlagOut:
    return _change(
        request,
        lambda cp: cp.flags.rollout(
            name, body.percent, actor=who.name, stickiness=body.stickiness, reason=body.reason
        ),
    )


@router.post("/{name}/target", response_model=FlagOut, summary="Turn on for listed ids")
def target(request: Request, name: FlagName, body: TargetBody, who: AdminPrincipal) -> FlagOut:
    return _change(
        request,
        lambda cp: cp.flags.target(
            name, body.values, actor=who.name, field=body.field, reason=body.reason
        ),
    )


@router.post("/{name}/schedule", response_model=FlagOut, summary="Enable at / disable at")
def schedule(request: Request, name: FlagName, body: ScheduleBody, who: AdminPrincipal) -> FlagOut:
    return _change(
        request,
        lambda cp: cp.flags.schedule(
            name,
            actor=who.name,
            enable_at=body.enable_at,
            disable_at=body.disable_at,
            reason=body.reason,
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
