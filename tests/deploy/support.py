"""Reading the deploy kit as the tools would: YAML documents, compose interpolation and
the Dockerfile's instructions (continuation lines joined)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


class MissingVariableError(ValueError):
    """A ``${NAME:?message}`` whose variable is unset or empty, as compose refuses it."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: ``${X}``, ``${X:-default}``, ``${X-default}``,
    ``${X:?error}``, ``${X?error}``; ``$$`` is a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        value = env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":?", "?") and missing:
            raise MissingVariableError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and missing:
            return arg
        return value or ""

    return _VARIABLE.sub(one, text)


def interpolated(data: Any, env: Mapping[str, str]) -> Any:
    if isinstance(data, str):
        return interpolate(data, env)
    if isinstance(data, list):
        return [interpolated(item, env) for item in data]
    if isinstance(data, dict):
        return {key: interpolated(value, env) for key, value in data.items()}
    return data


def compose_file() -> dict[str, Any]:
    """``deploy/compose.yaml`` as YAML (merge keys resolved), not yet interpolated."""
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def env_example() -> dict[str, str]:
    """The variables ``.env.example`` asks for (all of them empty there)."""
    found = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in deploy/kubernetes (not the kustomization), with its file."""
    out = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return out


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    return found


@dataclass(frozen=True)
class Instruction:
    stage: str | None
    keyword: str
    value: str


def dockerfile(path: Path = DEPLOY / "Dockerfile") -> list[Instruction]:
    """The Dockerfile's instructions with their stage (``FROM ... AS name``)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stage: str | None = None
    out = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = value.split()
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
        out.append(Instruction(stage, keyword, value.strip()))
    return out
