"""``SAFESHIP_FLAG_<NAME>=on|off|N%``: flags forced from the environment.

Pure parsing, with no settings library: the live flag client applies these overrides, and
``safeship.settings`` validates them with the other settings (and re-exports the names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FLAG_PREFIX = "SAFESHIP_FLAG_"


@dataclass(frozen=True, slots=True)
class FlagOverride:
    """``SAFESHIP_FLAG_<NAME>=on|off|N%``: forces a flag, above whatever the store says."""

    key: str
    enabled: bool
    percent: float | None = None

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        return "on" if self.percent is None else f"{self.percent:g}%"


def flag_key(name: str) -> str:
    """The environment spelling of a flag name: upper case, non-alphanumerics as '_'."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).upper()


def parse_flag_overrides(environ: Mapping[str, str]) -> tuple[dict[str, FlagOverride], list[str]]:
    """Every ``SAFESHIP_FLAG_*`` override, and a problem line for each malformed one."""
    overrides: dict[str, FlagOverride] = {}
    problems: list[str] = []
    for variable, raw in environ.items():
        if not variable.upper().startswith(FLAG_PREFIX):
            continue
        key = variable[len(FLAG_PREFIX) :].upper()
        value = raw.strip().lower()
        if not key:
            problems.append(f"{variable}: name the flag, e.g. SAFESHIP_FLAG_CHECKOUT_V2=on")
        elif value in ("on", "true", "1", "yes"):
            overrides[key] = FlagOverride(key, True)
        elif value in ("off", "false", "0", "no"):
            overrides[key] = FlagOverride(key, False)
        elif value.endswith("%") and _percent(value[:-1]) is not None:
            overrides[key] = FlagOverride(key, True, _percent(value[:-1]))
        else:
            problems.append(f"{variable}: expected on, off or a percentage such as 25%")
    return overrides, problems


def _percent(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value <= 100 else None
