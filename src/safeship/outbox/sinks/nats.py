"""NATS JetStream sink: ``Nats-Msg-Id`` = event id (the stream drops duplicates inside its
duplicate window), every message's ack awaited, a whole batch in flight at once.

The default subject is ``events.<event>``: the event type when it already names its
aggregate (``order.created``), else ``<aggregate_type>.<type>`` — so a staged
``order.created`` goes to ``events.order.created``, never ``events.order.order.created``.
``stream_setup="check"`` makes :meth:`NatsSink.open` confirm that a JetStream stream captures
the subjects (``events.>``), ``"create"`` also creates one when none does.

Needs ``pip install safeship[nats]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from safeship.outbox._model import DELIVERED, SKIPPED, Event, Outcome, Status
from safeship.outbox.sinks._base import Route, SinkUnavailableError, error_text

__all__ = ["DEFAULT_STREAM", "DefaultSubject", "NatsSink", "StreamSetup"]

StreamSetup = Literal["off", "check", "create"]
#: The stream ``stream_setup="create"`` makes when no name is given.
DEFAULT_STREAM = "EVENTS"
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

log = logging.getLogger("safeship.outbox")

_ACK_TIMEOUT = Outcome(Status.RETRY, "no JetStream ack before the timeout")
_NO_STREAM = Outcome(Status.RETRY, "no JetStream stream captures this subject (503)")
#: JetStream ack error codes that no retry can fix: the message exceeds the stream's
#: max_msg_size (10054).
_PERMANENT_ERR_CODES = frozenset({10054})
_HEADER_LINE = len(b"NATS/1.0\r\n") + 2
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _import_nats() -> Any:
    try:
        import nats
    except ImportError as exc:
        raise ImportError("NatsSink needs nats-py: pip install safeship[nats]") from exc
    return nats


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """nats-py errors that mean the connection, not the message, is the problem."""
    from nats import errors

    return (
        OSError,
        TimeoutError,
        errors.ConnectionClosedError,
        errors.ConnectionDrainingError,
        errors.ConnectionReconnectingError,
        errors.OutboundBufferLimitError,
        errors.StaleConnectionError,
        errors.NoServersError,
    )


class DefaultSubject:
    """``events.<type>`` when the type starts with ``<aggregate_type>.``, else
    ``events.<aggregate_type>.<type>`` (``prefix`` replaces ``events.``)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "events.") -> None:
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"DefaultSubject({self.prefix!r})"

    def __call__(self, event: Event) -> str:
        kind, aggregate = event.type, event.aggregate_type
        if kind.startswith(aggregate + "."):
            return self.prefix + kind
        return f"{self.prefix}{aggregate}.{kind}"


def _fixed_prefix(route: Any) -> str | None:
    """The literal, token-aligned start of every subject ``route`` makes (``events.``)."""
    if isinstance(route, DefaultSubject):
        return route.prefix
    template = getattr(route, "template", None)
    if not isinstance(template, str):
        return None
    head = template.split("{", 1)[0]
    head = head[: head.rfind(".") + 1]
    return head or None


