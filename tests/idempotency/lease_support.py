"""The lease tests' stand-in store and condition wait (tests/idempotency/test_lease*.py)."""

from __future__ import annotations

import asyncio
from typing import Any


class RenewCounter:
    """A store's renew part: records each renewal (loop time) and answers as told
    (``answer``, after ``delay``; with ``forever`` it never answers)."""

    def __init__(
        self, answer: bool | BaseException = True, delay: float = 0.0, forever: bool = False
    ) -> None:
        self.answer, self.delay, self.forever = answer, delay, forever
        self.renewals: dict[str, list[float]] = {}
        self.cancelled = 0

    async def renew(self, key: str, token: str, *, lease: float, unknown_ttl: float) -> bool:
        self.renewals.setdefault(key, []).append(asyncio.get_running_loop().time())
        try:
            if self.forever:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


async def until(check: Any, seconds: float = 5) -> None:
    """Wait until ``check()`` holds (it fails the test after ``seconds``)."""
    async with asyncio.timeout(seconds):
        while not check():  # noqa: ASYNC110 - the conditions come from timers, not events
            await asyncio.sleep(0.005)
