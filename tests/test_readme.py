"""The README's example runs as written (with a SQLite URL and stub payment functions)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from safeship.db import create_engine, upgrade
from safeship.flags.store import FlagStore

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_protects_an_app(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    source = code.group(1).replace(
        "postgresql://app@db:5432/app", f"sqlite:///{tmp_path / 'app.db'}"
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    upgrade(engine)
    store = FlagStore(engine)
    store.create("checkout-v2", actor="test")
    store.target("checkout-v2", ["new-user"], actor="test")
    store.set_enabled("checkout-v2", True, actor="test")

    async def charge_v1(user_id: str) -> dict[str, str]:
        return {"charged": user_id, "by": "v1"}

    async def charge_v2(user_id: str) -> dict[str, str]:
        return {"charged": user_id, "by": "v2"}

    namespace: dict[str, Any] = {"charge_v1": charge_v1, "charge_v2": charge_v2}
    exec(compile(source, str(README), "exec"), namespace)  # noqa: S102 - our own README
    try:
        with TestClient(namespace["app"]) as client:
            old = client.post("/checkout", params={"user_id": "someone"})
            new = client.post("/checkout", params={"user_id": "new-user"})
            assert old.json() == {"charged": "someone", "by": "v1"}
            assert new.json() == {"charged": "new-user", "by": "v2"}
            assert old.headers["x-request-id"]
            assert "safeship_http_requests_total" in client.get("/metrics").text
    finally:
        namespace["flags"].close()
        engine.dispose()
