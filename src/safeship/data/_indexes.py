"""Index and table health on PostgreSQL, read from the catalogue and the statistics views.

Each check is one visible query.  Unused indexes are judged against when the statistics
were last reset (an index unused since yesterday's reset proves little); invalid ones are
usually a failed ``CREATE INDEX CONCURRENTLY``; duplicates and overlaps cost writes for no
reads; a foreign key without an index makes deletes on the parent scan the child; bloat
is estimated from dead tuples; sequences are compared with the type of the column they feed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

__all__ = ["IndexHealth", "index_health"]

_UNUSED = """
SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index,
       pg_relation_size(s.indexrelid) AS bytes, s.idx_scan AS scans
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
ORDER BY pg_relation_size(s.indexrelid) DESC LIMIT :limit
"""
_SCANS = """
SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index, s.idx_scan AS scans,
       pg_relation_size(s.indexrelid) AS bytes, {last} AS last_used
FROM pg_stat_user_indexes s ORDER BY s.idx_scan DESC, s.indexrelname LIMIT :limit
"""
_INVALID = """
SELECT n.nspname AS schema, t.relname AS table, c.relname AS index
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3
"""
# Two indexes of one table on the same expression-free keys, same operator classes and
# predicate: equal keys are duplicates; a key list that starts the other's is an overlap.
_DUPLICATES = """
SELECT n.nspname AS schema, t.relname AS table, a.relname AS index, b.relname AS covered_by,
       (ia.indkey::text = ib.indkey::text) AS duplicate
FROM pg_index ia JOIN pg_index ib ON ia.indrelid = ib.indrelid AND ia.indexrelid <> ib.indexrelid
JOIN pg_class a ON a.oid = ia.indexrelid JOIN pg_class b ON b.oid = ib.indexrelid
JOIN pg_class t ON t.oid = ia.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE ia.indexprs IS NULL AND ib.indexprs IS NULL
  AND ia.indpred IS NULL AND ib.indpred IS NULL AND NOT ia.indisprimary
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND ((ia.indkey::text <> ib.indkey::text AND NOT ia.indisunique
        AND (ib.indkey::text || ' ') LIKE (ia.indkey::text || ' %'))
    OR (ia.indkey::text = ib.indkey::text AND ia.indclass::text = ib.indclass::text
        AND (ia.indisunique < ib.indisunique
             OR (ia.indisunique = ib.indisunique AND a.oid > b.oid))))
ORDER BY 1, 2, 3
"""
_FK_WITHOUT_INDEX = """
SELECT n.nspname AS schema, t.relname AS table, c.conname AS constraint,
       (SELECT string_agg(attname, ', ' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY
        AS k(num, ord) JOIN pg_attribute ON attrelid = c.conrelid AND attnum = k.num) AS columns
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f' AND NOT EXISTS (
  SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid
  AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] @> c.conkey
  AND (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] <@ c.conkey)
ORDER BY 1, 2, 3
"""
_BLOAT = """
SELECT schemaname AS schema, relname AS table, n_live_tup AS live, n_dead_tup AS dead,
       round(n_dead_tup::numeric / greatest(n_live_tup + n_dead_tup, 1), 3) AS dead_ratio,
       pg_total_relation_size(relid) AS bytes
FROM pg_stat_user_tables
WHERE n_dead_tup > 1000 AND n_dead_tup::numeric / greatest(n_live_tup + n_dead_tup, 1) > :ratio
ORDER BY n_dead_tup DESC LIMIT :limit
"""
_SEQUENCES = """
SELECT s.schemaname AS schema, s.sequencename AS sequence, s.last_value AS last_value,
       CASE coalesce(format_type(a.atttypid, NULL), s.data_type::text)
         WHEN 'smallint' THEN 32767 WHEN 'integer' THEN 2147483647 ELSE s.max_value END
         AS max_value,
       coalesce(format_type(a.atttypid, NULL), s.data_type::text) AS column_type
