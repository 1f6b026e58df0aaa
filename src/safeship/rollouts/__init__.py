"""Guarded rollouts: legacy vs candidate by flag, shadow experiments, automatic rollback.

    from safeship.rollouts import Rollout, RolloutGuard, GuardAgent, Plan

    listing = Rollout("orders-batched", legacy=list_n_plus_one, candidate=list_batched,
                      flags=flag_client, mode="canary")
    guard = RolloutGuard(engine, FlagStore(engine))
    guard.create("orders-batched", actor="alice", plan=Plan(steps=(1, 5, 25, 50, 100)))
    GuardAgent(guard, [listing]).start()
    orders = listing(customer_id, context={"userId": user_id})

The statistics live in ``safeship.rollouts._stats`` (see docs/rollouts.md).
"""

from safeship.rollouts._agent import GuardAgent
from safeship.rollouts._emergency import EmergencyReport, RolloutOutcome, emergency_rollback
from safeship.rollouts._guard import (
    Decision,
    MigrationPhase,
    RollbackRefusedError,
    RolloutConflictError,
    RolloutExistsError,
    RolloutFinishedError,
    RolloutGuard,
    RolloutNotFoundError,
    RolloutRecord,
)
from safeship.rollouts._monitor import ArmWindow, GuardMonitor
from safeship.rollouts._plan import Plan
from safeship.rollouts._rollout import FlagReader, Mode, Rollout
from safeship.rollouts._shadow import MismatchError, ShadowObservation, ShadowOptions
from safeship.rollouts._stats import GuardSettings, Verdict

__all__ = [
    "ArmWindow",
    "Decision",
    "EmergencyReport",
    "FlagReader",
    "GuardAgent",
    "GuardMonitor",
    "GuardSettings",
    "MigrationPhase",
    "MismatchError",
    "Mode",
    "Plan",
    "RollbackRefusedError",
    "Rollout",
    "RolloutConflictError",
    "RolloutExistsError",
    "RolloutFinishedError",
    "RolloutGuard",
    "RolloutNotFoundError",
    "RolloutOutcome",
    "RolloutRecord",
    "ShadowObservation",
    "ShadowOptions",
    "Verdict",
    "emergency_rollback",
]
