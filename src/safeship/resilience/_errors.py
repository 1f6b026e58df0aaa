"""Exceptions raised by resilience policies.

Every rejection a policy makes on its own (open breaker, full bulkhead, exhausted rate
limit) derives from :class:`Rejected`, so a breaker never counts another policy's
rejection as a failure of the dependency. Rejections are created fresh and cheaply for
each call: no exception object is ever reused, so no traceback can grow.
"""

from __future__ import annotations

from safeship.errors import SafeshipError

__all__ = ["BreakerOpen", "BulkheadFull", "DeadlineExceeded", "RateLimited", "Rejected"]


class Rejected(SafeshipError):  # noqa: N818 - "Rejected" reads better than "RejectedError" at call sites
    """A policy refused to run the call; the dependency was not touched.

    Built as ``Rejected(policy_name, retry_after)``. ``retry_after`` is a hint in seconds
    (``None`` when unknown) that :class:`Retry` honours like an HTTP ``Retry-After``
    header. The arguments live in ``args`` (no Python ``__init__``), which keeps creating
    one as cheap as the interpreter allows.
    """

    @property
    def policy(self) -> str:
        """The name of the policy that rejected the call."""
        return str(self.args[0]) if self.args else "?"

    @property
    def retry_after(self) -> float | None:
        """Seconds after which a new call may be admitted, when known."""
        hint = self.args[1] if len(self.args) > 1 else None
        return None if hint is None else float(hint)

    def __str__(self) -> str:
        hint = "" if self.retry_after is None else f"; retry in {self.retry_after:.3f} s"
        return f"{self._what()} {self.policy!r} rejected the call{hint}"

    def _what(self) -> str:
        return "policy"


class BreakerOpen(Rejected):
    """The circuit breaker is open (or its half-open trial slots are taken)."""

    def _what(self) -> str:
        return "circuit breaker"


class BulkheadFull(Rejected):
    """The bulkhead has no free slot and its waiting queue is full or the wait timed out."""

    def _what(self) -> str:
        return "bulkhead"


class RateLimited(Rejected):
    """The rate limiter has no token left; ``retry_after`` says when the next one frees."""

    def _what(self) -> str:
        return "rate limiter"


class DeadlineExceeded(SafeshipError, TimeoutError):  # noqa: N818 - mirrors "deadline exceeded" in gRPC and logs
    """A :class:`Timeout` (or a retry deadline) ran out before the call completed."""
