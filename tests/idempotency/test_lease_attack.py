"""An outsider's attacks on the per-loop lease timer (``_lease.py``) and the canonical
JSON fingerprint (``_model.py``): the four defects they found (a loop kept alive, its file
descriptors, firings growing with the runs in flight, an unretrieved task error) and the
attacks that held."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import math
import multiprocessing
import os
import threading
import uuid
import weakref
from collections.abc import Iterable
from typing import Any, cast

import pytest

from safeship.idempotency import IdempotencyMiddleware, RouteOptions, _lease
from safeship.idempotency._lease import Leases, leases
from safeship.idempotency._model import Claim, StoredResponse, fingerprint
from tests.idempotency.lease_support import RenewCounter, until


# -- helpers ---------------------------------------------------------------------------
class MemoryStore(RenewCounter):
    """Just enough of a key store for the middleware: every claim is granted."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls: list[str] = []

    async def claim(
        self, key: str, fp: str, *, lease: float, ttl: float, unknown_ttl: float
    ) -> Claim:
        self.calls.append("claim")
        return Claim(token=uuid.uuid4().hex)

    async def complete(self, key: str, token: str, response: StoredResponse, *, ttl: float) -> bool:
        self.calls.append("complete")
        return True

    async def mark_unknown(self, key: str, token: str, *, unknown_ttl: float = 1) -> bool:
        self.calls.append("unknown")
        return True

    async def release(self, key: str, token: str) -> bool:
        self.calls.append("release")
        return True


def _scope(key: str = "k-1") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "query_string": b"",
        "headers": [(b"idempotency-key", key.encode()), (b"x-api-key", b"alice"),
                    (b"content-type", b"application/json")],
        "app": None,
    }  # fmt: skip


# -- change 1: the per-loop lease timer -------------------------------------------------
def test_a_finished_event_loop_is_not_kept_alive_by_its_leases() -> None:
    """The loop's Leases (a WeakKeyDictionary value) and the last-used cache must not
    hold the loop: once they did, and no loop that ran an idempotent request was freed."""
    store = RenewCounter()
    refs: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        refs.append(weakref.ref(asyncio.get_running_loop()))
        held = leases()
        held.drop(held.hold(store, "k", "t", lease=30, unknown_ttl=1))

    for _ in range(20):
        asyncio.run(main())
    # a control loop that never touched leases() is freed
    control: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def plain() -> None:
        control.append(weakref.ref(asyncio.get_running_loop()))

    asyncio.run(plain())
    gc.collect()
    assert control[0]() is None
    alive = sum(ref() is not None for ref in refs)
    assert alive <= 1, f"{alive} finished loops still alive ({len(_lease._BY_LOOP)} in _BY_LOOP)"


def test_loops_never_closed_free_their_file_descriptors_after_holding_a_lease() -> None:
    """An event loop dropped without close() is closed by its __del__ (epoll fd and
    self-pipe freed); when leases held it, 3 fds per loop leaked."""
    store = RenewCounter()

    async def main() -> None:
        held = leases()
        held.drop(held.hold(store, "k", "t", lease=30, unknown_ttl=1))

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
        before = fds()
        for _ in range(30):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(main())
            del loop
        gc.collect()
        leaked = fds() - before
    assert leaked < 10, f"{leaked} file descriptors leaked by 30 unclosed loops"


def test_runs_started_at_different_times_share_a_few_firings_per_period() -> None:
    """With one firing per run per period, each one a pass over every run in flight,
    the timer's work grew with the square of the runs in flight (10,000 staggered runs
    kept the loop 91% busy).  Renewals due within a quarter period share a firing."""
    firings = [0]
    original = Leases._fire

    def counted(self: Leases, *args: Any) -> None:
        firings[0] += 1  # each one a pass over the runs in flight (or a stale timer's no-op)
        original(self, *args)

    class Fast:
        async def renew(self, *a: Any, **k: Any) -> bool:
            return True

    async def main() -> None:
        held = leases()
        store, mine = Fast(), []
        for i in range(3_000):  # arriving over ~0.3 s or more, each running > 2 s
            mine.append(held.hold(store, f"k{i}", "t", lease=0.6, unknown_ttl=1))
            if i % 10 == 0:
                await asyncio.sleep(1e-3)
        firings[0] = 0
        await asyncio.sleep(2.0)  # ten renewal periods of 0.2 s
        for lease in mine:
            held.drop(lease)

    Leases._fire = counted  # type: ignore[method-assign,assignment]
    try:
        asyncio.run(main())
    finally:
        Leases._fire = original  # type: ignore[method-assign]
    assert firings[0] <= 100, f"{firings[0]} firings in ten periods for 3,000 runs"


