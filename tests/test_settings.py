"""Settings: validation, production refusals, generated development secrets, no echoes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from safeship.secret_strength import MIN_SECRET_BITS, estimate_bits
from safeship.server import create_app
from safeship.settings import SettingsError, load_settings, parse_api_keys, secret_weakness

STRONG = "k9Qv2Lx8Rw4Tz7Pm1Nc5Bh3Jd6Fg0YsE"  # 33 characters, no default-looking word
STRONG_KEY = "Xw7Pq2Lm9Rt4Vb8Nc3Kd6Hj1Gf5Zs0Ay"


def test_defaults_are_development_on_sqlite() -> None:
    settings = load_settings({})
    assert settings.environment == "development"
    assert settings.database_url == "sqlite:///./safeship.db"
    assert settings.api_keys() == []


def test_development_generates_a_session_secret_and_the_server_warns(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    first = load_settings({})
    second = load_settings({})
    assert first.session_secret is not None and second.session_secret is not None
    assert first.session_secret.get_secret_value() != second.session_secret.get_secret_value()
    assert first.session_secret_was_generated
    assert not load_settings({"SAFESHIP_SESSION_SECRET": "s" * 40}).session_secret_was_generated
    with caplog.at_level(logging.WARNING, logger="safeship.server"):
        create_app(load_settings({"SAFESHIP_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}))
    assert "settings.generated_secret" in caplog.text


def test_production_lists_every_problem_in_one_error() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "SAFESHIP_ENVIRONMENT": "production",
                "SAFESHIP_ADMIN_KEYS": "ops:admin:changeme",
                "SAFESHIP_DEBUG": "true",
                "SAFESHIP_PORT": "not-a-port",
            }
        )
    problems = info.value.problems
    assert any(p.startswith("SAFESHIP_SESSION_SECRET: required") for p in problems)
    assert any("key 'ops' is shorter than 32" in p for p in problems)
    assert any(p.startswith("SAFESHIP_DEBUG") for p in problems)
    assert any(p.startswith("SAFESHIP_PORT") for p in problems)


@pytest.mark.parametrize(
    "value",
    ["changeme", "secret", "password" * 5, "admin-admin-admin-admin-admin-admin", "a" * 40],
)
def test_default_looking_secrets_are_refused_in_production(value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "SAFESHIP_ENVIRONMENT": "production",
                "SAFESHIP_SESSION_SECRET": value,
                "SAFESHIP_ADMIN_KEYS": f"ops:admin:{STRONG_KEY}",
            }
        )
    assert [p for p in info.value.problems if p.startswith("SAFESHIP_SESSION_SECRET")]


def test_strong_production_settings_load() -> None:
    settings = load_settings(
        {
            "SAFESHIP_ENVIRONMENT": "production",
            "SAFESHIP_SESSION_SECRET": STRONG,
            "SAFESHIP_ADMIN_KEYS": f"ops:admin:{STRONG_KEY},dash:read:{STRONG[::-1]}",
            "SAFESHIP_DATABASE_URL": "postgresql://app@db.internal:5432/app",
        }
    )
    assert [k.name for k in settings.api_keys()] == ["ops", "dash"]
    assert settings.is_production


def test_secrets_are_never_echoed_in_errors_or_repr() -> None:
    leaked = "Zq8Wv3Nr7Tb2Lk9Mx4Pc6Hd1Jf5Gs0Ay"
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "SAFESHIP_ENVIRONMENT": "production",
                "SAFESHIP_ADMIN_KEYS": f"ops:superuser:{leaked}",
                "SAFESHIP_SESSION_SECRET": "short-" + leaked[:5],
                "SAFESHIP_DATABASE_URL": f"mysql://root:{leaked}@x/db",
            }
        )
    text = str(info.value)
    assert leaked not in text and leaked[:5] not in text
    assert "scope 'superuser'" in text
    settings = load_settings({"SAFESHIP_SESSION_SECRET": leaked})
    assert leaked not in repr(settings) and leaked not in str(settings.model_dump())


def test_unknown_variables_are_errors_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({"SAFESHIP_DATABSE_URL": "sqlite:///x.db", "SAFESHIP_FLAG_CHECKOUT": "on"})
    assert info.value.problems == [
        "SAFESHIP_DATABSE_URL: unknown setting; did you mean SAFESHIP_DATABASE_URL? "
        "(`safeship settings` lists every one)"
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAFESHIP_DATABASE_URL", "not a url"),
        ("SAFESHIP_DATABASE_URL", "mysql://x/y"),
        ("SAFESHIP_REDIS_URL", "http://localhost:6379"),
        ("SAFESHIP_BROKER_URL", "ftp://broker"),
        ("SAFESHIP_LOG_LEVEL", "LOUD"),
        ("SAFESHIP_DB_POOL_SIZE", "0"),
    ],
)
def test_malformed_values_name_the_setting_and_what_is_expected(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{name}: ")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ops", "entry 1 must look like name:scope:key"),
        ("ops:admin:", "entry 1 must look like name:scope:key"),
        ("a:read:k1,a:admin:k2", "key name 'a' is used twice"),
        ("a:root:k", "scope 'root'"),
    ],
)
def test_api_key_specs_are_parsed_strictly(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_api_keys(raw)


def test_secret_weakness_accepts_random_tokens() -> None:
    assert secret_weakness(STRONG) is None
    assert secret_weakness("x" * 31) == "is shorter than 32 characters"


#: Long enough, yet guessable: repeats, runs, keyboard walks, default words, small alphabets.
WEAK_SECRETS = [
    "abcdefgh" * 4,
    "abcdefghijklmnopqrstuvwxyz012345",
    "Abcdefghijklmnopqrstuvwxyz012345",
    "0123456789abcdef0123456789abcdef",
    "qwertyuiopasdfghjklzxcvbnm1234567890",
    "ab" * 16,
    "aZ1!" * 10,
    "1357924680" * 4,
    "password" * 5,
    "admin-admin-admin-admin-admin-admin",
    "changeme-changeme-please-xyz12345",
    "zyxwvutsrqponmlkjihgfedcba987654",
    "a" * 40,
    "secret-" * 6,
]
#: Random tokens as the docs tell operators to make them.
STRONG_SECRETS = [
    STRONG,
    STRONG_KEY,
    "a_GLprulQo7PDPNy26VNGLrPxhI7WJXyuxNSrgZeA9M",  # secrets.token_urlsafe(32)
    "1e7ce74e0e5fd2698d4942001af2c7dde38a4961677026e8274af64beba02117",  # token_hex(32)
    "0bd0a8f08bff919c0c18b22d3cbf0c05",  # token_hex(16): 128 bits, just enough
    "ss_mTorP-cAACs8D-JxvuwajDonEpCP-WMhqeQ26XVFmFg",  # safeship keys create
    "prod-dashboard-signing-Zq8Wv3Nr7Tb2Lk9Mx4Pc6Hd1",  # a label and a random part
]


@pytest.mark.parametrize("value", WEAK_SECRETS)
def test_guessable_secrets_are_weak_whatever_their_length(value: str) -> None:
    assert len(value) >= 32
    problem = secret_weakness(value)
    assert problem is not None and "too guessable" in problem
    assert estimate_bits(value) < MIN_SECRET_BITS


@pytest.mark.parametrize("value", STRONG_SECRETS)
def test_random_secrets_are_strong(value: str) -> None:
    assert secret_weakness(value) is None, estimate_bits(value)


def test_a_repeated_pattern_is_refused_as_session_secret_and_key_with_a_remedy() -> None:
    weak = "abcdefgh" * 4
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "SAFESHIP_ENVIRONMENT": "production",
                "SAFESHIP_SESSION_SECRET": weak,
                "SAFESHIP_ADMIN_KEYS": f"ops:admin:{weak[::-1]}",
            }
        )
    problems = info.value.problems
    session = [p for p in problems if p.startswith("SAFESHIP_SESSION_SECRET: is too guessable")]
    key = [p for p in problems if p.startswith("SAFESHIP_ADMIN_KEYS: key 'ops' is too guessable")]
    assert session and key
    for problem in session + key:
        assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in problem
    assert weak not in str(info.value) and weak[::-1] not in str(info.value)


@pytest.mark.parametrize(
    ("keys", "secret", "first", "second"),
    [
        (f"ops:admin:{STRONG_KEY}", STRONG_KEY, "SAFESHIP_SESSION_SECRET", "key 'ops'"),
        (
            f"ops:admin:{STRONG_KEY},dash:read:{STRONG_KEY}",
            STRONG,
            "SAFESHIP_ADMIN_KEYS: key 'ops'",
            "key 'dash'",
        ),
    ],
)
def test_a_secret_reused_by_another_setting_is_refused(
    keys: str, secret: str, first: str, second: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(
            {
                "SAFESHIP_ENVIRONMENT": "production",
                "SAFESHIP_SESSION_SECRET": secret,
                "SAFESHIP_ADMIN_KEYS": keys,
            }
        )
    reused = [p for p in info.value.problems if "has the same value as" in p]
    assert len(reused) == 1
    assert reused[0].startswith(f"{first}: has the same value as SAFESHIP_ADMIN_KEYS: {second}")
    assert "secrets.token_urlsafe(32)" in reused[0]
    assert STRONG_KEY not in str(info.value)


def test_generated_development_secret_is_a_structured_line_without_the_value(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    settings = load_settings({"SAFESHIP_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    assert settings.session_secret is not None
    value = settings.session_secret.get_secret_value()
    with caplog.at_level(logging.WARNING, logger="safeship.server"):
        create_app(settings)
    [record] = [r for r in caplog.records if r.getMessage() == "settings.generated_secret"]
    assert record.__dict__["setting"] == "SAFESHIP_SESSION_SECRET"
    assert record.__dict__["environment"] == "development"
    assert value not in caplog.text and value not in str(record.__dict__)


def test_overrides_take_precedence_over_environment() -> None:
    settings = load_settings({"SAFESHIP_PORT": "9000"}, port=9100, host=None)
    assert settings.port == 9100


def test_flag_overrides_are_parsed_and_validated_at_load() -> None:
    settings = load_settings(
        {
            "SAFESHIP_FLAG_CHECKOUT_V2": "on",
            "SAFESHIP_FLAG_SEARCH": "off",
            "SAFESHIP_FLAG_NEW_UI": "25%",
        }
    )
    overrides = settings.flag_overrides
    assert overrides["CHECKOUT_V2"].describe() == "on"
    assert overrides["SEARCH"].enabled is False
    assert overrides["NEW_UI"].percent == 25.0
    with pytest.raises(SettingsError) as info:
        load_settings({"SAFESHIP_FLAG_CHECKOUT": "maybe", "SAFESHIP_FLAG_X": "150%"})
    assert sorted(p.split(":")[0] for p in info.value.problems) == [
        "SAFESHIP_FLAG_CHECKOUT",
        "SAFESHIP_FLAG_X",
    ]
