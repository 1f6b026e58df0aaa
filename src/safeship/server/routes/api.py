"""JSON API of the control plane: identity, component status, audit trail, API keys."""

from __future__ import annotations

from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import AfterValidator, BaseModel, Field

from safeship.db._audit import list_audit
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.inputs import Body, Reason, Text, clean_param
from safeship.server.keys import create_key, list_keys, revoke_key
from safeship.server.state import plane

router = APIRouter(prefix="/api/v1", tags=["control plane"])
#: Query and path text: bounded, and free of what no database stores (NUL, lone surrogates).
AuditTarget = Annotated[str | None, Query(max_length=300), AfterValidator(clean_param)]
KeyName = Annotated[str, Path(min_length=1, max_length=100), AfterValidator(clean_param)]


class Me(BaseModel):
    name: str
    scope: str


class AuditEntry(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    target: str
    before: object = None
    after: object = None
    reason: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_before_id: int | None = Field(description="Pass as before_id for the next page.")


class KeyInfo(BaseModel):
    name: str
    scope: str
    created_at: str
    revoked: bool


class NewKey(Body):
    name: Annotated[Text, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]
    scope: Literal["read", "admin", "frontend"]
    reason: Reason = None


class CreatedKey(BaseModel):
    name: str
    scope: str
    key: str = Field(description="Shown once; only its SHA-256 digest is stored.")


class ReasonBody(Body):
    reason: Reason = None


@router.get("/me", response_model=Me, summary="Who the presented key is")
def me(principal: ReadPrincipal) -> Me:
    return Me(name=principal.name, scope=principal.scope)


@router.get("/status", summary="Health of every component")
async def status(request: Request, _: ReadPrincipal) -> dict[str, object]:
    report = await plane(request).health.run("readiness")
    return report.to_dict()


@router.get("/audit", response_model=AuditPage, summary="Audit trail, newest first")
def audit(
    request: Request,
    _: ReadPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    target: AuditTarget = None,
) -> AuditPage:
    with plane(request).engine.connect() as conn:
        records = list_audit(conn, limit=limit, before_id=before_id, target=target)
    items = [AuditEntry(**r.to_dict()) for r in records]
    next_id = records[-1].id if len(records) == limit else None
    return AuditPage(items=items, next_before_id=next_id)


@router.get("/keys", response_model=list[KeyInfo], summary="Stored API keys (no secrets)")
def keys(request: Request, _: AdminPrincipal) -> list[KeyInfo]:
    with plane(request).engine.connect() as conn:
        return [KeyInfo(**k) for k in list_keys(conn)]  # type: ignore[arg-type]


@router.post(
    "/keys",
    response_model=CreatedKey,
    status_code=201,
    summary="Create an API key",
    responses={409: {"description": "the name is taken"}},
)
def add_key(request: Request, body: NewKey, principal: AdminPrincipal) -> CreatedKey:
    cp = plane(request)
    try:
        with cp.engine.begin() as conn:
            key = create_key(
                conn, name=body.name, scope=body.scope, actor=principal.actor, reason=body.reason
            )
    except KeyError as exc:
        raise HTTPException(409, str(exc.args[0])) from None
    except sa.exc.IntegrityError:
        raise HTTPException(409, f"a key named {body.name!r} exists") from None
    cp.keys.refresh()
    return CreatedKey(name=body.name, scope=body.scope, key=key)


@router.post(
    "/keys/{name}/revoke",
    status_code=204,
    summary="Revoke an API key",
    responses={404: {"description": "no active key has that name"}},
)
def remove_key(
    request: Request,
    name: KeyName,
    body: ReasonBody,
    principal: AdminPrincipal,
) -> None:
    cp = plane(request)
    with cp.engine.begin() as conn:
        revoked = revoke_key(
            conn,
            name=name,
            actor=principal.actor,
            reason=body.reason,
            settings_key=cp.keys.settings_key(name),
        )
        if not revoked:
            raise HTTPException(404, f"no active key named {name!r}")
    cp.keys.refresh()
