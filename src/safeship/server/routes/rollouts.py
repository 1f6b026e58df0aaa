"""Guarded rollouts in the control plane: the JSON API and the dashboard pages.

Every write goes through ``RolloutGuard.operate`` (or ``create``), which audits it; the
emergency endpoint rolls back every live rollout and then throws the flags' kill switch,
answering 200 when all of it was done and 207 with what could not be done otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, Field, field_validator

from safeship.db._audit import MAX_REASON
from safeship.flags import _authoring as authoring
from safeship.flags.store import FlagNotFoundError
from safeship.rollouts._emergency import EmergencyReport, emergency_rollback
from safeship.rollouts._guard import (
    Decision,
    MigrationPhase,
    RolloutExistsError,
    RolloutNotFoundError,
    RolloutRecord,
)
from safeship.rollouts._plan import Plan, next_action
from safeship.server._explain import ACTION_RULES, available_actions, explain_verdict
from safeship.server._notices import notice, notice_redirect
from safeship.server.deps import AdminPrincipal, ReadPrincipal
from safeship.server.inputs import Body, Number, Text, Whole
from safeship.server.routes.dashboard import admin_form_session, page_session, render
from safeship.server.state import ControlPlane, plane

api = APIRouter(prefix="/api/v1/rollouts", tags=["rollouts"])
pages = APIRouter(include_in_schema=False)
RolloutName = Annotated[str, Path(min_length=1, max_length=200, pattern="^[^\\x00]+$")]


def _storable(text: str | None) -> str | None:
    """Refuse what no database column can hold (PostgreSQL refuses NUL in text)."""
    if text is not None and "\x00" in text:
        raise ValueError("must not contain NUL (U+0000) characters")
    return text


Reason = Annotated[
    str | None,
    Field(max_length=MAX_REASON, description="Why, for the audit trail."),
    AfterValidator(_storable),
]
CONFIRM_WORD = "ROLLBACK"


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ADVANCE = "advance"
    ROLLBACK = "rollback"
    ABORT = "abort"
    PROMOTE = "promote"


class PlanIn(Body):
    steps: list[Number] = Field(
        default=[1.0, 5.0, 25.0, 50.0, 100.0],
        min_length=1,
        max_length=20,
        description="Strictly increasing percentages of traffic in (0, 100].",
    )
    min_hold: Number = Field(default=300.0, ge=0, le=7 * 86400, description="Seconds per step.")
    min_sample: Whole = Field(default=500, ge=0, le=10_000_000, description="Candidate requests.")

    @field_validator("steps")
    @classmethod
    def _valid_steps(cls, steps: list[float]) -> list[float]:
        Plan(steps=tuple(steps))  # a ValueError, reported at plan.steps
        return steps

    def to_plan(self) -> Plan:
        return Plan(steps=tuple(self.steps), min_hold=self.min_hold, min_sample=self.min_sample)


Revision = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        pattern="^[\\x20-\\x7e]+$",
        description="The migration's revision id, e.g. an Alembic revision.",
    ),
]
PHASE_HELP = (
    "The schema change the candidate depends on: none, expand (expand-only: rolling back "
    "stays safe) or contract (the legacy path no longer matches the schema: rollback refused)."
)


class NewRollout(Body):
    name: Text = Field(min_length=1, max_length=200, description="The rollout's flag name.")
    mode: Literal["off", "shadow", "canary", "on"] = "canary"
    plan: PlanIn = Field(default_factory=PlanIn)
    reason: Reason = None
    migration_phase: MigrationPhase = Field(default=MigrationPhase.NONE, description=PHASE_HELP)
    migration_revision: Revision = None

    @field_validator("name")
    @classmethod
    def _flag_name(cls, name: str) -> str:
        return authoring.check_name(name)


class ActionBody(Body):
    reason: Reason = None
    version: Whole | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="The rollout's version you decided on: 409 if it moved since.",
    )


class PhaseBody(Body):
    phase: MigrationPhase = Field(description=PHASE_HELP)
    revision: Revision = None
    reason: Reason = None
    version: Whole | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="The rollout's version you decided on: 409 if it moved since.",
    )


class EmergencyBody(Body):
    confirm: Literal["ROLLBACK"] = Field(description="Type ROLLBACK to confirm.")
    reason: Reason = None


class ArmStats(BaseModel):
    requests: int
    errors: int
    error_rate: float | None
    p50: float | None = Field(description="Seconds (upper edge of the histogram bucket).")
    p95: float | None
    p99: float | None


class SeriesArm(BaseModel):
    requests: int
    error_rate: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class SeriesPoint(BaseModel):
    at: str
    control: SeriesArm
    candidate: SeriesArm


class DecisionOut(BaseModel):
    id: int
    rollout: str
    at: str
    kind: str
    actor: str
    step: int
    percent: float
    evidence: Any
    reason: str | None


class RolloutOut(BaseModel):
    name: str
    mode: str
    status: str
    step: int = Field(description="Index into plan.steps.")
    percent: float = Field(description="Candidate traffic the plan gives now (0 once undone).")
    plan: dict[str, Any]
    step_started_at: str
    version: int
    migration_phase: MigrationPhase = Field(description=PHASE_HELP)
    migration_revision: str | None
    rollback_safe: bool = Field(description="False after a contract migration.")
    flag_enabled: bool | None = Field(description="The flag in the store (None if deleted).")
    flag_percent: float | None


class ShadowSample(BaseModel):
    id: int
    at: str
    process: str
    kind: Literal["mismatch", "error"]
    diff: str | None = Field(description="Compact diff of the cleaned values (mismatches).")
    control: str | None = Field(description="Legacy's value, a capped repr.")
    candidate: str | None
    candidate_error: str | None
    candidate_ms: float | None
    context: str | None


class ShadowOut(BaseModel):
    comparisons: int = Field(description="Candidate results compared (matches + mismatches).")
    matches: int
    mismatches: int
    mismatch_rate: float | None = Field(description="mismatches / comparisons (None: none yet).")
    ignored: int = Field(description="Differences an ignore rule accepted.")
    runs: int
    candidate_errors: int
    timeouts: int
    hook_errors: int
    dropped: int = Field(description="Candidate runs dropped because the queue was full.")
    updated_at: str | None
    samples: list[ShadowSample] = Field(description="Newest mismatches and errors first.")


class RolloutDetail(RolloutOut):
    arms: dict[str, ArmStats] = Field(description="control and candidate since the start.")
    verdict: dict[str, Any]
    candidate_requests_in_step: int
    series: list[SeriesPoint]
    shadow: ShadowOut = Field(
        description="The fleet's shadow comparisons: mismatch rate and sample diffs."
    )
    decisions: list[DecisionOut]


class RolloutOutcomeOut(BaseModel):
    name: str
    outcome: Literal["rolled_back", "already_finished", "refused", "failed"]
    status: str | None = Field(description="The rollout's status after the emergency.")
    error: str | None = Field(
        description="Why it could not be rolled back (failed), or why it was refused "
        "(a contract migration: the candidate stays on)."
    )


class KillSwitchOut(BaseModel):
    thrown: bool
    error: str | None


class EmergencyOut(BaseModel):
    complete: bool = Field(description="Every live rollout undone and the kill switch thrown.")
    rolled_back: list[str]
    rollouts: list[RolloutOutcomeOut] = Field(description="One entry per live rollout.")
    kill_switch: KillSwitchOut
    flags_changed: dict[str, bool]
    problems: list[str] = Field(description="Everything that could not be done (207).")


# -- reading ---------------------------------------------------------------------------


def _flag_states(cp: ControlPlane) -> dict[str, tuple[bool, float | None]]:
    return {f.name: (f.enabled, authoring.rollout_percent(f.definition)) for f in cp.flags.all()}


def _summary(record: RolloutRecord, flag: tuple[bool, float | None] | None) -> dict[str, Any]:
    enabled, percent = flag if flag is not None else (None, None)
    return {**record.to_dict(), "flag_enabled": enabled, "flag_percent": percent}


def _decision(d: Decision) -> DecisionOut:
    return DecisionOut(**d.to_dict())


def _lookup(cp: ControlPlane, name: str) -> RolloutRecord:
    try:
        return cp.rollouts.get(name)
    except RolloutNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None


def rollout_list(cp: ControlPlane) -> list[RolloutOut]:
    flags = _flag_states(cp)
    return [RolloutOut(**_summary(r, flags.get(r.name))) for r in cp.rollouts.all()]


def rollout_detail(cp: ControlPlane, name: str) -> RolloutDetail:
    record = _lookup(cp, name)
    monitor, in_step = cp.rollouts.monitor(record)
    flags = _flag_states(cp)
    return RolloutDetail(
        **_summary(record, flags.get(name)),
        arms={k: ArmStats.model_validate(v) for k, v in monitor.summary().items()},
        verdict=monitor.verdict().to_dict(),
        candidate_requests_in_step=in_step,
        series=[SeriesPoint.model_validate(p) for p in cp.rollouts.series(name)],
        shadow=ShadowOut.model_validate(cp.rollouts.shadow(name).to_dict()),
        decisions=[_decision(d) for d in cp.rollouts.decisions(name, limit=50)],
    )


@api.get("", response_model=list[RolloutOut], summary="Every rollout's state")
def list_rollouts(request: Request, _: ReadPrincipal) -> list[RolloutOut]:
    return rollout_list(plane(request))


@api.get(
    "/{name}",
    response_model=RolloutDetail,
    summary="One rollout: arms side by side, time series, verdict and decision timeline",
    responses={404: {"description": "no rollout has that name"}},
)
def get_rollout(request: Request, name: RolloutName, _: ReadPrincipal) -> RolloutDetail:
    return rollout_detail(plane(request), name)


# -- writing ---------------------------------------------------------------------------


@api.post(
    "",
    response_model=RolloutOut,
    status_code=201,
    summary="Start a guarded rollout of a flag at its plan's first step (audited)",
    responses={409: {"description": "a rollout with that name exists"}},
)
def create_rollout(request: Request, body: NewRollout, who: AdminPrincipal) -> RolloutOut:
    cp = plane(request)
    try:
        record = cp.rollouts.create(
            body.name, actor=who.actor, plan=body.plan.to_plan(), mode=body.mode,
            reason=body.reason, migration_phase=body.migration_phase,
            migration_revision=body.migration_revision,
        )  # fmt: skip
    except RolloutExistsError as exc:
        raise HTTPException(409, str(exc)) from None
    return RolloutOut(**_summary(record, _flag_states(cp).get(record.name)))


def apply_action(
    cp: ControlPlane,
    name: str,
    action: Action,
    actor: str,
    reason: str | None,
    version: int | None = None,
) -> Decision:
    """Run an operator action; 404 for an unknown rollout, 409 when it is not live, when
    ``version`` is stale or another writer moved it first."""
    try:
        return cp.rollouts.operate(
            name, action.value, actor=actor, reason=reason, expected_version=version
        )
    except RolloutNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except FlagNotFoundError as exc:
        raise HTTPException(409, f"{exc}: the rollout's flag was deleted") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None


GateResult = Literal["promote", "wait", "fail"]


class GateOut(BaseModel):
    rollout: str
    result: GateResult = Field(
        description="promote: the guard has the evidence to go on; wait: no regression, not "
        "enough evidence yet; fail: a regression, or the guard rolled it back."
    )
    passed: bool = Field(description="False exactly when result is fail.")
    reason: str
    status: str
    step: int
    percent: float
    migration_phase: MigrationPhase
    verdict: dict[str, Any]


def rollout_gate(cp: ControlPlane, name: str) -> GateOut:
    """The guard's reading of ``name`` as a deploy tool's analysis step reads it."""
    record = _lookup(cp, name)
    monitor, in_step = cp.rollouts.monitor(record)
    verdict = monitor.verdict()
    # The guard's own step rule: promote exactly when the guard would advance or complete.
    held = (datetime.now(UTC) - record.step_started_at).total_seconds()
    action = next_action(
        plan=record.plan, status=record.status, step=record.step, verdict=verdict,
        held_seconds=held, step_candidate_requests=in_step,
    )  # fmt: skip
    result: GateResult
    if record.status in ("rolled_back", "aborted"):
        result, reason = "fail", f"the rollout is {record.status}"
    elif verdict.breach:
        result, reason = "fail", f"{verdict.breached_metric} regressed on the candidate"
    elif record.status == "completed":
        result, reason = "promote", "the rollout is completed"
    elif action in ("advance", "complete"):
        result, reason = "promote", "the candidate is no worse on every metric, on evidence"
    else:
        result, reason = "wait", "no regression; the step's hold, sample or evidence not met yet"
    return GateOut(
        rollout=name, result=result, passed=result != "fail", reason=reason,
        status=record.status, step=record.step, percent=record.percent,
        migration_phase=record.migration_phase, verdict=verdict.to_dict(),
    )  # fmt: skip


@api.get(
    "/{name}/gate",
    response_model=GateOut,
    summary="The guard as a deploy gate: promote, wait or fail (Argo Rollouts web metric)",
    responses={404: {"description": "no rollout has that name"}},
)
def gate(request: Request, name: RolloutName, _: ReadPrincipal) -> GateOut:
    return rollout_gate(plane(request), name)


@api.post(
    "/{name}/gate",
    response_model=GateOut,
    summary="The guard as a deploy gate for webhooks (Flagger): 412 when the result is fail",
    responses={
        404: {"description": "no rollout has that name"},
        412: {"model": GateOut, "description": "the result is fail: halt or roll back"},
    },
)
def gate_webhook(
    request: Request, response: Response, name: RolloutName, _: ReadPrincipal
) -> GateOut:
    # The webhook's own payload (Flagger sends its canary's name and phase) is not read:
    # the rollout in the path decides.
    reading = rollout_gate(plane(request), name)
    if not reading.passed:
        response.status_code = 412
    return reading


@api.put(
    "/{name}/migration-phase",
    response_model=RolloutOut,
    summary="Record the migration the rollout's candidate depends on (admin, audited)",
    responses={
        404: {"description": "no rollout has that name"},
        409: {"description": "the rollout is finished, or changed since `version`"},
    },
)
def set_migration_phase(
    request: Request, name: RolloutName, body: PhaseBody, who: AdminPrincipal
) -> RolloutOut:
    cp = plane(request)
    try:
        record = cp.rollouts.set_migration_phase(
            name, body.phase, actor=who.actor, revision=body.revision, reason=body.reason,
            expected_version=body.version,
        )  # fmt: skip
    except RolloutNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    except FlagNotFoundError as exc:
        raise HTTPException(409, f"{exc}: the rollout's flag was deleted") from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return RolloutOut(**_summary(record, _flag_states(cp).get(record.name)))


@api.post(
    "/{name}/{action}",
    response_model=DecisionOut,
    summary="Pause, resume, advance, roll back, abort, or promote from shadow to canary "
    "(admin, audited)",
    responses={
        404: {"description": "no rollout has that name"},
        409: {
            "description": "the rollout is finished (rolled back, aborted or completed), "
            "changed since `version` (or meanwhile), promote on a rollout not in shadow mode, "
            "or rollback/abort refused after a contract migration"
        },
    },
)
def operate(
    request: Request,
    name: RolloutName,
    action: Action,
    who: AdminPrincipal,
    body: ActionBody | None = None,
) -> DecisionOut:
    reason, version = (body.reason, body.version) if body else (None, None)
    return _decision(apply_action(plane(request), name, action, who.actor, reason, version))


def run_emergency(cp: ControlPlane, actor: str, reason: str | None) -> EmergencyReport:
    """Every live rollout rolled back, then the kill switch; see ``emergency_rollback``."""
    return emergency_rollback(cp.rollouts, actor=actor, reason=reason)


@api.post(
    "/emergency",
    response_model=EmergencyOut,
    summary="Every rollout rolled back and every flag to its safe value at once (audited)",
    responses={
        207: {
            "model": EmergencyOut,
            "description": "not everything could be done: `rollouts` says per rollout what "
            "failed and why, `kill_switch` whether it was thrown, `problems` lists each gap",
        }
    },
)
def emergency(
    request: Request, response: Response, body: EmergencyBody, who: AdminPrincipal
) -> EmergencyOut:
    report = run_emergency(plane(request), who.actor, body.reason)
    if not report.complete:
        response.status_code = 207
    return EmergencyOut.model_validate(report.to_dict())


# -- pages -----------------------------------------------------------------------------


@pages.get("/rollouts")
def rollouts_page(request: Request) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    cp = plane(request)
    return render(
        request,
        "rollouts.html",
        rollouts=[r.model_dump() for r in rollout_list(cp)],
        decisions=[d.to_dict() for d in cp.rollouts.recent_decisions(limit=20)],
        confirm_word=CONFIRM_WORD,
        message=notice(request),
    )


@pages.get("/rollouts/{name}")
def rollout_page(request: Request, name: RolloutName) -> Response:
    if page_session(request) is None:
        return RedirectResponse("/login", status_code=303)
    cp = plane(request)
    try:
        detail = rollout_detail(cp, name)
    except HTTPException:
        return render(request, "error.html", 404, message=f"No rollout named {name!r}.")
    return render(
        request,
        "rollout.html",
        r=detail.model_dump(),
        actions=list(Action),
        available=available_actions(detail.status, detail.mode),
        rules=ACTION_RULES,
        explain=_explanation(cp, detail),
    )


def _explanation(cp: ControlPlane, detail: RolloutDetail) -> list[str]:
    alpha = cp.rollouts.get(detail.name).settings.alpha
    return explain_verdict(detail.verdict, alpha=alpha, status=detail.status)


@pages.get("/rollouts/{name}/explanation")
def explanation_page_data(request: Request, name: RolloutName) -> Response:
    """The page script's refresh of "What this means" (session cookie, no API key)."""
    if page_session(request) is None:
        return JSONResponse({"detail": "sign in"}, status_code=401)
    cp = plane(request)
    try:
        detail = rollout_detail(cp, name)
    except HTTPException as exc:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    return JSONResponse({"sentences": _explanation(cp, detail)})


