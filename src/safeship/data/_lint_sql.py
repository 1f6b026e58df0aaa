"""Rules of the migration linter over SQL text: pure functions, no database.

A statement is checked alone, then the migration as a whole (timeouts, transactions).
Inline ignores: ``-- safeship-lint: ignore[rule-id] why`` (or ``# ...`` in Python) on the
statement's first line or the line above it; an ignore without a reason is itself a finding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["RULES", "LintFinding", "Statement", "apply_ignores", "check_statements", "split_sql"]

#: Rule id -> what it protects against and what to do instead.
RULES: dict[str, str] = {
    "create-index-not-concurrently": (
        "CREATE INDEX blocks writes to the table for the whole build; "
        "use CREATE INDEX CONCURRENTLY (outside a transaction)"
    ),
    "concurrently-in-transaction": (
        "CONCURRENTLY cannot run inside a transaction block; run it in "
        "op.get_context().autocommit_block() (Alembic) or outside BEGIN/COMMIT"
    ),
    "volatile-default": (
        "ADD COLUMN with a volatile default rewrites the whole table under an ACCESS EXCLUSIVE "
        "lock; add the column without a default, backfill in batches, then set the default"
    ),
    "not-null-without-default": (
        "ADD COLUMN ... NOT NULL without a default fails on a table with rows; add it nullable "
        "(or with a constant default), backfill, then enforce NOT NULL"
    ),
    "set-not-null-without-check": (
        "SET NOT NULL scans the table under an ACCESS EXCLUSIVE lock; first ADD CONSTRAINT ... "
        "CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT, then SET NOT NULL"
    ),
    "missing-lock-timeout": (
        "a statement that takes a table lock queues every later query behind it while it waits; "
        "SET lock_timeout (and statement_timeout) first, or run with safe_upgrade"
    ),
    "ignore-without-reason": (
        "an inline ignore must say why: '-- safeship-lint: ignore[rule] reason'"
    ),
}

_VOLATILE = re.compile(
    r"\b(random|gen_random_uuid|uuid_generate_v[14]|clock_timestamp|timeofday|nextval|"
    r"txid_current|statement_timestamp)\s*\(",
    re.IGNORECASE,
)
_IGNORE = re.compile(r"safeship-lint:\s*ignore\[([a-z0-9,\- ]+)\]\s*(.*)$", re.IGNORECASE)
_LOCKING = re.compile(
    r"^\s*(ALTER\s+TABLE|CREATE\s+(UNIQUE\s+)?INDEX(?!\s+CONCURRENTLY)|DROP\s+TABLE|"
    r"DROP\s+INDEX(?!\s+CONCURRENTLY)|TRUNCATE|LOCK\s+TABLE|CREATE\s+TRIGGER|DROP\s+TRIGGER|"
    r"VACUUM\s+FULL|CLUSTER|REINDEX(?!.*CONCURRENTLY))",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class LintFinding:
    """One rule broken at one place."""

    rule: str
    path: str
    line: int
    message: str

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement (or an Alembic operation rendered as one) and where it starts."""

    sql: str
    line: int
    in_transaction: bool = True
    new_table: bool = False  # the table was created earlier in the same migration
    ignores: frozenset[str] = field(default_factory=frozenset)


def split_sql(text: str) -> Iterator[tuple[str, int]]:
    """Statements of ``text`` with their 1-based first line; quotes, dollar quotes and
    comments are respected, so a ``;`` inside them does not split."""
    start, i, n = 0, 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith("--", i):
            i = _end(text, "\n", i)
        elif text.startswith("/*", i):
            i = _end(text, "*/", i + 2)
        elif ch in "'\"":
            i = _end(text, ch, i + 1)
        elif ch == "$" and (m := re.match(r"\$[A-Za-z_]*\$", text[i:])):
            i = _end(text, m.group(0), i + len(m.group(0)))
        elif ch == ";":
            yield from _piece(text, start, i)
            start = i = i + 1
        else:
            i += 1
    yield from _piece(text, start, n)


def _end(text: str, closer: str, i: int) -> int:
    found = text.find(closer, i)
    return len(text) if found < 0 else found + len(closer)


def _piece(text: str, start: int, stop: int) -> Iterator[tuple[str, int]]:
    """The statement in ``text[start:stop]`` without its leading comment lines, and its line."""
    line = text.count("\n", 0, start) + 1
    kept: list[str] = []
    for raw in text[start:stop].splitlines():
        if not kept and (not raw.strip() or raw.strip().startswith("--")):
            line += 1
            continue
        kept.append(raw)
    body = "\n".join(kept).strip()
    if body and not all(k.strip().startswith("--") or not k.strip() for k in kept):
        yield body, line


