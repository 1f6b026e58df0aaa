"""One validated ``Settings`` object, read from ``SAFESHIP_*`` environment variables.

Settings are validated once at start-up.  In ``production`` every problem is collected and
reported together (missing or weak secrets, unsafe switches); in ``development`` missing
secrets are generated for the process and a warning says so.  Secret values are
``SecretStr``: they are never logged and never echoed in validation errors.
"""

from __future__ import annotations

import difflib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from safeship._extras import require

require("server", "pydantic", "pydantic_settings", feature="safeship.settings")

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator  # noqa: E402
from pydantic_settings import BaseSettings, SettingsConfigDict  # noqa: E402

from safeship.errors import SafeshipError  # noqa: E402
from safeship.flags._overrides import FLAG_PREFIX as FLAG_PREFIX  # noqa: E402
from safeship.flags._overrides import FlagOverride as FlagOverride  # noqa: E402
from safeship.flags._overrides import flag_key as flag_key  # noqa: E402
from safeship.flags._overrides import parse_flag_overrides as parse_flag_overrides  # noqa: E402
from safeship.secret_strength import GENERATE_HINT, weakness  # noqa: E402

logger = logging.getLogger("safeship.settings")

ENV_PREFIX = "SAFESHIP_"
#: Variables with the prefix that are not settings fields but are read elsewhere.
_FOREIGN_PREFIXES = ("SAFESHIP_FLAG_",)

#: ``frontend`` keys only reach the browser-facing flag API (``/api/frontend``).
SCOPES = ("read", "admin", "frontend")


class SettingsError(SafeshipError):
    """Settings are invalid; ``problems`` lists each one as 'SETTING: what is wrong'."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"safeship settings are invalid ({len(problems)} problem(s)):\n{lines}")


@dataclass(frozen=True, slots=True)
class ApiKeySpec:
    """An admin API key as configured: its name, scope and secret value."""

    name: str
    scope: Literal["read", "admin", "frontend"]
    secret: SecretStr


class Settings(BaseSettings):
    """Every safeship setting.  Field ``foo`` is read from ``SAFESHIP_FOO``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        hide_input_in_errors=True,
        frozen=True,
        validate_default=True,
    )

    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///./safeship.db"
    redis_url: str | None = None
    broker_url: str | None = None
    admin_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated 'name:scope:key' entries; scope is read, admin or frontend.",
    )
    session_secret: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    debug: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=1, le=65535)
    db_pool_size: int = Field(default=5, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_timeout: float = Field(default=5.0, gt=0, le=120)
    db_connect_timeout: float = Field(default=3.0, gt=0, le=60)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0, le=3_600_000)
    db_expected_processes: int = Field(default=1, ge=1, le=10_000)
    db_connection_reserve: int = Field(default=5, ge=0, le=1000)
    health_cache_seconds: float = Field(default=2.0, ge=0, le=300)
    session_max_age_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 24 * 3600)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1_073_741_824)
    import_max_body_bytes: int = Field(default=8 * 1_048_576, ge=1024, le=1_073_741_824)
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated IPs or CIDR ranges of the proxies in front of the "
        "control plane, whose forwarded client address is believed (none by default).",
    )
    proxy_header: Literal["x-forwarded-for", "forwarded", "x-real-ip"] = "x-forwarded-for"
    _generated_session_secret: bool = PrivateAttr(default=False)
    _flag_overrides: dict[str, FlagOverride] = PrivateAttr(default_factory=dict)

    @property
    def flag_overrides(self) -> Mapping[str, FlagOverride]:
        """``SAFESHIP_FLAG_*`` overrides by flag key (see ``flag_key``), validated at load."""
        return dict(self._flag_overrides)

    @property
    def session_secret_was_generated(self) -> bool:
        """True when no session secret was configured and one was made for this process."""
        return self._generated_session_secret

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return check_url(
            value,
            ("sqlite", "postgresql"),
            "a database URL such as sqlite:///./safeship.db or postgresql://user@host:5432/db",
        )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_url(value, ("redis", "rediss", "unix"), "redis://host:6379/0")

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_url(
            value,
            ("nats", "tls", "amqp", "amqps", "redis", "rediss", "kafka", "http", "https"),
            "nats://host:4222, amqp://user:pass@host:5672/, redis://host:6379, "
            "kafka://host:9092 or https://host/hook",
        )

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: str) -> str:
        for entry in split_list(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or CIDR range "
                    "(expected e.g. 10.0.0.0/8,192.0.2.7)"
                ) from None
        return value

    def trusted_proxy_list(self) -> tuple[str, ...]:
        """``trusted_proxies`` as a tuple of IPs and CIDR ranges (empty by default)."""
        return split_list(self.trusted_proxies)

    @field_validator("admin_keys")
    @classmethod
    def _check_admin_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_keys(value.get_secret_value())
        return value

    def api_keys(self) -> list[ApiKeySpec]:
        """The configured admin API keys (empty when none are set)."""
        if self.admin_keys is None:
            return []
        return parse_api_keys(self.admin_keys.get_secret_value())

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


def split_list(value: str) -> tuple[str, ...]:
    """The non-empty entries of a comma-separated setting, stripped."""
    return tuple(entry.strip() for entry in value.split(",") if entry.strip())


def check_url(value: str, schemes: tuple[str, ...], example: str) -> str:
    """Return ``value`` when it is a URL with one of ``schemes``; raise a clear error otherwise."""
    value = value.strip()
    scheme = urlsplit(value).scheme.split("+", 1)[0].lower()
    if "://" not in value or scheme not in schemes:
        allowed = ", ".join(schemes)
        raise ValueError(f"expected a URL with scheme {allowed} (for example {example})")
    return value