@pages.post("/rollouts/emergency")
def emergency_form(
    request: Request,
    confirm: Annotated[str, Form(max_length=50)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    if confirm != CONFIRM_WORD:
        return render(
            request, "error.html", 422, message=f"Type {CONFIRM_WORD} to confirm the rollback."
        )
    done = run_emergency(plane(request), session.actor, "dashboard")
    message = (
        f"Emergency rollback: {len(done.rolled_back)} rollout(s), {len(done.flags_changed)} flag(s)"
    )
    if not done.complete:
        problems = "; ".join(done.problems)
        return render(request, "error.html", 207, message=f"{message}. NOT DONE: {problems}")
    return notice_redirect(request, "/rollouts", message)


@pages.post("/rollouts/{name}/action")
def action_form(
    request: Request,
    name: RolloutName,
    action: Annotated[str, Form(max_length=20)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    version: Annotated[int | None, Form(ge=1, le=2**62)] = None,
) -> Response:
    session = admin_form_session(request, csrf_token)
    if isinstance(session, Response):
        return session
    if action not in set(Action):
        return render(request, "error.html", 422, message="Unknown action.")
    # The version the page showed pins forward moves (two clicks, one step); undoing and
    # holding apply to whatever state the rollout is in now.
    pinned = version if action in (Action.ADVANCE, Action.PROMOTE) else None
    try:
        apply_action(plane(request), name, Action(action), session.actor, "dashboard", pinned)
    except HTTPException as exc:
        return render(request, "error.html", exc.status_code, message=str(exc.detail))
    return RedirectResponse(f"/rollouts/{quote(name, safe='')}", status_code=303)
