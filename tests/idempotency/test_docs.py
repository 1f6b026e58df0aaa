"""The README's idempotency example runs as written; the migration makes the table."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from safeship.db import create_engine, upgrade
from safeship.idempotency._schema import idempotency

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_the_readme_example_replays_a_retry_and_acts_on_a_webhook_once(
    redis_url: str,
) -> None:
    section = README.read_text().split("## Idempotency keys", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    source = code.group(1).replace("redis://127.0.0.1:6379/0", redis_url)
    saved: list[dict[str, Any]] = []
    sent: list[str] = []

    async def save_order(order: dict[str, Any]) -> int:
        saved.append(order)
        return len(saved)

    async def send_receipt(event_id: str) -> None:
        sent.append(event_id)

    namespace: dict[str, Any] = {"save_order": save_order, "send_receipt": send_receipt}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - our own README
    transport = httpx.ASGITransport(app=namespace["app"])
    headers = {"x-api-key": "k1", "idempotency-key": str(uuid.uuid4())}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.post("/orders", json={"item": "tea"}, headers=headers)
            retry = await client.post("/orders", json={"item": "tea"}, headers=headers)
            missing = await client.post("/orders", json={"item": "tea"}, headers={"x-api-key": "k"})
        event = str(uuid.uuid4())
        await namespace["on_webhook"](event)
        await namespace["on_webhook"](event)
    finally:
        await namespace["keys"].aclose()
    assert first.status_code == retry.status_code == 201 and retry.content == first.content
    assert missing.status_code == 400
    assert len(saved) == 1 and sent == [event]


def test_the_migration_creates_the_table_the_store_uses(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("safeship_idempotency")}
    engine.dispose()
    assert columns == {c.name for c in idempotency.columns}


def test_every_problem_the_middleware_sends_has_its_help_anchor_in_the_docs() -> None:
    """``Link: <DOCS_URL#name>; rel="help"`` must land on a section that explains ``name``."""
    src = Path(__file__).resolve().parents[2] / "src" / "safeship" / "idempotency"
    source = (src / "_middleware.py").read_text() + (src / "_http.py").read_text()
    names = set(re.findall(r'_problem\(\s*(?:send,\s*)?\d{3},\s*"([a-z-]+)"', source))
    assert {
        "key-missing",
        "in-flight",
        "response-not-kept",
    } <= names  # the pattern still finds them
    docs = (README.parent / "docs" / "idempotency.md").read_text()
    missing = sorted(name for name in names if f'<a id="{name}"></a>' not in docs)
    assert not missing, f"docs/idempotency.md lacks anchors for {missing}"
