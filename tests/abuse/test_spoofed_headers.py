"""A spoofed ``X-Forwarded-For`` neither evades the brute-force limiter nor locks a victim
out: with no trusted proxy configured (the default), the limiter counts the socket's peer.

The server runs with ``FORWARDED_ALLOW_IPS=*`` in its environment, so uvicorn itself would
trust the header from anyone: safeship must not. Each attacker and the victim connect from
a loopback address of their own (127.0.0.0/8), so the tests share one server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.abuse.plane import Plane, serve_plane
from tests.server.support import READ_KEY

VICTIM = "127.0.0.2"
WRONG_KEY = "ss_" + "w" * 43
ATTEMPTS = 30  # the default policy allows 5 failures a minute


@pytest.fixture(scope="module")
def lone_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """A server of this module's own, behind no proxy, whose uvicorn trusts every proxy."""
    root = tmp_path_factory.mktemp("spoof")
    url = f"sqlite:///{root / 'plane.db'}"
    with serve_plane(url, root / "logs", FORWARDED_ALLOW_IPS="*") as served:
        yield served


def _from(address: str, plane: Plane) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=plane.url, transport=transport, timeout=30)


def test_rotating_x_forwarded_for_does_not_evade_the_brute_force_limit(
    lone_plane: Plane,
) -> None:
    fakes = (f"203.0.113.{n}" for n in itertools.count(1))
    with _from("127.0.0.3", lone_plane) as attacker:
        answers = [
            attacker.get(
                "/api/v1/me", headers={"X-API-Key": WRONG_KEY, "X-Forwarded-For": next(fakes)}
            ).status_code
            for _ in range(ATTEMPTS)
        ]
    assert set(answers) <= {401, 429}, answers
    assert answers[-1] == 429, f"rotating the header evaded the limiter: {answers}"


def test_naming_a_victim_in_x_forwarded_for_does_not_lock_the_victim_out(
    lone_plane: Plane,
) -> None:
    with _from("127.0.0.4", lone_plane) as attacker:
        for _ in range(ATTEMPTS):
            attacker.get("/api/v1/me", headers={"X-API-Key": WRONG_KEY, "X-Forwarded-For": VICTIM})
        assert attacker.get("/api/v1/me", headers={"X-API-Key": WRONG_KEY}).status_code == 429
    with _from(VICTIM, lone_plane) as victim:
        answer = victim.get("/api/v1/me", headers={"X-API-Key": READ_KEY})
    assert answer.status_code == 200, (answer.status_code, answer.text)


def test_the_login_form_is_limited_by_the_peer_not_the_spoofed_header(
    lone_plane: Plane,
) -> None:
    with _from("127.0.0.5", lone_plane) as attacker:
        answers = [
            attacker.post(
                "/login",
                data={"key": WRONG_KEY},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(ATTEMPTS)
        ]
    assert answers[-1] == 429, answers