FROM pg_sequences s
JOIN pg_class c ON c.relname = s.sequencename
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
LEFT JOIN pg_depend d ON d.objid = c.oid AND d.deptype IN ('a', 'i')
  AND d.refobjsubid > 0 AND d.classid = 'pg_class'::regclass
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE s.last_value IS NOT NULL
"""
_SLOW = """
SELECT left(query, 300) AS query, calls, round(mean_exec_time::numeric, 2) AS mean_ms,
       round(total_exec_time::numeric, 1) AS total_ms
FROM pg_stat_statements WHERE calls > 0 ORDER BY mean_exec_time DESC LIMIT :limit
"""


@dataclass(frozen=True, slots=True)
class IndexHealth:
    """Everything the doctor found; each list holds plain rows (dicts) for the page and JSON."""

    stats_reset: datetime | None
    unused: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    fk_without_index: list[dict[str, Any]] = field(default_factory=list)
    bloat: list[dict[str, Any]] = field(default_factory=list)
    sequences: list[dict[str, Any]] = field(default_factory=list)
    scans: list[dict[str, Any]] = field(default_factory=list)
    slow_queries: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stats_reset"] = None if self.stats_reset is None else self.stats_reset.isoformat()
        return out

    def problems(self) -> list[str]:
        """One line per finding worth acting on."""
        lines = [f"INVALID index {r['schema']}.{r['index']} on {r['table']}" for r in self.invalid]
        lines += [
            f"{'duplicate' if r['duplicate'] else 'overlapping'} index {r['schema']}.{r['index']}"
            f" (covered by {r['covered_by']})"
            for r in self.duplicates
        ]
        lines += [
            f"foreign key {r['constraint']} on {r['schema']}.{r['table']}({r['columns']})"
            " has no index"
            for r in self.fk_without_index
        ]
        since = "" if self.stats_reset is None else f" since {self.stats_reset:%Y-%m-%d %H:%M}"
        lines += [f"unused index {r['schema']}.{r['index']}{since}" for r in self.unused]
        lines += [
            f"sequence {r['schema']}.{r['sequence']} at {r['used']:.0%} of its {r['column_type']}"
            for r in self.sequences
        ]
        lines += [
            f"table {r['schema']}.{r['table']} is {float(r['dead_ratio']):.0%} dead tuples"
            for r in self.bloat
        ]
        return lines


def _rows(conn: sa.Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


def index_health(
    conn: sa.Connection,
    *,
    limit: int = 50,
    sequence_threshold: float = 0.75,
    dead_ratio: float = 0.2,
) -> IndexHealth:
    """Run every check on ``conn`` (PostgreSQL only); nothing is changed."""
    if conn.dialect.name != "postgresql":
        raise ValueError("index_health needs PostgreSQL")
    limit = max(1, min(limit, 500))
    reset = conn.execute(
        sa.text("SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()")
    ).scalar()
    version = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
    last = "s.last_idx_scan" if version >= 160000 else "NULL::timestamptz"
    sequences = []
    for row in _rows(conn, _SEQUENCES):
        used = int(row["last_value"]) / int(row["max_value"])
        if used >= sequence_threshold:
            sequences.append({**row, "used": round(used, 4)})
    return IndexHealth(
        stats_reset=reset,
        unused=_rows(conn, _UNUSED, limit=limit),
        invalid=_rows(conn, _INVALID),
        duplicates=_rows(conn, _DUPLICATES),
        fk_without_index=_rows(conn, _FK_WITHOUT_INDEX),
        bloat=_rows(conn, _BLOAT, ratio=dead_ratio, limit=limit),
        sequences=sequences,
        scans=_rows(conn, _SCANS.format(last=last), limit=limit),
        slow_queries=_slow_queries(conn, limit),
    )


def _slow_queries(conn: sa.Connection, limit: int) -> list[dict[str, Any]] | None:
    """The slowest statements by mean time, or ``None`` without pg_stat_statements."""
    present = conn.execute(
        sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    ).scalar()
    if not present:
        return None
    try:
        with conn.begin_nested():
            return _rows(conn, _SLOW, limit=limit)
    except sa.exc.DBAPIError:  # not preloaded, or no permission: report it as absent
        return None
