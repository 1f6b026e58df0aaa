"""Request ids: accept a well-formed ``X-Request-ID`` or generate one, and echo it back."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Awaitable, Callable, Iterable

from safeship.observe._logging import note_request_id, request_id
from safeship.observe._masking import PiiMasker
from safeship.web._asgi import ASGIApp, Headers, Message, Receive, Scope, Send

_SAFE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


#: Request ids are correlation ids, not secrets: a generator of their own, seeded from
#: the OS and reseeded in a forked child, so no two workers repeat a sequence and the
#: ids reveal nothing of the ``random`` module's state that an application may rely on.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))
#: What an incoming id must not hold: the default patterns of the log masker (e-mail,
#: card, phone number, bearer token). Ids are logged as they are (``request_id`` is a
#: verbatim key of `PiiMasker`), so an id that looks like PII is replaced at the door.
_PII = PiiMasker()


def _random_id() -> str:
    """128 random bits as 32 lower-case hex digits."""
    return _ids.getrandbits(128).to_bytes(16, "little").hex()


def is_safe_id(value: str) -> bool:
    """Whether ``value`` may serve as a request id: 1–128 characters of
    ``A-Z a-z 0-9 . _ : / + = -``, and nothing the log masker would mask."""
    return _SAFE_ID.fullmatch(value) is not None and _PII.mask_text(value, remember=False) == value


class RequestIdMiddleware:
    """Give every HTTP request an id, visible in logs and the ``X-Request-ID`` header.

    An incoming id is kept only when ``trust_incoming`` and it is 1–128 safe characters
    holding nothing that looks like PII (`is_safe_id`), so a client cannot inject log
    lines, huge values or personal data; any other request gets a generated id (32 hex
    digits).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        header: str = "X-Request-ID",
        trust_incoming: bool = True,
        generator: Callable[[], str] = _random_id,
    ) -> None:
        if not header or not header.isascii():
            raise ValueError("RequestIdMiddleware.header must be a non-empty ASCII name")
        self.app = app
        self.header = header
        self._key = header.lower().encode("latin-1")
        self.trust_incoming = trust_incoming
        self.generator = generator

    @property
    def header_key(self) -> bytes:
        """The response header's name, lower-case bytes."""
        return self._key

    def assign(self, scope: Scope) -> tuple[str, bytes]:
        """The request's id (kept or generated), stored in ``scope["state"]``; also encoded."""
        rid = raw = None
        if self.trust_incoming:
            key = self._key
            for name, value in scope.get("headers", ()):
                if name == key:  # only the first value counts
                    text = bytes(value).decode("latin-1")
                    if is_safe_id(text):
                        rid, raw = text, bytes(value)
                    break
        if rid is None or raw is None:
            rid = self.generator()
            raw = rid.encode("latin-1", "replace")
        state = scope.get("state")
        if state is None:  # servers give one; no empty dict made for nothing
            state = scope["state"] = {}
        state["request_id"] = rid
        return rid, raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, encoded = self.assign(scope)
        token = request_id.set(rid)
        key = self._key

        def send_with_id(message: Message) -> Awaitable[None]:
            # A plain function returning the server's awaitable: no coroutine of its own.
            if message["type"] == "http.response.start":
                message["headers"] = with_header(message.get("headers", ()), key, encoded)
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            note_request_id(exc, rid)  # the server logs it after the context is gone
            raise
        finally:
            request_id.reset(token)


def with_header(headers: Iterable[tuple[bytes, bytes]], key: bytes, value: bytes) -> Headers:
    """``headers`` with ``key`` (lower-case) set to ``value``, replacing any earlier value."""
    kept = list(headers)
    size = len(key)
    for name, _ in kept:
        if len(name) == size and name.lower() == key:  # names of another length never match
            kept = [(k, v) for k, v in kept if k.lower() != key]
            break
    kept.append((key, value))
    return kept
