"""The one-argument memory index at its edges: two caches, keywords, custom keys, threads."""

from __future__ import annotations

from typing import Any, cast

from safeship.cache import Cache


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class S(str):
    pass


class I(int):  # noqa: E742
    pass


def test_two_functions_and_two_caches_do_not_cross() -> None:
    a, b = Cache("atk-a"), Cache("atk-b")

    @a(ttl=60)
    def fa(x: Any) -> Any:
        return ("fa", x)

    @a(ttl=60)
    def fb(x: Any) -> Any:
        return ("fb", x)

    @b(ttl=60)
    def fc(x: Any) -> Any:
        return ("fc", x)

    for _ in range(2):
        assert (fa(1), fb(1), fc(1)) == (("fa", 1), ("fb", 1), ("fc", 1))
        assert (fa("s"), fb("s"), fc("s")) == (("fa", "s"), ("fb", "s"), ("fc", "s"))


def test_keyword_and_positional_calls_agree() -> None:
    cache = Cache("atk-kw")
    n = [0]

    @cache(ttl=60)
    def load(x: Any) -> Any:
        n[0] += 1
        return (x, n[0])

    p = load(3)
    assert load(x=3)[0] == 3
    assert load(3) == p
    cast(Any, load).invalidate(3)  # the wrapper's own method
    assert load(3) != p


def test_a_custom_key_shares_entries_across_arguments() -> None:
    cache = Cache("atk-key")

    @cache(ttl=60, key=lambda x: x % 2)
    def load(x: int) -> int:
        return x

    assert load(1) == 1
    assert load(3) == 1  # same custom key: the first call's value
    cast(Any, load).invalidate(3)  # the wrapper's own method
    assert load(3) == 3
