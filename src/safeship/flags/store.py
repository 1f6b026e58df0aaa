"""The flag store: flags in safeship's tables, versioned, every change audited.

Each change is one transaction that first bumps the store's version (a single row, so
writers serialise and versions only grow; every read after it in the transaction sees the
latest committed flags), then writes the flag, writes the audit record, and on PostgreSQL
sends ``NOTIFY safeship_flags`` (delivered at commit) so live clients refresh at once.
Every write is checked as a change of the whole state before anything is written
(``safeship.flags._validation``), and a caller may pass the version it read
(``expected_version``): a flag changed since is refused with ``FlagVersionError``.

Every write also takes the caller's connection (``conn=``): the change is then made in a
savepoint of the caller's transaction and commits (or rolls back) with the caller's other
writes, such as a rollout's row and decision.  Announcements follow the commit only:
PostgreSQL delivers the NOTIFY at commit and drops it on rollback; the ``publish``
callback (Redis) runs after a ``FlagStore.begin()`` block commits, with the newest
version written in it, and never when it rolls back.  In a transaction opened elsewhere
the callback is not called (live clients' polling catches up); open it with
``store.begin()`` or ``store.begin(connection)`` to have it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from safeship.db._audit import AuditRecord, list_audit, record_audit
from safeship.db._schema import flag_segments, flag_state, flags
from safeship.db._transaction import hold_write_lock, savepoint
from safeship.errors import SafeshipError
from safeship.flags import _authoring as authoring
from safeship.flags._authoring import FlagDefinitionError
from safeship.flags._model import FlagProblem
from safeship.flags._records import (
    FlagRecord,
    aware,
    copy_json,
    record_from_row,
    stale_reasons,
    stored_definition,
)
from safeship.flags._validation import (
    MAX_DESCRIPTION,
    StateView,
    check_change,
    check_json,
    check_metadata,
    check_segment,
    import_entries,
)

__all__ = [
    "MAX_DESCRIPTION",
    "NOTIFY_CHANNEL",
    "FlagExistsError",
    "FlagInUseError",
    "FlagNotFoundError",
    "FlagRecord",
    "FlagStore",
    "FlagVersionError",
    "load_view",
    "validate_definition",
]
NOTIFY_CHANNEL = "safeship_flags"
_PENDING = "safeship_flag_pending"  # versions written in a FlagStore.begin() block
_BUMPED = "safeship_flag_bumped"  # the version of the write in progress


class FlagNotFoundError(SafeshipError, KeyError):
    """No flag has that name."""

    def __str__(self) -> str:
        return f"no flag named {self.args[0]!r}"


class FlagExistsError(SafeshipError, ValueError):
    """A flag with that name exists already."""


class FlagVersionError(SafeshipError, ValueError):
    """The flag changed since the version the caller read: read it again, then retry."""

    def __init__(self, name: str, *, expected: int, current: int) -> None:
        super().__init__(
            f"flag {name!r} is at version {current}, not {expected}: it changed since it "
            "was read; read it again and retry"
        )
        self.name = name
        self.expected = expected
        self.current = current


class FlagInUseError(SafeshipError, ValueError):
    """The change would break flags that depend on this one; the message names them."""


class _Unchanged(Exception):  # noqa: N818 - control flow: roll the version bump back
    def __init__(self, row: sa.RowMapping) -> None:
        self.row = row


def validate_definition(definition: Mapping[str, Any], segments: Iterable[Any] = ()) -> None:
    """Check ``definition`` alone (with ``segments``); raise ``FlagDefinitionError`` if unusable."""
    if not isinstance(definition, Mapping):
        raise FlagDefinitionError("definition: must be an object in Unleash's feature format")
    name = authoring.check_name(definition.get("name"))
    check_json(definition, "definition")
    found = {check_segment(s, f"segments[{i}]"): s for i, s in enumerate(segments)}
    after = StateView({name: dict(definition)}, found)
    check_change(StateView(segments=found), after, flags=[name])


def load_view(conn: sa.Connection) -> StateView:
    """Every stored flag and segment, for checking a change against (``validation``)."""
    features = {
        r.name: r.definition for r in conn.execute(sa.select(flags.c.name, flags.c.definition))
    }
    segments = {
        r.id: r.definition
        for r in conn.execute(sa.select(flag_segments.c.id, flag_segments.c.definition))
    }
    return StateView(features, segments)


class FlagStore:
    """Reads and changes flags on ``engine`` (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine, *, publish: Callable[[int], None] | None = None) -> None:
        """``publish`` is called with the new version after each change commits (e.g. to
        announce it on Redis; PostgreSQL's NOTIFY needs nothing extra)."""
        self.engine = engine
        self._publish = publish

    @contextlib.contextmanager
    def begin(self, connection: sa.Connection | None = None) -> Iterator[sa.Connection]:
        """A transaction for flag changes (``conn=``) and the caller's own writes: all of
        it commits together, then the newest flag version written is published (never
        when it rolls back).  ``connection``, not yet in a transaction, is used instead
        of a new connection of the store's engine.  On SQLite it holds the write lock."""
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(self.engine.connect()) if connection is None else connection
            stack.enter_context(conn.begin())
            hold_write_lock(conn)
            pending: list[int] = []
            conn.info[_PENDING] = pending
            try:
                yield conn
            finally:
                conn.info.pop(_PENDING, None)
        if pending and self._publish is not None:
            self._publish(max(pending))

    @contextlib.contextmanager
    def _writing(self, conn: sa.Connection | None) -> Iterator[sa.Connection]:
        """One write: in a transaction of its own, or in a savepoint of the caller's on
        ``conn`` (a refused write undoes only itself).  Its version joins the ``begin()``
        block's announcement once the write is through."""
        with self.begin() if conn is None else savepoint(conn) as tx:
            tx.info.pop(_BUMPED, None)
            try:
                yield tx
            finally:
                version = tx.info.pop(_BUMPED, None)
            pending = tx.info.get(_PENDING)
            if version is not None and pending is not None:
                pending.append(int(version))

    # -- reading ---------------------------------------------------------------------

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(flag_state.c.version)).scalar_one())

    def state(self) -> tuple[int, dict[str, Any]]:
        """The version and the whole state in Unleash's format, read consistently."""
        with self.engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            version = int(conn.execute(sa.select(flag_state.c.version)).scalar_one())
            features = [
                copy_json(r.definition)
                for r in conn.execute(sa.select(flags.c.definition).order_by(flags.c.name))
            ]
            segments = [
                copy_json(r.definition)
                for r in conn.execute(
                    sa.select(flag_segments.c.definition).order_by(flag_segments.c.id)
                )
            ]
        return version, {"version": 1, "features": features, "segments": segments}

    def all(self) -> list[FlagRecord]:
        with self.engine.connect() as conn:
            return [
                record_from_row(r)
                for r in conn.execute(sa.select(flags).order_by(flags.c.name)).mappings()
            ]

    def get(self, name: str, *, conn: sa.Connection | None = None) -> FlagRecord:
        """The flag ``name`` (as ``conn``'s transaction sees it, when given)."""
        if conn is not None:
            return self._read(conn, name)
        with self.engine.connect() as own:
            return self._read(own, name)

    @staticmethod
    def _read(conn: sa.Connection, name: str) -> FlagRecord:
        row = conn.execute(sa.select(flags).where(flags.c.name == name)).mappings().first()
        if row is None:
            raise FlagNotFoundError(name)
        return record_from_row(row)

    def history(self, name: str, *, limit: int = 50) -> list[AuditRecord]:
        with self.engine.connect() as conn:
            return list_audit(conn, limit=limit, target=f"flag:{name}")

    def killed_at(self) -> datetime | None:
        with self.engine.connect() as conn:
            return aware(conn.execute(sa.select(flag_state.c.killed_at)).scalar_one())

    # -- changing --------------------------------------------------------------------

    def _bump(self, conn: sa.Connection) -> int:
        version = int(
            conn.execute(
                sa.update(flag_state)
                .where(flag_state.c.id == 1)
                .values(version=flag_state.c.version + 1)
                .returning(flag_state.c.version)
            ).scalar_one()
        )
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, str(version))))
        conn.info[_BUMPED] = version
        return version

    def create(
        self,
        name: str,
        *,
        actor: str,
        definition: Mapping[str, Any] | None = None,
        description: str | None = None,
        owner: str | None = None,
        safe_value: bool = False,
        lifetime_days: int | None = None,
        reason: str | None = None,
        conn: sa.Connection | None = None,
    ) -> FlagRecord:
        """Add a flag (off, on for everyone when enabled, unless ``definition`` says more)."""
        name = authoring.check_name(name)
        if definition is not None and not isinstance(definition, Mapping):
            raise FlagDefinitionError("definition: must be an object in Unleash's feature format")
        feature = {**definition, "name": name} if definition else authoring.new_feature(name)
        check_json(feature, "definition")
        check_metadata(description, lifetime_days, owner=owner)
        now = datetime.now(UTC)
        try:
            with self._writing(conn) as conn:
                version = self._bump(conn)  # first: the writers' lock, so the check is current
                if conn.execute(sa.select(flags.c.name).where(flags.c.name == name)).first():
                    raise FlagExistsError(f"a flag named {name!r} exists; update it instead")
                view = load_view(conn)
                check_change(view, view.with_features([feature]), flags=[name])
                conn.execute(
                    sa.insert(flags).values(
                        name=name,
                        definition=feature,
                        description=description,
                        owner=owner,
                        safe_value=safe_value,
                        lifetime_days=lifetime_days,
                        version=version,
                        created_at=now,
                        updated_at=now,
                        updated_by=actor,
                    )
                )
                self._audit(conn, actor, "flag.create", name, after=feature, reason=reason, at=now)
                created = self._read(conn, name)
        except sa.exc.IntegrityError:  # a writer that did not take the lock got there first
            raise FlagExistsError(f"a flag named {name!r} exists; update it instead") from None
        return created

    @staticmethod
    def _audit(conn: sa.Connection, actor: str, action: str, name: str, **fields: Any) -> None:
        record_audit(conn, actor=actor, action=action, target=f"flag:{name}", **fields)

    def change(
        self,
        name: str,
        edit: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        actor: str,
        action: str,
        reason: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
        conn: sa.Connection | None = None,
    ) -> FlagRecord:
        """Apply ``edit`` to the flag's definition in one audited, versioned transaction
        (the caller's, on ``conn``).

        With ``expected_version``, a flag no longer at that version raises
        ``FlagVersionError`` and nothing changes.
        """
        values: dict[str, Any] = dict(metadata or {})
        check_metadata(values.get("description"), values.get("lifetime_days"), values.get("owner"))
        try:
            with self._writing(conn) as conn:
                version = self._bump(conn)  # first: the writers' lock, so the read is current
                row = self._locked_row(conn, name, expected_version)
                before = stored_definition(row["definition"], name)
                after = edit(copy.deepcopy(before))
                if not isinstance(after, Mapping):
                    raise FlagDefinitionError("definition: must be an object")
                after = {**after, "name": name}
                if after == before and not values:
                    raise _Unchanged(row)
                check_json(after, "definition")
                view = load_view(conn)
                check_change(view, view.with_features([after]), flags=[name])
                now = datetime.now(UTC)
                conn.execute(
                    sa.update(flags)
                    .where(flags.c.name == name)
                    .values(
                        definition=after,
                        version=version,
                        updated_at=now,
                        updated_by=actor,
                        **values,
                    )
                )
                self._audit(
                    conn, actor, action, name, before=before, after=after, reason=reason, at=now
                )
                changed = self._read(conn, name)
        except _Unchanged as unchanged:
            return record_from_row(unchanged.row)
        return changed

    @staticmethod
    def _locked_row(conn: sa.Connection, name: str, expected_version: int | None) -> sa.RowMapping:
        query = sa.select(flags).where(flags.c.name == name)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise FlagNotFoundError(name)
        if expected_version is not None and int(row["version"]) != expected_version:
            raise FlagVersionError(name, expected=expected_version, current=int(row["version"]))
        return row

    def set_enabled(
        self,
        name: str,
        enabled: bool,
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
        conn: sa.Connection | None = None,
    ) -> FlagRecord:
        return self.change(
            name,
            lambda f: authoring.set_enabled(f, enabled),
            actor=actor,
            action="flag.enable" if enabled else "flag.disable",
            reason=reason,
            expected_version=expected_version,
            conn=conn,
        )

    def rollout(
        self,
        name: str,
        percent: str | float,
        *,
        actor: str,
        stickiness: str | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        conn: sa.Connection | None = None,
    ) -> FlagRecord:
        def edit(feature: dict[str, Any]) -> dict[str, Any]:
            return authoring.set_enabled(
                authoring.rollout(feature, percent, stickiness=stickiness), True
            )

        return self.change(
            name,
            edit,
            actor=actor,
            action="flag.rollout",
            reason=reason,
            expected_version=expected_version,
            conn=conn,
        )

    def target(
        self,
        name: str,
        values: list[str],
        *,
        actor: str,
        field: str = "userId",
        reason: str | None = None,
        expected_version: int | None = None,
        conn: sa.Connection | None = None,
    ) -> FlagRecord:
        return self.change(
            name,
            lambda f: authoring.target(f, values, field=field),
            actor=actor,
            action="flag.target",
            reason=reason,
            expected_version=expected_version,
            conn=conn,
        )

    def schedule(
        self,
        name: str,
        *,
        actor: str,
        enable_at: datetime | None = None,
        disable_at: datetime | None = None,
        reason: str | None = None,
        expected_version: int | None = None,
        conn: sa.Connection | None = None,
    ) -> FlagRecord:
        return self.change(
            name,
            lambda f: authoring.schedule(f, enable_at=enable_at, disable_at=disable_at),
            actor=actor,
            action="flag.schedule",
            reason=reason,
            expected_version=expected_version,
            conn=conn,
        )

    def delete(
        self,
        name: str,
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Delete a flag; refused (``FlagInUseError``) while other flags depend on it."""
        with self._writing(conn) as conn:
            self._bump(conn)  # first: the writers' lock, so the checks below are current
            row = self._locked_row(conn, name, expected_version)
            view = load_view(conn)
            try:
                check_change(view, view.without_feature(name), flags=[name])
            except FlagDefinitionError as exc:
                raise FlagInUseError(f"flag {name!r} cannot be deleted: {exc.problem}") from None
            conn.execute(sa.delete(flags).where(flags.c.name == name))
            self._audit(
                conn,
                actor,
                "flag.delete",
                name,
                before=copy_json(row["definition"]),
                reason=reason,
            )

    def kill(
        self, *, actor: str, reason: str | None = None, conn: sa.Connection | None = None
    ) -> dict[str, bool]:
        """Every flag back to its safe value (off unless declared) in one audited transaction.

        Returns what changed (name -> new enabled).  ``restore`` undoes it after review.
        """
        now = datetime.now(UTC)
        with self._writing(conn) as conn:
            # First, as every writer does: the flag rows are locked only after it.
            version = self._bump(conn)
            query = sa.select(flags.c.name, flags.c.definition, flags.c.safe_value)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            rows = conn.execute(query).all()
            changed = {
                r.name: bool(r.safe_value)
                for r in rows
                if bool(stored_definition(r.definition, r.name).get("enabled"))
                != bool(r.safe_value)
            }
            before = {
                r.name: bool(stored_definition(r.definition, r.name).get("enabled"))
                for r in rows
                if r.name in changed
            }
            for row in rows:
                if row.name in changed:
                    definition = authoring.set_enabled(
                        stored_definition(row.definition, row.name), changed[row.name]
                    )
                    conn.execute(
                        sa.update(flags)
                        .where(flags.c.name == row.name)
                        .values(
                            definition=definition, version=version, updated_at=now, updated_by=actor
                        )
                    )
            conn.execute(sa.update(flag_state).values(killed_at=now))
            record_audit(
                conn,
                actor=actor,
                action="flags.kill",
                target="flags:*",
                before=before,
                after=changed,
                reason=reason,
                at=now,
            )
        return changed

    def restore(
        self, *, actor: str, reason: str | None = None, conn: sa.Connection | None = None
    ) -> dict[str, bool]:
        """Undo the last kill switch for flags still at the value the kill set."""
        now = datetime.now(UTC)
        with self._writing(conn) as conn:
            kills = list_audit(conn, limit=1, target="flags:*")
            if not kills or kills[0].action != "flags.kill":
                raise ValueError("the kill switch is not engaged: nothing to restore")
            before: dict[str, bool] = dict(kills[0].before or {})
            after: dict[str, bool] = dict(kills[0].after or {})
            version = self._bump(conn)
            restored: dict[str, bool] = {}
            for name, enabled in before.items():
                row = conn.execute(
                    sa.select(flags.c.definition).where(flags.c.name == name)
                ).first()
                if row is None or bool(row.definition.get("enabled")) != after.get(name):
                    continue  # deleted or changed by hand since the kill: leave it
                conn.execute(
                    sa.update(flags)
                    .where(flags.c.name == name)
                    .values(
                        definition=authoring.set_enabled(dict(row.definition), enabled),
                        version=version,
                        updated_at=now,
                        updated_by=actor,
                    )
                )
                restored[name] = enabled
            conn.execute(sa.update(flag_state).values(killed_at=None))
            record_audit(
                conn,
                actor=actor,
                action="flags.restore",
                target="flags:*",
                before=after,
                after=restored,
                reason=reason,
                at=now,
            )
        return restored

    def import_unleash(
        self,
        state: Mapping[str, Any],
        *,
        actor: str,
        reason: str | None = None,
        conn: sa.Connection | None = None,
    ) -> list[str]:
        """Create or replace flags and segments from an Unleash export; one transaction.

        The whole state is checked first (``FlagDefinitionError`` names the field, such as
        ``segments[0].constraints`` or ``features[3].strategies[0].segments[0]``); nothing
        is stored unless all of it can be used.
        """
        features, segments = import_entries(state)
        names = [str(f["name"]) for f in features]
        index = {name: i for i, name in enumerate(names)}

        def locate(problem: FlagProblem) -> str:
            where = f"features[{index[problem.flag]}]" if problem.flag in index else "features"
            return f"{where}.{problem.field}".rstrip(".")

        now = datetime.now(UTC)
        with self._writing(conn) as conn:
            version = self._bump(conn)
            view = load_view(conn)
            after = view.with_features(features).with_segments(segments)
            check_change(view, after, flags=names, segments=segments, locate=locate)
            for segment_id, segment in segments.items():
                conn.execute(sa.delete(flag_segments).where(flag_segments.c.id == segment_id))
                conn.execute(sa.insert(flag_segments).values(id=segment_id, definition=segment))
            for feature in features:
                self._upsert(
                    conn,
                    feature,
                    exists=feature["name"] in view.features,
                    version=version,
                    actor=actor,
                    now=now,
                )
            record_audit(
                conn,
                actor=actor,
                action="flags.import",
                target="flags:import",
                after={"flags": names, "segments": len(segments)},
                reason=reason,
                at=now,
            )
        return names

    def _upsert(
        self,
        conn: sa.Connection,
        feature: dict[str, Any],
        *,
        exists: bool,
        version: int,
        actor: str,
        now: datetime,
    ) -> None:
        name = feature["name"]
        if exists:
            conn.execute(
                sa.update(flags)
                .where(flags.c.name == name)
                .values(definition=feature, version=version, updated_at=now, updated_by=actor)
            )
            return
        description = feature.get("description")
        conn.execute(
            sa.insert(flags).values(
                name=name,
                definition=feature,
                description=description[:MAX_DESCRIPTION] if isinstance(description, str) else None,
                safe_value=False,
                version=version,
                created_at=now,
                updated_at=now,
                updated_by=actor,
            )
        )

    def export_unleash(self) -> dict[str, Any]:
        return self.state()[1]

    def mark_evaluated(
        self,
        names: Iterable[str],
        *,
        at: datetime | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Record that these flags were evaluated (feeds the stale report)."""
        names = sorted(set(names))
        if not names:
            return
        with self._writing(conn) as conn:
            conn.execute(
                sa.update(flags)
                .where(flags.c.name.in_(names))
                .values(last_evaluated_at=at or datetime.now(UTC))
            )

    def stale(self, *, settled_days: int = 30, now: datetime | None = None) -> list[dict[str, Any]]:
        """Flags to clean up: fully on/off for ``settled_days``, never evaluated, past lifetime."""
        now = now or datetime.now(UTC)
        report = []
        for record in self.all():
            reasons = stale_reasons(record, now, settled_days)
            if reasons:
                report.append(
                    {
                        "name": record.name,
                        "reasons": reasons,
                        "updated_at": record.updated_at.isoformat(),
                    }
                )
        return report