class NatsSink:
    """Publish to JetStream on ``subject(event)`` (default :class:`DefaultSubject`).

    Pass ``url`` (the sink owns the connection) or an open ``client`` (you own it).
    ``connect_timeout`` bounds :meth:`open` (and each reconnect attempt afterwards).
    An event the server can never take (larger than its ``max_payload``, a subject or
    header NATS refuses) is a ``PERMANENT`` outcome for that event alone.

    ``stream_setup``: ``"off"`` (default) trusts the server; ``"check"`` makes :meth:`open`
    fail (``SinkUnavailableError``, so a relay retries and logs it) unless a stream captures
    ``<prefix>>``, and it must be ``stream`` when that is given; ``"create"`` creates
    ``stream`` (default ``EVENTS``) with subject ``<prefix>>`` when no stream captures it.
    Both need a subject with a fixed prefix (``events.{type}``, not ``{type}``).
    """

    ordered = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        subject: Route | DefaultSubject | str | None = None,
        stream: str | None = None,
        stream_setup: StreamSetup = "off",
        ack_timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("NatsSink needs exactly one of url= or client=")
        if ack_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("NatsSink ack_timeout and connect_timeout must be > 0 seconds")
        self._url = url
        self._nc = client
        if subject is None:
            subject = DefaultSubject()
        self._route: Route | DefaultSubject = (
            subject if isinstance(subject, Route | DefaultSubject) else Route(subject)
        )
        if stream is not None and not _STREAM_NAME.fullmatch(stream):
            raise ValueError(
                f"NatsSink stream must be 1-64 letters, digits, '_' or '-', got {stream!r}"
            )
        if stream_setup not in ("off", "check", "create"):
            raise ValueError(
                f"NatsSink stream_setup must be 'off', 'check' or 'create', got {stream_setup!r}"
            )
        self._prefix_filter = _fixed_prefix(self._route)
        if stream_setup != "off" and self._prefix_filter is None:
            raise ValueError(
                f"NatsSink stream_setup={stream_setup!r} needs a subject with a fixed prefix "
                f"such as 'events.{{type}}', got {subject!r}"
            )
        self._stream = stream
        self._stream_setup = stream_setup
        self.stream_name: str | None = None  # the stream found or created by open()
        self._ack_timeout = ack_timeout
        self._connect_timeout = connect_timeout
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._tokens = itertools.count()
        self._prefix = ""
        self._sub: Any = None
        self.last_error: str | None = None  # the client's last connection error
        self.duplicates = 0  # acks the stream flagged as duplicates (dropped by dedupe)

    def __repr__(self) -> str:
        return f"NatsSink({self._url or 'client'!r})"

    async def _on_error(self, error: Exception) -> None:
        # nats-py's default callback logs a traceback per reconnect attempt; the relay
        # reports outages as one throttled line instead.
        self.last_error = error_text(error)
        log.debug("outbox.nats.client_error", extra={"error": self.last_error})

    async def open(self) -> None:
        if self._nc is None:
            self._nc = await self._connect()
        if self._stream_setup != "off":
            self.stream_name = await self._set_up_stream(self._nc)
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _set_up_stream(self, nc: Any) -> str:
        """Find the stream capturing ``<prefix>>`` (or create it); its name."""
        from nats.js.errors import NotFoundError

        assert self._prefix_filter is not None  # checked at construction
        subjects = self._prefix_filter + ">"
        js = nc.jetstream(timeout=self._connect_timeout)
        try:
            try:
                found: str | None = await js.find_stream_name_by_subject(subjects)
            except NotFoundError:
                found = None
            if found is not None:
                if self._stream is not None and found != self._stream:
                    raise SinkUnavailableError(
                        f"JetStream stream {found!r} captures {subjects}, not {self._stream!r}: "
                        "pass its name, or give a subject prefix no other stream captures"
                    )
                return found
            if self._stream_setup == "check":
                raise SinkUnavailableError(
                    f"no JetStream stream captures {subjects}: create one "
                    f"(`nats stream add EVENTS --subjects '{subjects}'`) or let the relay "
                    "create it (`safeship outbox relay --stream EVENTS`)"
                )
            name = self._stream or DEFAULT_STREAM
            await js.add_stream(name=name, subjects=[subjects])
        except SinkUnavailableError:
            raise
        except Exception as exc:
            raise SinkUnavailableError(
                f"JetStream stream setup for {subjects} failed: {error_text(exc)}"
            ) from exc
        log.info("outbox.nats.stream_created", extra={"stream": name, "subjects": subjects})
        return name

    async def _connect(self) -> Any:
        """Connect once within ``connect_timeout`` (nats-py's own deadlines: one try, no
        reconnect loop), then let the client reconnect forever after any later drop."""
        from nats.aio.client import Client

        client = Client()
        assert self._url is not None  # open() connects only when the sink owns the client
        try:
            await client.connect(
                self._url,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # nats-py's least: two tries, then NoServersError
                reconnect_time_wait=0.1,  # type: ignore[arg-type]  # seconds, float is fine
                connect_timeout=max(1, round(self._connect_timeout)),
                error_cb=self._on_error,
            )
        except Exception as exc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)
            raise SinkUnavailableError(
                f"NATS at {self._url} did not connect: {self.last_error or error_text(exc)}"
            ) from exc
        client.options["allow_reconnect"] = True
        client.options["max_reconnect_attempts"] = -1
        client.options["reconnect_time_wait"] = 0.5
        return client

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._url is not None and self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def _on_ack(self, msg: Any) -> None:
        token = msg.subject[len(self._prefix) :].encode()
        future = self._pending.pop(token, None)
        if future is not None and not future.done():
            status = msg.headers.get("Status") if msg.headers else None
            future.set_result(b"503" if status == "503" else msg.data)

    def _headers(self, event: Event) -> dict[str, str]:
        headers = dict(event.headers)
        headers["Nats-Msg-Id"] = str(event.id)
        if self._stream is not None:
            headers["Nats-Expected-Stream"] = self._stream
        return headers

    def _refusal(self, event: Event, headers: dict[str, str], max_payload: int) -> str | None:
        """Why the server would refuse this message whatever happens, or None."""
        size = len(event.payload) + _HEADER_LINE
        for name, value in headers.items():
            if _CONTROL.search(value):
                return f"header {name!r} contains a control character (CR, LF, NUL, ...)"
            size += len(name.encode()) + len(value.encode()) + 4
        if size > max_payload:
            return (
                f"message is {size} bytes with its headers, over the server's max_payload "
                f"of {max_payload} bytes"
            )
        return None

    async def publish(self, events: Sequence[Event]) -> Sequence[Outcome]:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise SinkUnavailableError(f"NATS is not connected: {self.last_error or 'no error'}")
        sent: dict[int, asyncio.Future[bytes]] = {}
        outcomes: list[Outcome] = [SKIPPED] * len(events)
        tokens: list[bytes] = []
        try:
            lost = await self._send_all(nc, events, sent, outcomes, tokens)
            if sent:
                await asyncio.wait(sent.values(), timeout=self._ack_timeout)
        finally:
            for token in tokens:
                self._pending.pop(token, None)
        return self._settle(nc, sent, outcomes, lost)

    async def _send_all(
        self,
        nc: Any,
        events: Sequence[Event],
        sent: dict[int, asyncio.Future[bytes]],
        outcomes: list[Outcome],
        tokens: list[bytes],
    ) -> BaseException | None:
        """Publish each event; a refused one is PERMANENT and holds back the rest of its
        key (SKIPPED); a connection error stops the batch and is returned."""
        loop = asyncio.get_running_loop()
        unavailable = _unavailable_errors()
        refused_keys: set[str] = set()
        for index, event in enumerate(events):
            if event.aggregate_id in refused_keys:
                continue
            headers = self._headers(event)
            refusal = self._refusal(event, headers, nc.max_payload)
            token = str(next(self._tokens)).encode()
            future: asyncio.Future[bytes] = loop.create_future()
            if refusal is None:
                self._pending[token] = future
                tokens.append(token)
                try:
                    subject = self._route(event)
                    await nc.publish(
                        subject, event.payload, reply=self._prefix + token.decode(), headers=headers
                    )
                except unavailable as exc:
                    return exc
                except Exception as exc:  # noqa: BLE001 - nats-py refused this one message
                    refusal = error_text(exc)
            if refusal is not None:
                outcomes[index] = Outcome(Status.PERMANENT, f"NATS refused the event: {refusal}")
                refused_keys.add(event.aggregate_id)
                continue
            sent[index] = future
        return None

    def _settle(
        self,
        nc: Any,
        sent: dict[int, asyncio.Future[bytes]],
        outcomes: list[Outcome],
        lost: BaseException | None,
    ) -> list[Outcome]:
        answered = [index for index, future in sent.items() if future.done()]
        for index in answered:
            outcomes[index] = _outcome(sent[index])
        self.duplicates += sum(1 for i in answered if b'"duplicate":true' in sent[i].result())
        if lost is not None or (sent and not answered):
            # The connection went away, or the server answered nothing at all: that is the
            # broker, not these events.  Unanswered ones stay SKIPPED (not counted).
            for future in sent.values():
                future.cancel()
            reason = error_text(lost) if lost is not None else "no JetStream ack at all"
            if not nc.is_connected:
                reason += f" (disconnected: {self.last_error or 'no error'})"
            raise SinkUnavailableError(f"NATS unavailable: {reason}", outcomes=outcomes)
        for index, future in sent.items():
            if not future.done():
                future.cancel()
                outcomes[index] = _ACK_TIMEOUT
        return outcomes


def _outcome(future: asyncio.Future[bytes]) -> Outcome:
    data = future.result()
    if data == b"503":
        return _NO_STREAM
    if b'"error"' not in data:
        return DELIVERED
    text = data.decode(errors="replace")[:2000]
    try:
        code = json.loads(data)["error"].get("err_code")
    except (ValueError, KeyError, TypeError, AttributeError):
        code = None
    return Outcome(Status.PERMANENT if code in _PERMANENT_ERR_CODES else Status.RETRY, text)
