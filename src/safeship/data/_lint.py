"""The migration linter: Alembic revision files (read with ``ast``, never imported) and
plain ``.sql`` files, checked against the rules in ``_lint_sql.RULES``.

An Alembic ``upgrade()`` is rendered to the SQL its operations mean (``op.create_index``
becomes ``CREATE INDEX ...``), in order, knowing which tables the revision itself created
(new tables hold no rows and no readers: their DDL is exempt) and which statements run in
``op.get_context().autocommit_block()`` (outside the transaction).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from safeship.data._lint_sql import (
    LintFinding,
    Statement,
    check_statements,
    ignores_in,
    split_sql,
)

__all__ = ["lint_alembic", "lint_migrations", "lint_sql"]

_MAX_FILE = 2_000_000


def lint_sql(
    text: str, path: str = "<sql>", *, runner_sets_lock_timeout: bool = False
) -> list[LintFinding]:
    """Lint a plain SQL migration; ``BEGIN`` ... ``COMMIT`` marks a transaction block."""
    lines = text.splitlines()
    statements, problems = [], []
    in_block = False
    created: set[str] = set()
    for sql, line in split_sql(text):
        head = " ".join(sql.upper().split()[:3])
        if head.startswith(("BEGIN", "START TRANSACTION")):
            in_block = True
            continue
        if head.startswith(("COMMIT", "END", "ROLLBACK")):
            in_block = False
            continue
        ignores, bad = ignores_in(lines, line, path)
        problems += bad
        table = _created_table(sql)
        if table:
            created.add(table)
        statements.append(
            Statement(sql, line, in_block, _targets(sql) & created != set() and not table, ignores)
        )
    found = check_statements(statements, path, lock_timeout_set=runner_sets_lock_timeout)
    return sorted([*found, *problems], key=lambda f: (f.line, f.rule))


def _created_table(sql: str) -> str | None:
    words = sql.replace("(", " ( ").split()
    upper = [w.upper() for w in words]
    if upper[:2] == ["CREATE", "TABLE"]:
        rest = [
            w for w, u in zip(words[2:], upper[2:], strict=True) if u not in {"IF", "NOT", "EXISTS"}
        ]
        return rest[0].strip('"').lower() if rest else None
    return None


def _targets(sql: str) -> set[str]:
    """Table names an ALTER TABLE / CREATE INDEX ... ON statement touches."""
    words = sql.replace("(", " ( ").split()
    upper = [w.upper() for w in words]
    found = set()
    for i, word in enumerate(upper[:-1]):
        if word in {"TABLE", "ON"} and upper[i + 1] not in {"IF", "ONLY"}:
            found.add(words[i + 1].strip('"').lower())
        if word in {"IF", "ONLY"} and i + 2 < len(words) and upper[i + 1] in {"EXISTS", "ONLY"}:
            found.add(words[i + 2].strip('"').lower())
    return found


# -- Alembic -------------------------------------------------------------------------


@dataclass
class _Walk:
    path: str
    lines: list[str]
    created: set[str] = field(default_factory=set)
    statements: list[Statement] = field(default_factory=list)
    problems: list[LintFinding] = field(default_factory=list)

    def add(self, sql: str, node: ast.AST, *, in_transaction: bool, table: str | None) -> None:
        line = getattr(node, "lineno", 1)
        ignores, bad = ignores_in(self.lines, line, self.path)
        self.problems += bad
        new = table is not None and table.lower() in self.created
        self.statements.append(Statement(sql, line, in_transaction, new, ignores))


def lint_alembic(
    source: str, path: str = "<alembic>", *, runner_sets_lock_timeout: bool = False
) -> list[LintFinding]:
    """Lint the ``upgrade()`` of one Alembic revision file's source."""
    tree = ast.parse(source)
    walk = _Walk(path, source.splitlines())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "upgrade":
            _body(walk, node.body, in_transaction=True, batch={})
    found = check_statements(walk.statements, path, lock_timeout_set=runner_sets_lock_timeout)
    return sorted([*found, *walk.problems], key=lambda f: (f.line, f.rule))


