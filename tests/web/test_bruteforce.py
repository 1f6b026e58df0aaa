"""Brute-force limiting: 429 after 5 failures a minute, blocked after 20, per client IP."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from safeship.web import ApiKeyAuth, LimitPolicy, MemoryFailureStore


def app_with(store: MemoryFailureStore | None = None, trusted: tuple[str, ...] = ()) -> ApiKeyAuth:
    inner = Starlette(routes=[Route("/admin", lambda r: PlainTextResponse("ok"))])
    return ApiKeyAuth(
        inner, keys=["ss_good"], protected_prefixes=["/admin"], store=store, trusted_proxies=trusted
    )


def client(app: object, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 1234))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_thirty_bad_keys_limit_then_block_one_ip_only() -> None:
    app = app_with()
    statuses: list[int] = []
    retry_after: list[int] = []
    async with client(app, "203.0.113.7") as attacker:
        for n in range(30):
            response = await attacker.get("/admin", headers={"X-API-Key": f"guess-{n}"})
            statuses.append(response.status_code)
            retry_after.append(int(response.headers.get("retry-after", 0)))
        good = await attacker.get("/admin", headers={"X-API-Key": "ss_good"})
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 25
    assert all(0 < r <= 60 for r in retry_after[5:19])
    assert all(r > 800 for r in retry_after[19:])
    assert good.status_code == 429  # even the right key is refused while blocked
    async with client(app, "198.51.100.1") as bystander:
        assert (await bystander.get("/admin", headers={"X-API-Key": "ss_good"})).text == "ok"


async def test_window_expiry_lifts_the_limit_but_not_the_block() -> None:
    clock = Clock()
    store = MemoryFailureStore(policy=LimitPolicy(), clock=clock)
    for _ in range(5):
        await store.record_failure("ip")
    assert not (await store.check("ip")).allowed
    clock.now += 61
    assert (await store.check("ip")).allowed
    for _ in range(15):
        await store.record_failure("ip")
    verdict = await store.check("ip")
    assert verdict.blocked
    clock.now += 120
    assert (await store.check("ip")).blocked
    clock.now += 900
    assert (await store.check("ip")).allowed


async def test_missing_key_is_not_counted() -> None:
    app = app_with()
    async with client(app, "192.0.2.5") as c:
        for _ in range(10):
            assert (await c.get("/admin")).status_code == 401
        assert (await c.get("/admin", headers={"X-API-Key": "ss_good"})).status_code == 200


async def test_forwarded_for_is_ignored_unless_proxy_trusted() -> None:
    app = app_with()
    async with client(app, "192.0.2.9") as c:
        for n in range(6):
            await c.get("/admin", headers={"X-API-Key": f"bad{n}", "X-Forwarded-For": f"1.1.1.{n}"})
        assert (await c.get("/admin", headers={"X-API-Key": "ss_good"})).status_code == 429


async def test_trusted_proxy_uses_forwarded_client() -> None:
    app = app_with(trusted=("10.0.0.0/8",))
    async with client(app, "10.1.2.3") as proxy:
        for n in range(6):
            await proxy.get(
                "/admin", headers={"X-API-Key": f"bad{n}", "X-Forwarded-For": "198.51.100.77"}
            )
        other = await proxy.get(
            "/admin", headers={"X-API-Key": "ss_good", "X-Forwarded-For": "198.51.100.78"}
        )
        same = await proxy.get(
            "/admin", headers={"X-API-Key": "ss_good", "X-Forwarded-For": "198.51.100.77"}
        )
    assert other.status_code == 200
    assert same.status_code == 429


async def test_memory_store_is_bounded() -> None:
    store = MemoryFailureStore(max_clients=3)
    for n in range(10):
        await store.record_failure(f"ip{n}")
    assert len(store._clients) == 3