def parse_api_keys(raw: str) -> list[ApiKeySpec]:
    """Parse 'name:scope:key,...'; errors name the entry by position, never echo the key."""
    specs: list[ApiKeySpec] = []
    seen: set[str] = set()
    for position, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        parts = entry.split(":", 2)
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise ValueError(f"entry {position} must look like name:scope:key")
        name, scope, key = parts
        if scope not in SCOPES:
            raise ValueError(
                f"entry {position} ({name}) has scope {scope!r}; use read, admin or frontend"
            )
        if name in seen:
            raise ValueError(f"entry {position}: key name {name!r} is used twice")
        seen.add(name)
        specs.append(ApiKeySpec(name=name, scope=scope, secret=SecretStr(key)))  # type: ignore[arg-type]
    return specs


def secret_weakness(value: str) -> str | None:
    """Why ``value`` is unfit as a production secret, or None when it looks strong.

    Judged by estimated entropy (`safeship.secret_strength`): length alone lets
    ``abcdefgh`` repeated four times through.
    """
    return weakness(value)


def production_problems(settings: Settings) -> list[str]:
    """Every reason ``settings`` are unsafe for production (empty when they are fine)."""
    problems: list[str] = []
    if settings.session_secret is None:
        problems.append(
            f"SAFESHIP_SESSION_SECRET: required in production (32+ random characters); "
            f"{GENERATE_HINT}"
        )
    else:
        problem = secret_weakness(settings.session_secret.get_secret_value())
        if problem:
            problems.append(f"SAFESHIP_SESSION_SECRET: {problem}; {GENERATE_HINT}")
    keys = settings.api_keys()
    if not keys:
        problems.append("SAFESHIP_ADMIN_KEYS: required in production (name:scope:key, ...)")
    for spec in keys:
        problem = secret_weakness(spec.secret.get_secret_value())
        if problem:
            problems.append(f"SAFESHIP_ADMIN_KEYS: key {spec.name!r} {problem}; {GENERATE_HINT}")
    problems.extend(reused_secret_problems(settings))
    if settings.debug:
        problems.append("SAFESHIP_DEBUG: must be false in production")
    return problems


def reused_secret_problems(settings: Settings) -> list[str]:
    """A problem for each secret setting whose value another one also holds.

    A key that is also the session secret lets whoever holds the key forge sessions;
    two keys with one value make the holder's identity and scope ambiguous. Values are
    compared in constant time.
    """
    named: list[tuple[str, str]] = [
        (f"SAFESHIP_ADMIN_KEYS: key {spec.name!r}", spec.secret.get_secret_value())
        for spec in settings.api_keys()
    ]
    if settings.session_secret is not None:
        named.insert(0, ("SAFESHIP_SESSION_SECRET", settings.session_secret.get_secret_value()))
    problems = []
    for index, (first, value) in enumerate(named):
        for second, other in named[index + 1 :]:
            if hmac.compare_digest(value.encode(), other.encode()):
                problems.append(
                    f"{first}: has the same value as {second}; every secret setting needs "
                    f"a value of its own; {GENERATE_HINT}"
                )
    return problems


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``SAFESHIP_*`` variables that name no setting (typos are errors, not silence)."""
    known = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    unknown = []
    for key in environ:
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if upper.startswith(_FOREIGN_PREFIXES):
            continue
        unknown.append(key)
    return sorted(unknown)


def unknown_setting_problem(key: str) -> str:
    """'SAFESHIP_X: unknown setting', with the closest known name and where all are listed."""
    known = [f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields]
    close = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{key}: unknown setting{hint} (`safeship settings` lists every one)"


def _describe(error: Mapping[str, Any]) -> str:
    field = ".".join(str(p) for p in error.get("loc", ())) or "settings"
    name = f"{ENV_PREFIX}{field.upper()}" if field != "settings" else field
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{name}: {message}"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read, validate and complete the settings; raise ``SettingsError`` listing every problem.

    ``overrides`` take precedence over the environment (the CLI passes its options here).
    """
    env = os.environ if environ is None else environ
    problems = [unknown_setting_problem(key) for key in unknown_variables(env)]
    values = _collect(env, overrides)
    flag_overrides, flag_problems = parse_flag_overrides(env)
    problems.extend(flag_problems)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        problems.extend(_describe(e) for e in errors)
        # Validate what is left so production problems are reported in the same error.
        bad = {e["loc"][0] for e in errors if e.get("loc")}
        rest = {k: v for k, v in values.items() if k not in bad}
        try:
            partial = Settings.model_validate(rest)
        except ValidationError:
            partial = None
        if partial is not None and partial.is_production:
            problems.extend(production_problems(partial))
    if settings is not None and settings.is_production:
        problems.extend(production_problems(settings))
    if problems or settings is None:
        raise SettingsError(problems)
    settings = _fill_development_secrets(settings)
    settings._flag_overrides = flag_overrides
    return settings


def _collect(env: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Explicit values (not os.environ) so a caller's mapping is exactly what is read."""
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        key = f"{ENV_PREFIX}{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def _fill_development_secrets(settings: Settings) -> Settings:
    if settings.is_production or settings.session_secret is not None:
        return settings
    filled = settings.model_copy(update={"session_secret": SecretStr(secrets.token_urlsafe(32))})
    filled._generated_session_secret = True
    return filled