def _body(
    walk: _Walk, body: list[ast.stmt], *, in_transaction: bool, batch: dict[str, str]
) -> None:
    for stmt in body:
        if isinstance(stmt, ast.With):
            inner_tx, inner_batch = in_transaction, dict(batch)
            for item in stmt.items:
                text = ast.unparse(item.context_expr)
                if "autocommit_block" in text:
                    inner_tx = False
                expr, target = item.context_expr, item.optional_vars
                if "batch_alter_table" in text and isinstance(expr, ast.Call):
                    table = _text(_arg(expr, 0, "table_name"))
                    if table and isinstance(target, ast.Name):
                        inner_batch[target.id] = table
            _body(walk, stmt.body, in_transaction=inner_tx, batch=inner_batch)
        elif isinstance(stmt, ast.If | ast.For | ast.Try):
            for part in (stmt.body, getattr(stmt, "orelse", [])):
                _body(walk, part, in_transaction=in_transaction, batch=batch)
        else:
            for call in _calls(stmt):
                _operation(walk, call, in_transaction, batch)


def _calls(stmt: ast.stmt) -> Iterator[ast.Call]:
    for node in ast.walk(stmt):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node


def _operation(walk: _Walk, call: ast.Call, in_tx: bool, batch: dict[str, str]) -> None:
    assert isinstance(call.func, ast.Attribute)
    name, owner = call.func.attr, ast.unparse(call.func.value)
    table = batch.get(owner)
    if owner != "op" and table is None:
        return
    shift = 0 if table is not None else 1  # batch operations have no table argument
    if table is None:
        table = _text(_arg(call, 0, "table_name")) or ""
    if name == "create_table":
        walk.created.add(table.lower())
    elif name == "execute":
        _execute(walk, call, in_tx)
    elif name == "create_index":
        _create_index(walk, call, in_tx)
    elif name == "add_column":
        _add_column(walk, call, in_tx, table, _arg(call, shift, "column"))
    elif name == "alter_column" and _kw(call, "nullable") == "False":
        column = _text(_arg(call, shift, "column_name"))
        sql = f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL"
        walk.add(sql, call, in_transaction=in_tx, table=table)
    elif name in {"drop_table", "drop_index", "create_foreign_key", "drop_column"}:
        concurrently = _kw(call, "postgresql_concurrently") == "True"
        verb = {"drop_table": "DROP TABLE", "drop_index": "DROP INDEX"}.get(name, "ALTER TABLE")
        sql = f"{verb}{' CONCURRENTLY' if concurrently else ''} {table}"
        walk.add(sql, call, in_transaction=in_tx, table=None if name == "drop_index" else table)


def _execute(walk: _Walk, call: ast.Call, in_tx: bool) -> None:
    arg = _arg(call, 0, "sqltext")
    if isinstance(arg, ast.Call) and ast.unparse(arg.func).endswith("text") and arg.args:
        arg = arg.args[0]
    sql = _text(arg)
    if sql is None:
        return
    for piece, _ in split_sql(sql):
        touched = _targets(piece) & walk.created
        walk.add(piece, call, in_transaction=in_tx, table=next(iter(touched), None))


def _create_index(walk: _Walk, call: ast.Call, in_tx: bool) -> None:
    name = _text(_arg(call, 0, "index_name")) or "index"
    table = _text(_arg(call, 1, "table_name")) or ""
    unique = " UNIQUE" if _kw(call, "unique") == "True" else ""
    concurrently = " CONCURRENTLY" if _kw(call, "postgresql_concurrently") == "True" else ""
    sql = f"CREATE{unique} INDEX{concurrently} {name} ON {table} (...)"
    walk.add(sql, call, in_transaction=in_tx, table=table)


