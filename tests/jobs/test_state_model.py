"""A stateful model of the job state machine, run against the real SQLite store.

Hypothesis drives enqueues, claims, outcomes (from current and from stale attempts),
heartbeats, clock jumps, orphan rescues and cancellations; after every step each job's
stored state, token ownership and attempt count must match the model.  The invariant that
matters most: an attempt whose token is not the job's current one never changes anything.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis.strategies as st
import sqlalchemy as sa
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from safeship.db import create_engine, upgrade
from safeship.jobs import JobContext, Jobs, JobState, Retry, cancel, status
from safeship.jobs._store import Outcome
from safeship.jobs._store_sqlite import SqliteStore
from safeship.jobs._worker import decide_expired

LEASE = 10.0
_DIR = tempfile.TemporaryDirectory()
_ENGINES: list[sa.Engine] = []


def _engine() -> sa.Engine:
    if not _ENGINES:
        engine = create_engine(f"sqlite:///{Path(_DIR.name) / 'model.db'}")
        upgrade(engine)
        _ENGINES.append(engine)
    return _ENGINES[0]


@dataclass
class Model:
    state: str
    token: int = 0
    attempts: int = 0
    lease_until: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    job: uuid.UUID
    token: int


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = _engine()
        with self.engine.begin() as conn:  # one migrated file for every example, emptied
            for table in ("safeship_jobs", "safeship_jobs_history"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
        self.now = datetime.now(UTC) + timedelta(hours=1)  # enqueued jobs are due at once
        self.store = SqliteStore(self.engine, clock=lambda: self.now)
        self.jobs = Jobs()

        @self.jobs.task(retry=Retry(attempts=1000, crashes=1000))
        def work(ctx: JobContext) -> None:
            return None

        self.task = work
        self.model: dict[uuid.UUID, Model] = {}
        self.attempts: list[Attempt] = []

    def teardown(self) -> None:
        self.store.close_beat()

    @rule()
    def enqueue(self) -> None:
        with self.engine.begin() as conn:
            job = self.task.enqueue(conn)
        self.model[job] = Model("pending")

    @rule(n=st.integers(1, 4))
    def claim(self, n: int) -> None:
        claimed = self.store.claim_sync(["default"], n, "w", LEASE)
        pending = [j for j, m in self.model.items() if m.state == "pending"]
        assert len(claimed) == min(n, len(pending))
        for job in claimed:
            m = self.model[job.id]
            assert m.state == "pending"
            m.state, m.token, m.attempts = "running", job.token, m.attempts + 1
            m.lease_until = self.now + timedelta(seconds=LEASE)
            assert job.token not in {a.token for a in self.attempts if a.job == job.id}
            self.attempts.append(Attempt(job.id, job.token))

    def _owns(self, attempt: Attempt) -> bool:
        m = self.model[attempt.job]
        return m.state == "running" and m.token == attempt.token

    @precondition(lambda self: self.attempts)
    @rule(data=st.data(), to=st.sampled_from(["succeeded", "dead", "cancelled", "pending", "back"]))
    def finish(self, data: st.DataObject, to: str) -> None:
        attempt = data.draw(st.sampled_from(self.attempts))
        owns = self._owns(attempt)
        state = "pending" if to == "back" else to
        outcome = Outcome(attempt.job, attempt.token, state, result="1", counts=to != "back")
        done = self.store.finish_sync([outcome])
        assert done == ({attempt.job} if owns else set())
        if owns:
            m = self.model[attempt.job]
            m.state = state
            m.token += 1 if state == "pending" else 0
            m.attempts -= 1 if to == "back" else 0

    @precondition(lambda self: self.attempts)
    @rule(data=st.data())
    def beat(self, data: st.DataObject) -> None:
        attempt = data.draw(st.sampled_from(self.attempts))
        owns = self._owns(attempt)
        ours, _ = self.store.beat([(attempt.job, attempt.token)], LEASE, {})
        assert ours == ({attempt.job} if owns else set())
        if owns:
            self.model[attempt.job].lease_until = self.now + timedelta(seconds=LEASE)

    @rule(seconds=st.sampled_from([1.0, 6.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def rescue(self) -> None:
        rescued = self.store.rescue_sync(lambda e: [decide_expired(self.jobs, x) for x in e], 100)
        expired = {
            j
            for j, m in self.model.items()
            if m.state == "running" and m.lease_until is not None and m.lease_until < self.now
        }
        assert {o.id for o in rescued} == expired
        for job in expired:
            m = self.model[job]
            m.state, m.token, m.attempts = "pending", m.token + 1, m.attempts - 1

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(sorted(self.model)))
        m = self.model[job]
        result = cancel(self.engine, job)
        if m.state in ("pending", "interrupted"):
            assert result is JobState.CANCELLED
            m.state = "cancelled"
        else:
            assert result.value == m.state

    @invariant()
    def stored_states_match_the_model(self) -> None:
        for job, m in self.model.items():
            found = status(self.engine, job)
            assert found.state.value == m.state, (job, found.state, m.state)
            assert found.attempts == m.attempts


JobMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30)
test_job_state_machine = JobMachine.TestCase
