"""The README's Node example reads a flag through the stock Unleash SDK, and its Flask
example is protected, both as written (only the URL, key and port are the test's)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from tests.reach.conftest import Plane
from tests.reach.test_node_sdks import NODE_DIR
from tests.server.support import READ_KEY

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Any language's flag SDK, and Flask or Django apps"


def block(language: str) -> str:
    section = README.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert found is not None, f"no {language} block in the README's section"
    return found.group(1)


def test_readme_node_example_reads_a_flag(plane: Plane, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "unleash-client").is_dir():
        if os.environ.get("SAFESHIP_REQUIRE_SERVICES") == "1":
            pytest.fail("node or tests/reach/node/node_modules missing: run `make reach-node`")
        pytest.skip("node or tests/reach/node/node_modules missing: run `make reach-node`")
    plane.store.create("checkout-v2", actor="test")
    plane.store.target("checkout-v2", ["42"], actor="test")
    plane.store.set_enabled("checkout-v2", True, actor="test")
    source = block("js").replace("http://127.0.0.1:8700", plane.url)
    source += '\nflags.on("synchronized", () => setTimeout(() => process.exit(0), 50));\n'
    script = NODE_DIR / f"readme-{tmp_path.name}.cjs"
    script.write_text(source)
    try:
        env = {**os.environ, "SAFESHIP_READ_KEY": READ_KEY}
        done = subprocess.run(
            [node, str(script)], cwd=NODE_DIR, env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[0] == "true"


def test_readme_flask_example_is_protected(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flask")
    key = "ss_readme_flask_key_Zq8Wv3Nr7Tb2Lk9Mx4"
    monkeypatch.setenv("ADMIN_KEY", key)
    namespace: dict[str, Any] = {"__name__": "readme_flask"}
    exec(compile(block("python"), str(README), "exec"), namespace)  # noqa: S102 - our README
    client = Client(namespace["app"])
    hello = client.get("/hello")
    assert hello.status_code == 200 and hello.text == "hello"
    assert len(hello.headers["X-Request-ID"]) == 32
    assert client.get("/admin/anything").status_code == 401
    assert "safeship_http_requests_total" in client.get("/metrics").text