def test_a_renewal_raising_other_than_a_store_error_is_logged_not_left_unretrieved() -> None:
    """store.renew raising e.g. a Redis ResponseError (OOM, READONLY: not converted to
    IdempotencyStoreError) once escaped ``_renew`` as "Task exception was never
    retrieved" at every period; it is logged as ``idempotency.renew_failed``."""
    errors: list[dict[str, Any]] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        store = RenewCounter(answer=RuntimeError("OOM command not allowed"))
        held = leases()
        lease = held.hold(store, "k", "t", lease=0.03, unknown_ttl=1)
        await until(lambda: len(store.renewals.get("k", [])) >= 4)
        held.drop(lease)
        gc.collect()
        await asyncio.sleep(0.01)
        return len(store.renewals["k"])

    renewals = asyncio.run(main())
    assert renewals >= 4  # it kept renewing (better than the old renewer, which stopped)
    assert errors == [], [e.get("message") for e in errors]


async def test_a_short_lease_held_after_a_long_one_is_renewed_on_time() -> None:
    store = RenewCounter()
    held = leases()
    long = held.hold(store, "long", "t", lease=300.0, unknown_ttl=1)  # timer at +100 s
    start = asyncio.get_running_loop().time()
    short = held.hold(store, "short", "t", lease=0.09, unknown_ttl=1)
    await until(lambda: len(store.renewals.get("short", [])) >= 3)
    held.drop(short)
    # the timer goes back to the long lease's due time after the short one is gone
    await asyncio.sleep(0.1)
    assert held._at > start + 50
    held.drop(long)
    times = store.renewals["short"]
    assert times[0] - start < 0.09
    assert "long" not in store.renewals


async def test_a_short_lease_held_while_the_timer_is_far_away_after_a_drop() -> None:
    store = RenewCounter()
    held = leases()
    a = held.hold(store, "a", "t", lease=0.06, unknown_ttl=1)
    held.drop(a)  # the timer stays armed for a's due time
    b = held.hold(store, "b", "t", lease=600.0, unknown_ttl=1)
    c = held.hold(store, "c", "t", lease=0.03, unknown_ttl=1)
    await until(lambda: len(store.renewals.get("c", [])) >= 3)
    for x in (b, c):
        held.drop(x)
    assert "a" not in store.renewals and "b" not in store.renewals


async def test_a_renewal_that_never_returns_is_cancelled_by_drop_and_blocks_no_other() -> None:
    stuck, fine = RenewCounter(forever=True), RenewCounter()
    held = leases()
    x = held.hold(stuck, "stuck", "t", lease=0.03, unknown_ttl=1)
    y = held.hold(fine, "fine", "t", lease=0.03, unknown_ttl=1)
    await until(lambda: len(fine.renewals.get("fine", [])) >= 5)
    assert len(stuck.renewals["stuck"]) == 1  # one at a time
    held.drop(x)
    held.drop(y)
    await until(lambda: stuck.cancelled == 1)
    await asyncio.sleep(0.05)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []


async def test_a_lease_lost_while_dropped_concurrently_is_harmless() -> None:
    store = RenewCounter(answer=False, delay=0.02)
    held = leases()
    leases_ = [held.hold(store, f"k{i}", "t", lease=0.03, unknown_ttl=1) for i in range(50)]
    await until(lambda: len(store.renewals) == 50)
    for lease in leases_[::2]:
        held.drop(lease)  # mid-renewal
    await asyncio.sleep(0.1)
    for lease in leases_:
        held.drop(lease)
    assert len(held) == 0
    assert store.cancelled == 25


async def test_thousands_of_holds_and_drops_interleaved_with_renewals() -> None:
    store = RenewCounter()
    held = leases()
    live = []
    for i in range(3000):
        live.append(held.hold(store, f"k{i}", "t", lease=0.03 + (i % 7) * 0.01, unknown_ttl=1))
        if i % 3 == 0:
            held.drop(live.pop(0))
        if i % 100 == 0:
            await asyncio.sleep(0.005)
    for lease in live:
        held.drop(lease)
    await asyncio.sleep(0.12)
    assert len(held) == 0
    await until(lambda: held._at == math.inf)
    count = sum(map(len, store.renewals.values()))
    await asyncio.sleep(0.1)
    assert sum(map(len, store.renewals.values())) == count


