"""Page pagination bounds, safe_filename and the debug-route guard."""

from __future__ import annotations

import re
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import given
from hypothesis import strategies as st

from safeship.web import (
    Page,
    UnsafeFilenameError,
    hash_key,
    page_params,
    require_debug_access,
    safe_filename,
)
from safeship.web._pagination import MAX_LIMIT, MAX_PAGE

# -- pagination ------------------------------------------------------------------------


@given(st.one_of(st.integers(), st.text(max_size=25), st.none(), st.floats()), st.integers())
def test_clamped_page_is_always_in_bounds(page: object, limit: int) -> None:
    p = Page.clamped(page, limit)
    assert 1 <= p.page <= MAX_PAGE
    assert 1 <= p.limit <= MAX_LIMIT
    assert 0 <= p.offset <= (MAX_PAGE - 1) * MAX_LIMIT


@given(st.integers(), st.integers())
def test_strict_page_accepts_exactly_the_documented_range(page: int, limit: int) -> None:
    valid = 1 <= page <= MAX_PAGE and 1 <= limit <= MAX_LIMIT
    if valid:
        assert Page(page, limit).offset == (page - 1) * limit
    else:
        with pytest.raises(ValueError, match="must be an integer in"):
            Page(page, limit)


def test_page_defaults_and_junk() -> None:
    assert Page() == Page(1, 50)
    assert Page.clamped("abc", "x") == Page(1, 50)
    assert Page.clamped("3", "1000") == Page(3, 100)
    assert Page.clamped(0, 0) == Page(1, 1)
    assert Page.clamped(True, 10) == Page(1, 10)
    with pytest.raises(ValueError, match="page must be an integer"):
        Page.parse("abc", 10, strict=True)
    with pytest.raises(ValueError, match="limit must be"):
        Page.parse(1, 101, strict=True)


@given(st.integers(1, MAX_PAGE), st.integers(1, MAX_LIMIT), st.integers(0, 10**7))
def test_has_next_matches_remaining_items(page: int, limit: int, total: int) -> None:
    result = Page(page, limit).result(list[int](), total)
    assert result.has_next == (page * limit < total and page < MAX_PAGE)
    assert set(result.to_dict()) == {"items", "page", "limit", "total", "has_next"}


async def test_page_params_as_fastapi_dependency() -> None:
    api = FastAPI()

    @api.get("/items")
    async def items(page: Annotated[Page, Depends(page_params)]) -> dict[str, object]:
        return page.result(list(range(page.limit)), total=1000).to_dict()

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        body = (await c.get("/items?page=2&limit=1000")).json()
    assert (body["page"], body["limit"], body["has_next"]) == (2, 100, True)


# -- safe_filename ---------------------------------------------------------------------

FILENAME_CASES = [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
    ("C:\\Users\\me\\photo.JPG", "photo.jpg"),
    (".bashrc", "bashrc"),
    ("...", "file"),
    ("", "file"),
    ("a..b...c.txt", "a.b.c.txt"),
    ("my file (1).txt", "my_file_1.txt"),
    ("résumé.pdf", "resume.pdf"),
    ("日本語.txt", "file.txt"),
    ("-rf.sh", "rf.sh"),
    ("CON.txt", "_CON.txt"),
    ("shell.php.", "shell.php"),
    ("a\x00b.txt", "a_b.txt"),
]


@pytest.mark.parametrize(("raw", "expected"), FILENAME_CASES)
def test_safe_filename_cases(raw: str, expected: str) -> None:
    assert safe_filename(raw) == expected


@given(st.text(max_size=400))
def test_safe_filename_output_is_always_safe(raw: str) -> None:
    name = safe_filename(raw, max_length=64)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name)
    assert ".." not in name
    assert "/" not in name and "\\" not in name
    assert len(name) <= 64
    assert not name.startswith((".", "-"))


def test_length_cap_keeps_the_extension() -> None:
    name = safe_filename("a" * 500 + ".png", max_length=40)
    assert len(name) == 40
    assert name.endswith(".png")


def test_extension_allow_list() -> None:
    assert safe_filename("x.PNG", allowed_extensions=[".png", "jpg"]) == "x.png"
    with pytest.raises(UnsafeFilenameError, match="'php' is not allowed"):
        safe_filename("x.php", allowed_extensions=["png"])
    with pytest.raises(UnsafeFilenameError, match="none"):
        safe_filename("README", allowed_extensions=["png"])


def test_random_prefix_makes_names_unique() -> None:
    first = safe_filename("a.txt", random_prefix=True)
    second = safe_filename("a.txt", random_prefix=True)
    assert first != second
    assert re.fullmatch(r"[0-9a-f]{16}_a\.txt", first)


# -- debug access ----------------------------------------------------------------------


def debug_api(**guard_args: object) -> FastAPI:
    api = FastAPI()
    guard = require_debug_access(**guard_args)  # type: ignore[arg-type]

    @api.get("/debug/vars", dependencies=[Depends(guard)])
    async def debug_vars() -> dict[str, str]:
        return {"env": "secret-ish"}

    return api


async def get_status(api: FastAPI, headers: dict[str, str] | None = None) -> int:
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return (await c.get("/debug/vars", headers=headers)).status_code


async def test_debug_routes_are_hidden_in_production_without_key() -> None:
    api = debug_api(production=True, admin_keys=["ss_admin"])
    assert await get_status(api) == 404
    assert await get_status(api, {"X-Admin-Key": "wrong"}) == 404
    assert await get_status(api, {"X-Admin-Key": "ss_admin"}) == 200


async def test_debug_routes_open_in_development() -> None:
    assert await get_status(debug_api(production=False)) == 200


async def test_production_without_admin_keys_never_allows() -> None:
    assert await get_status(debug_api(), {"X-Admin-Key": ""}) == 404


async def test_guard_accepts_stored_digests_and_wraps_asgi_apps() -> None:
    guard = require_debug_access(admin_key_digests=[hash_key("ss_admin")])

    async def debug_app(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"debug"})  # type: ignore[operator]

    transport = httpx.ASGITransport(app=guard.wrap(debug_app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/")).status_code == 404
        assert (await c.get("/", headers={"X-Admin-Key": "ss_admin"})).text == "debug"
