"""Settings: validation, production refusals, generated development secrets, no echoes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

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
        "SAFESHIP_DATABSE_URL: unknown setting (known: see `safeship check --help` or "
        "docs/settings.md)"
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
