"""Decorated functions keep their signatures for mypy (ParamSpec), sync and async."""

from __future__ import annotations

from pathlib import Path

SAMPLE = """
from safeship.resilience import Breaker, Retry, pipeline

pipe = pipeline(retry=Retry(), breaker=Breaker("typing-sample", registry=None))


@pipe
def send(to: str, *, body: str) -> int:
    return len(body)


@pipe
async def fetch(key: int) -> bytes:
    return b""


async def main() -> None:
    count: int = send("bob", body="hi")
    data: bytes = await fetch(3)
    send(1, body="x")  # line 19
    await fetch("k")  # line 20
    pipe.call(send, "bob", body=2)  # line 21
"""


def test_mypy_sees_the_wrapped_signatures(tmp_path: Path) -> None:
    from mypy import api

    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE.lstrip("\n"))
    report, _, _ = api.run(["--strict", "--no-error-summary", str(sample)])
    errors = [line.split(": error: ")[0].rsplit(":", 1)[1] for line in report.splitlines()]
    assert errors == ["19", "20", "21"], report