def test_many_threads_with_their_own_loops_never_get_another_loops_leases() -> None:
    wrong: list[str] = []
    store = RenewCounter()

    def run() -> None:
        async def main() -> None:
            for _ in range(200):
                found = leases()
                if found.loop is not asyncio.get_running_loop():
                    wrong.append("foreign")
                found.drop(found.hold(store, "k", "t", lease=30, unknown_ttl=1))
                await asyncio.sleep(0)

        for _ in range(5):
            asyncio.run(main())

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert wrong == []


def test_a_loop_ending_with_leases_held_does_not_break_the_next_loop() -> None:
    store = RenewCounter()

    async def left() -> None:
        held = leases()
        held.hold(store, "left", "t", lease=0.03, unknown_ttl=1)  # never dropped
        await until(lambda: len(store.renewals.get("left", [])) >= 1)

    asyncio.run(left())

    async def after() -> int:
        held = leases()
        lease = held.hold(store, "next", "t", lease=0.03, unknown_ttl=1)
        await until(lambda: len(store.renewals.get("next", [])) >= 3)
        held.drop(lease)
        return len(held)

    assert asyncio.run(after()) == 0


def _child_renews(queue: Any) -> None:
    store = RenewCounter()

    async def main() -> int:
        held = leases()
        lease = held.hold(store, "k", "t", lease=0.03, unknown_ttl=1)
        await until(lambda: len(store.renewals.get("k", [])) >= 3)
        held.drop(lease)
        return len(store.renewals["k"])

    queue.put(asyncio.run(main()))