def ignores_in(lines: list[str], line: int, path: str) -> tuple[frozenset[str], list[LintFinding]]:
    """Rules ignored for the statement starting at ``line`` (this line or the one above)."""
    rules: set[str] = set()
    problems = []
    for number in (line - 1, line):
        if 1 <= number <= len(lines) and (m := _IGNORE.search(lines[number - 1])):
            if not m.group(2).strip():
                problems.append(
                    LintFinding(
                        "ignore-without-reason", path, number, RULES["ignore-without-reason"]
                    )
                )
                continue
            rules.update(r.strip() for r in m.group(1).split(",") if r.strip())
    return frozenset(rules), problems


_ALTER_PREFIX = re.compile(r"^ALTER TABLE\s+(ONLY\s+)?(IF EXISTS\s+)?[\w.\"]+\s+", re.IGNORECASE)
_ADD_COLUMN = re.compile(
    r"^ADD\s+(COLUMN\s+)?(IF NOT EXISTS\s+)?(?!CONSTRAINT\b|PRIMARY\b|UNIQUE\b|CHECK\b|"
    r"FOREIGN\b|EXCLUDE\b)\"?(\w+)\"?\s+(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_SET_NOT_NULL = re.compile(r"^ALTER\s+(COLUMN\s+)?\"?(\w+)\"?\s+SET\s+NOT\s+NULL", re.IGNORECASE)
_CHECKED = re.compile(r"CHECK\s*\(\s*\"?(\w+)\"?\s+IS\s+NOT\s+NULL\s*\)", re.IGNORECASE)
_REWRITING_TYPE = re.compile(r"\b(BIG|SMALL)?SERIAL\b|\bGENERATED\b", re.IGNORECASE)


def _clauses(sql: str) -> list[str]:
    """The comma-separated actions of an ALTER TABLE (commas inside parentheses kept)."""
    body = _ALTER_PREFIX.sub("", sql, count=1)
    return [c.strip() for c in re.split(r",(?![^()]*\))", body) if c.strip()]


def _column_rules(clause: str) -> Iterator[str]:
    added = _ADD_COLUMN.match(clause)
    if added is None:
        return
    definition = added.group(4).upper()
    if _REWRITING_TYPE.search(definition) or (
        "DEFAULT" in definition and _VOLATILE.search(definition)
    ):
        yield "volatile-default"
    fills_itself = "DEFAULT" in definition or _REWRITING_TYPE.search(definition)
    if "NOT NULL" in definition and not fills_itself:
        yield "not-null-without-default"


def _statement_rules(st: Statement, checked: set[str], validated: bool) -> Iterator[str]:
    sql = " ".join(st.sql.split())
    upper = sql.upper()
    is_index = re.match(r"CREATE\s+(UNIQUE\s+)?INDEX\b", upper) is not None
    if is_index and "CONCURRENTLY" not in upper and not st.new_table:
        yield "create-index-not-concurrently"
    if "CONCURRENTLY" in upper and st.in_transaction:
        yield "concurrently-in-transaction"
    if upper.startswith("ALTER TABLE") and not st.new_table:
        for clause in _clauses(sql):
            yield from _column_rules(clause)
            column = _SET_NOT_NULL.match(clause)
            if column and not (column.group(2).lower() in checked and validated):
                yield "set-not-null-without-check"


def check_statements(
    statements: Iterable[Statement], path: str, *, lock_timeout_set: bool = False
) -> list[LintFinding]:
    """Every rule over one migration's statements, in order, ignores applied."""
    findings: list[LintFinding] = []
    timeout_set, validated = lock_timeout_set, False
    checked: set[str] = set()
    for st in statements:
        upper = " ".join(st.sql.upper().split())
        timeout_set = timeout_set or re.match(r"SET\s+(LOCAL\s+)?LOCK_TIMEOUT\b", upper) is not None
        checked.update(name.lower() for name in _CHECKED.findall(st.sql))
        validated = validated or "VALIDATE CONSTRAINT" in upper
        found = list(_statement_rules(st, checked, validated))
        if _LOCKING.match(upper) and not timeout_set and not st.new_table:
            found.append("missing-lock-timeout")
        findings.extend(
            LintFinding(rule, path, st.line, RULES[rule])
            for rule in found
            if rule not in st.ignores
        )
    return findings


def apply_ignores(findings: list[LintFinding], extra: list[LintFinding]) -> list[LintFinding]:
    return sorted([*findings, *extra], key=lambda f: (f.path, f.line, f.rule))
