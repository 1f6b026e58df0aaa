"""The migration linter: each rule on SQL and on Alembic operations, inline ignores with a
required reason, and safeship's own migrations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from safeship.data import LINT_RULES, LintFinding, lint_alembic, lint_migrations, lint_sql

OWN_MIGRATIONS = Path(__file__).resolve().parents[2] / "src/safeship/db/migrations/versions"
TIMEOUT = "SET lock_timeout = '2s';\n"


def rules(findings: Sequence[LintFinding]) -> list[str]:
    return [f.rule for f in findings]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE INDEX orders_user ON orders (user_id)", ["create-index-not-concurrently"]),
        ("CREATE INDEX CONCURRENTLY orders_user ON orders (user_id)", []),
        (
            "BEGIN; CREATE INDEX CONCURRENTLY o ON orders (a); COMMIT;",
            ["concurrently-in-transaction"],
        ),
        (
            "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid()",
            ["volatile-default"],
        ),
        ("ALTER TABLE orders ADD COLUMN n bigserial", ["volatile-default"]),
        ("ALTER TABLE orders ADD COLUMN status text DEFAULT 'new' NOT NULL", []),
        ("ALTER TABLE orders ADD COLUMN status text NOT NULL", ["not-null-without-default"]),
        ("ALTER TABLE orders ADD COLUMN note text", []),
        ("ALTER TABLE orders ALTER COLUMN note SET NOT NULL", ["set-not-null-without-check"]),
        (
            "ALTER TABLE orders ADD CONSTRAINT note_nn CHECK (note IS NOT NULL) NOT VALID;"
            "ALTER TABLE orders VALIDATE CONSTRAINT note_nn;"
            "ALTER TABLE orders ALTER COLUMN note SET NOT NULL;",
            [],
        ),
        (
            "CREATE TABLE t (id int); CREATE INDEX t_id ON t (id);ALTER TABLE t ADD c int NOT NULL",
            [],
        ),
    ],
)
def test_each_rule_on_sql(sql: str, expected: list[str]) -> None:
    assert rules(lint_sql(TIMEOUT + sql)) == expected


def test_locking_ddl_without_a_lock_timeout_is_flagged() -> None:
    findings = lint_sql("ALTER TABLE orders ADD COLUMN note text;\nSELECT 1;")
    assert rules(findings) == ["missing-lock-timeout"] and findings[0].line == 1
    assert rules(lint_sql("ALTER TABLE orders ADD note text", runner_sets_lock_timeout=True)) == []


def test_semicolons_in_strings_and_functions_do_not_split() -> None:
    sql = TIMEOUT + (
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN PERFORM 1; RETURN NEW; END $$ "
        "LANGUAGE plpgsql;\nINSERT INTO t VALUES ('a;b');\n-- CREATE INDEX x ON t (a);\n"
    )
    assert lint_sql(sql) == []


def test_an_inline_ignore_needs_a_reason() -> None:
    ok = TIMEOUT + (
        "-- safeship-lint: ignore[create-index-not-concurrently] table is empty in every env\n"
        "CREATE INDEX a ON t (x);"
    )
    assert lint_sql(ok) == []
    bare = (
        TIMEOUT
        + "-- safeship-lint: ignore[create-index-not-concurrently]\nCREATE INDEX a ON t (x);"
    )
    assert rules(lint_sql(bare)) == ["ignore-without-reason", "create-index-not-concurrently"]


ALEMBIC = """
import sqlalchemy as sa
from alembic import op


def upgrade() -> None:
    op.create_table("fresh", sa.Column("id", sa.Integer, primary_key=True))
    op.create_index("fresh_id", "fresh", ["id"])
    op.create_index("orders_user", "orders", ["user_id"])
    with op.get_context().autocommit_block():
        op.create_index("orders_day", "orders", ["day"], postgresql_concurrently=True)
    op.create_index("orders_x", "orders", ["x"], postgresql_concurrently=True)
    op.add_column("orders", sa.Column("token", sa.Uuid, server_default=sa.text("random()")))
    op.add_column("orders", sa.Column("state", sa.String(10), nullable=False))
    # safeship-lint: ignore[not-null-without-default] orders is empty until launch (#12)
    op.add_column("orders", sa.Column("kind", sa.String(10), nullable=False))
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("note", nullable=False)
    op.execute("CREATE INDEX orders_y ON orders (y)")


def downgrade() -> None:
    op.create_index("ignored", "orders", ["z"])
"""


def test_each_rule_on_alembic_operations() -> None:
    findings = lint_alembic(ALEMBIC, "0042_orders.py", runner_sets_lock_timeout=True)
    assert [(f.line, f.rule) for f in findings] == [
        (9, "create-index-not-concurrently"),
        (12, "concurrently-in-transaction"),
        (13, "volatile-default"),
        (14, "not-null-without-default"),
        (18, "set-not-null-without-check"),
        (19, "create-index-not-concurrently"),
    ]
    assert "CONCURRENTLY" in LINT_RULES["create-index-not-concurrently"]


def test_safeships_own_migrations_pass_because_their_env_sets_the_lock_timeout() -> None:
    assert lint_migrations([OWN_MIGRATIONS]) == []
    assert lint_migrations([OWN_MIGRATIONS.parent]) == []


ADD_COLUMN = """
def upgrade() -> None:
    op.add_column("orders", sa.Column("note", sa.Text(), nullable=True))
"""


@pytest.mark.parametrize(
    ("env", "flagged"),
    [
        ("context.run_migrations()\n", True),
        ("# SET lock_timeout is not done here\nrun()\n", True),
        ('connection.exec_driver_sql("SET LOCAL lock_timeout = 2000")\n', False),
        ('connection.exec_driver_sql(f"set lock_timeout = {ms}")\n', False),
        ("configure_lock_timeout(connection, lock_timeout_ms=1500)\n", False),
        ("safeship.data.configure_lock_timeout(connection)\n", False),
    ],
)
def test_an_env_py_that_sets_the_lock_timeout_satisfies_the_rule(
    tmp_path: Path, env: str, flagged: bool
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_note.py").write_text(ADD_COLUMN)
    (tmp_path / "env.py").write_text(env)
    found = rules(lint_migrations([versions]))
    assert found == (["missing-lock-timeout"] if flagged else [])
    assert rules(lint_migrations([versions], runner_sets_lock_timeout=True)) == []


def test_a_path_that_is_not_a_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("CREATE INDEX CONCURRENTLY i ON t (a);")
    assert rules(lint_migrations([tmp_path], runner_sets_lock_timeout=True)) == []
    with pytest.raises(FileNotFoundError, match="not a migration"):
        lint_migrations([tmp_path / "notes.txt"])