def test_a_forked_child_renews_its_own_leases() -> None:
    store = RenewCounter()

    async def parent() -> None:
        held = leases()
        held.drop(held.hold(store, "k", "t", lease=30, unknown_ttl=1))

    asyncio.run(parent())  # _last and _BY_LOOP now hold the parent's loop
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_renews, args=(queue,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert queue.get(timeout=1) >= 3


async def test_a_request_cancelled_mid_run_drops_its_lease_and_marks_unknown() -> None:
    store = MemoryStore()
    entered = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        entered.set()
        await asyncio.sleep(60)

    mw = IdempotencyMiddleware(app, store=cast(Any, store), principal=lambda s: "alice",
                               default=RouteOptions(lease=0.03))  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        pass

    task = asyncio.create_task(mw(_scope(), receive, send))
    await entered.wait()
    await until(lambda: sum(map(len, store.renewals.values())) >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.calls == ["claim", "unknown"]
    assert len(leases()) == 0
    count = sum(map(len, store.renewals.values()))
    await asyncio.sleep(0.06)
    assert sum(map(len, store.renewals.values())) == count


async def test_concurrent_requests_with_different_leases_through_the_middleware() -> None:
    store = MemoryStore()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.12)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    long_mw = IdempotencyMiddleware(app, store=cast(Any, store), principal=lambda s: "a",
                                    default=RouteOptions(lease=600))  # fmt: skip
    short_mw = IdempotencyMiddleware(app, store=cast(Any, store), principal=lambda s: "a",
                                     default=RouteOptions(lease=0.06))  # fmt: skip
    await asyncio.gather(
        long_mw(_scope("long"), receive, send),
        *[short_mw(_scope(f"s{i}"), receive, send) for i in range(20)],
    )
    assert store.calls.count("complete") == 21
    assert len(store.renewals) == 20  # every short run renewed, the long one not yet
    assert all(len(v) >= 3 for v in store.renewals.values())
    assert len(leases()) == 0


# -- change 2: fingerprints ---------------------------------------------------------------
def _old_canonical(body: bytes) -> bytes | None:
    """``_canonical_json`` before the change (commit 552d71e^)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _old_fingerprint(method: str, target: str, content_type: str, chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in (method.upper(), target):
        digest.update(part.encode())
        digest.update(b"\0")
    body = b"".join(chunks)
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        canonical = _old_canonical(body)
        if canonical is not None:
            digest.update(b"json\0")
            digest.update(canonical)
            return digest.hexdigest()
    digest.update(b"raw\0")
    digest.update(body)
    return digest.hexdigest()


def _texts() -> list[str]:
    return [
        "", " ", "{}", "[]", "null", "0", "-0", "1e400", "-1e400", "NaN", "Infinity",
        "-Infinity", "[NaN,Infinity]", '{"a":NaN}', "1" * 4300, "1" * 4301, "-" + "9" * 4300,
        "0.1", "1.0", "1E2", "12345678901234567890", '{"b":2,"a":1}', '{"a":1,"a":2}',
        '{"a":{"a":1,"a":[1,2]},"a":3}', '"\\u0000"', '"\\ud800"', '"\\udfff\\ud800"',
        '"\\ud83d\\ude00"', '"\u00e9\u20ac\U0001f600"', '{"\u00e9":1,"e":2}', ' \t\n\r{} ',
        "{} x", "{", "[1,]", "'a'", '"\x01"', '{"a":1}\x00', "\x00", "[" * 50 + "]" * 50,
        "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, "true", "false",
        '{"x":[1,{"y":[true,false,null]}]}', "\ufeff{}", "{}\ufeff",
    ]  # fmt: skip


def _bodies() -> list[bytes]:
    bodies: list[bytes] = []
    for text in _texts():
        for codec in ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                      "utf-32-le", "utf-32-be"):  # fmt: skip
            bodies.append(text.encode(codec, "surrogatepass"))
    bodies += [
        b'"\xed\xa0\x80"', b'"\xed\xa0\xbd\xed\xb8\x80"', b'"\xff"', b"\xff\xfe", b"\xfe\xff",
        b"\xef\xbb\xbf", b"\xef\xbb", b'{"a":"\xc0\xaf"}', b"\x00\x00\x00", b"1\x00",
        b"\x001", b"\xff\xfe1", b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b'"\xf4\x90\x80\x80"',
        b'\xef\xbb\xbf"\xed\xa0\x80"', b"\xff\xfe\x00\xd8", b"\xff\xfe\"\x00\x00\xd8\"\x00",
        bytes(range(256)), b"\x80", b"{}\x80",
    ]  # fmt: skip
    return bodies


def test_the_fingerprint_is_unchanged_for_every_body_the_old_code_could_hash() -> None:
    differ, raised = [], []
    for body in _bodies():
        for ctype in ("application/json", "application/merge-patch+json; charset=utf-8",
                      "text/plain"):  # fmt: skip
            new = fingerprint("post", "/p?q=1", ctype, [body])  # never raises
            try:
                old = _old_fingerprint("post", "/p?q=1", ctype, [body])
            except UnicodeEncodeError:
                raised.append(body)  # the lone-surrogate crash the change fixed
                continue
            if new != old:
                differ.append((body[:40], ctype))
    assert differ == []
    assert raised  # the corpus reaches the fixed case


def test_random_bodies_fingerprint_as_before_and_never_raise() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
    codecs_ = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])

    @settings(max_examples=600, deadline=None, database=None)
    @given(json_values, codecs_, st.binary(max_size=8), st.binary(max_size=8))
    def check(value: Any, codec: str, prefix: bytes, suffix: bytes) -> None:
        text = json.dumps(value, ensure_ascii=bool(len(prefix) % 2))
        for body in (text.encode(codec, "surrogatepass"), prefix + text.encode() + suffix,
                     prefix + suffix):  # fmt: skip
            new = fingerprint("POST", "/", "application/json", [body])
            try:
                old = _old_fingerprint("POST", "/", "application/json", [body])
            except UnicodeEncodeError:
                continue
            assert new == old, body

    check()


def test_raw_and_escaped_lone_surrogates_are_one_payload_and_differ_from_others() -> None:
    def fp(body: bytes) -> str:
        return fingerprint("POST", "/", "application/json", [body])

    assert (
        fp(b'"\\ud800"')
        == fp(b'"\xed\xa0\x80"')
        == fp('"\ud800"'.encode("utf-16", "surrogatepass"))
    )
    assert fp(b'"\\ud800"') != fp(b'"\\ud801"')
    assert fp(b'"\\ud83d\\ude00"') == fp('"\U0001f600"'.encode())


def test_the_shared_encoder_gives_the_same_fingerprints_from_many_threads() -> None:
    bodies = [json.dumps({"n": i, "s": "x" * (i % 50), "l": list(range(i % 30)),
                          "d": {str(j): j for j in range(i % 20)}}).encode()
              for i in range(400)]  # fmt: skip
    expected = [_old_fingerprint("POST", "/", "application/json", [b]) for b in bodies]
    wrong: list[int] = []

    def run(offset: int) -> None:
        for _ in range(5):
            for i in range(len(bodies)):
                j = (i + offset) % len(bodies)
                if fingerprint("POST", "/", "application/json", [bodies[j]]) != expected[j]:
                    wrong.append(j)

    threads = [threading.Thread(target=run, args=(k * 37,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert wrong == []


def test_deep_nesting_at_any_stack_depth_never_raises() -> None:
    def at_depth(n: int, body: bytes) -> str:
        if n <= 0:
            return fingerprint("POST", "/", "application/json", [body])
        return at_depth(n - 1, body)

    import sys

    for depth in (10, 400, 900, 990, 2000):
        for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
            for stack in range(0, sys.getrecursionlimit() - 60, 25):
                at_depth(stack, body)