def _add_column(
    walk: _Walk, call: ast.Call, in_tx: bool, table: str, column: ast.AST | None
) -> None:
    if not isinstance(column, ast.Call) or len(column.args) < 1:
        return
    name = _text(column.args[0]) or "column"
    type_ = ast.unparse(column.args[1]) if len(column.args) > 1 else ""
    nullable = _kw(column, "nullable")
    primary = _kw(column, "primary_key") == "True"
    parts = [f"ALTER TABLE {table} ADD COLUMN {name} {_sql_type(type_)}"]
    if nullable == "False" or (nullable is None and primary):
        parts.append("NOT NULL")
    default = next((k.value for k in column.keywords if k.arg == "server_default"), None)
    if default is not None:
        parts.append(f"DEFAULT {_default_sql(default)}")
    walk.add(" ".join(parts), call, in_transaction=in_tx, table=table)


def _sql_type(python: str) -> str:
    return "SERIAL" if "Identity" in python else python


def _default_sql(node: ast.AST) -> str:
    text = _text(node)
    if text is not None:
        return f"'{text}'"
    if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("text") and node.args:
        return _text(node.args[0]) or "?"
    rendered = ast.unparse(node)  # sa.func.gen_random_uuid() -> gen_random_uuid()
    return rendered.split("func.", 1)[-1]


def _arg(call: ast.Call, index: int, keyword: str) -> ast.AST | None:
    for k in call.keywords:
        if k.arg == keyword:
            return k.value
    return call.args[index] if len(call.args) > index else None


def _kw(call: ast.Call, name: str) -> str | None:
    for k in call.keywords:
        if k.arg == name:
            return ast.unparse(k.value)
    return None


def _text(node: ast.AST | None) -> str | None:
    """A string constant, or an f-string with each placeholder as ``x`` (its shape is kept)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "x"
            for v in node.values
        )
    return None


# -- files ---------------------------------------------------------------------------


def lint_migrations(
    paths: Iterable[str | Path], *, runner_sets_lock_timeout: bool = False
) -> list[LintFinding]:
    """Lint every ``.py`` (Alembic) and ``.sql`` file under ``paths`` (files or folders).

    An Alembic revision whose ``env.py`` (beside it or one folder up, Alembic's layout) sets
    ``lock_timeout`` itself (``configure_lock_timeout(...)`` or a ``SET [LOCAL]
    lock_timeout`` statement) satisfies ``missing-lock-timeout``; so does
    ``runner_sets_lock_timeout``, which says the migrations run through
    :func:`safe_upgrade` or another runner that sets it.
    """
    findings: list[LintFinding] = []
    envs: dict[Path, bool] = {}
    for file in sorted(_files(paths)):
        source = file.read_text(encoding="utf-8")[:_MAX_FILE]
        if file.suffix == ".sql":
            findings += lint_sql(
                source, str(file), runner_sets_lock_timeout=runner_sets_lock_timeout
            )
        else:
            set_by_env = runner_sets_lock_timeout or _env_sets_lock_timeout(file.parent, envs)
            findings += lint_alembic(source, str(file), runner_sets_lock_timeout=set_by_env)
    return findings


_SET_LOCK_TIMEOUT = re.compile(r"\bSET\s+(LOCAL\s+|SESSION\s+)?lock_timeout\b", re.IGNORECASE)


def _env_sets_lock_timeout(folder: Path, seen: dict[Path, bool]) -> bool:
    """Whether the ``env.py`` that runs the revisions in ``folder`` sets ``lock_timeout``."""
    for env in (folder / "env.py", folder.parent / "env.py"):
        if env in seen:
            return seen[env]
        if env.is_file():
            seen[env] = _sets_lock_timeout(env.read_text(encoding="utf-8")[:_MAX_FILE])
            return seen[env]
    return False


def _sets_lock_timeout(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "configure_lock_timeout":
                return True
        text = _text(node) if isinstance(node, ast.Constant | ast.JoinedStr) else None
        if text is not None and _SET_LOCK_TIMEOUT.search(text):
            return True
    return False


def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from (
                p
                for p in path.rglob("*")
                if p.suffix in {".py", ".sql"} and p.is_file() and p.name != "__init__.py"
            )
        elif path.suffix in {".py", ".sql"}:
            yield path
        else:
            raise FileNotFoundError(f"{path}: not a migration file or folder (.py or .sql)")
