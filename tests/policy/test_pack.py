"""The real policy pack (pulumi-policy, its own venv) passes what the program deploys."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi.output import Unknown

from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.kuberay import kuberay_values
from infra.program.runner import UNKNOWN, ProgramRun, shared_run
from policy.rules import REVIEWED_CHART_IMAGES
from tests.k8s_schemas import REFERENCE_DIR

POLICY_PYTHON = PROJECT_ROOT / "policy" / "venv" / "bin" / "python"
PROD_CONFIG = PROJECT_ROOT / "policy" / "prod.json"


def _helm_merged(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """User values over a chart's defaults as Helm merges them (maps deep, null deletes)."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _helm_merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _kuberay_deployment() -> dict[str, Any]:
    """What the Helm v4 Chart (KubeRay's) registers besides its CRDs: the operator
    Deployment, its security and resources as the chart's template renders them from the
    pinned defaults merged with the program's values."""
    defaults = yaml.safe_load(
        (REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml").read_text()
    )
    values = _helm_merged(defaults, kuberay_values(load_stack_file("prod")))
    image = values["image"]
    container = {
        "name": "kuberay-operator",
        "image": f"{image['repository']}:{image['tag']}",
        "securityContext": values["securityContext"],
        "resources": values["resources"],
    }
    return {
        "type": "kubernetes:apps/v1:Deployment",
        "urn": "urn:pulumi:prod::rayserve-gke::rayserve-gke:ray:KubeRay"
        "$kubernetes:helm.sh/v4:Chart$kubernetes:apps/v1:Deployment::"
        "kuberay-system/kuberay-operator",
        "name": "kuberay-system/kuberay-operator",
        "props": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "spec": {
                "template": {
                    "spec": {
                        "securityContext": values["podSecurityContext"],
                        "containers": [container],
                    }
                }
            },
        },
    }


def _as_sent(value: Any) -> Any:
    """Inputs as the engine sends them to an analyzer (unknowns as Pulumi's marker)."""
    if isinstance(value, Unknown):
        return UNKNOWN
    if isinstance(value, dict):
        return {k: _as_sent(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_sent(v) for v in value]
    return value


def _resources(run: ProgramRun) -> list[dict[str, Any]]:
    return [
        {"type": r.type, "urn": r.urn, "name": r.name, "props": _as_sent(r.inputs)}
        for r in run.resources
        if not r.type.startswith("rayserve-gke:")  # components reach no analyzer
    ]


def _analyze(tmp_path: Path, resources: list[dict[str, Any]], prod: bool) -> list[dict[str, str]]:
    assert POLICY_PYTHON.is_file(), "the install step makes policy/venv (make test)"
    path = tmp_path / "resources.json"
    path.write_text(json.dumps(resources), encoding="utf-8")
    command = [str(POLICY_PYTHON), str(PROJECT_ROOT / "policy" / "drive.py"), str(path)]
    if prod:
        command.append(str(PROD_CONFIG))
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    return list(json.loads(done.stdout))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["preview", "update"])
@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_pack_passes_every_resource_the_program_declares(
    stack: str, mode: str, tmp_path: Path
) -> None:
    resources = [*_resources(shared_run(stack, mode)), _kuberay_deployment()]
    assert len(resources) > 50
    found = _analyze(tmp_path, resources, prod=stack == "prod")
    mandatory = [f for f in found if f["level"] == "MANDATORY"]
    assert mandatory == []
    # In preview some values are unknown: the pack says it could not run, never "passed".
    assert all("during preview" in f["message"] for f in found)
    if mode == "update":
        assert found == []


@pytest.mark.slow
def test_the_pack_refuses_what_the_rules_forbid(tmp_path: Path) -> None:
    (rayservice,) = [
        r for r in _resources(shared_run("prod")) if r["urn"].endswith("::rayserve-prod-classifier")
        and r["type"] == "kubernetes:ray.io/v1:RayService"
    ]  # fmt: skip
    tagged = json.loads(json.dumps(rayservice).replace("@sha256:", ":tag-"))
    bare = json.loads(json.dumps(rayservice))
    del bare["props"]["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    head = bare["props"]["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    chart = {
        "type": "kubernetes:helm.sh/v3:Release",
        "urn": "urn:pulumi:prod::rayserve-gke::kubernetes:helm.sh/v3:Release::x",
        "name": "x",
        "props": {"chart": "kube-prometheus-stack", "version": "99.0.0"},
    }
    found = _analyze(tmp_path, [tagged, bare, chart], prod=True)
    by_policy = {(f["urn"].rsplit("::", 1)[-1], f["policy"]) for f in found}
    assert ("rayserve-prod-classifier", "images-pinned-by-digest") in by_policy
    assert ("rayserve-prod-classifier", "gcs-fault-tolerance") in by_policy
    assert ("rayserve-prod-classifier", "pod-security-restricted") in by_policy
    # The engine shows the policy's description, then the violation.
    writable = [
        f["message"].splitlines()[-1] for f in found if f["policy"] == "pod-security-restricted"
    ]
    assert writable == ["head pod: container 'ray-head' root filesystem is writable"]
    assert ("x", "images-pinned-by-digest") in by_policy  # an unreviewed chart version
    assert all(f["level"] == "MANDATORY" for f in found), found


def _chart_images(values: dict[str, Any], app_version: str) -> set[str]:
    """`registry/repository:tag` of every image block of a chart's values.yaml (an empty
    tag is the chart's appVersion)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            repository = node.get("repository")
            name = node.get("image")
            tag = node.get("tag", node.get("version"))
            if isinstance(repository, str) and repository and (tag is not None or name):
                path = f"{repository}/{name}" if isinstance(name, str) else repository
                registry = node.get("registry")
                full = f"{registry}/{path}" if registry else path
                found.add(f"{full}:{tag or app_version}")
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(values)
    return found


CHARTS = {
    # reviewed key -> (values file, the appVersion an empty tag means)
    "kuberay-operator 1.7.0": ("kuberay-1.7.0/kuberay-operator.values.yaml", "v1.7.0"),
    "gpu-operator v26.7.0": ("gpu-operator-26.7.0/values.yaml", "v26.7.0"),
    "kube-prometheus-stack 88.5.3": ("kube-prometheus-stack-88.5.3/values.yaml", "v0.93.1"),
}


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_the_reviewed_chart_images_are_what_the_pinned_charts_deploy(chart: str) -> None:
    values_file, app_version = CHARTS[chart]
    values = yaml.safe_load((REFERENCE_DIR / values_file).read_text())
    in_chart = _chart_images(values, app_version)
    reviewed = set(REVIEWED_CHART_IMAGES[chart])
    assert reviewed <= in_chart
    # Left out, each for a reason: `latest` (kube-prometheus-stack's CRD-upgrade job, off
    # by default), kubectl whose tag follows the cluster's version, and the GPU
    # Operator's vGPU manager, which a user supplies.
    left_out = {i for i in in_chart - reviewed if not (i.endswith(":latest") or "/kubectl:" in i
                or "vgpu-manager" in i)}  # fmt: skip
    assert left_out == set()


def test_every_chart_the_program_installs_has_reviewed_images() -> None:
    for stack in ("dev", "prod"):
        for chart in shared_run(stack).resources:
            if chart.type.startswith("kubernetes:helm.sh/"):
                key = f"{chart.inputs['chart']} {chart.inputs['version']}"
                assert key in REVIEWED_CHART_IMAGES, key


@pytest.mark.slow
def test_the_stack_policy_refuses_prod_without_disruption_controls(tmp_path: Path) -> None:
    """The stack policy sees every resource at once: take away the Ray PodDisruptionBudgets
    and the maintenance window, and prod is refused, per RayService and for the cluster."""
    resources = []
    for resource in _resources(shared_run("prod")):
        if (
            resource["type"] == "kubernetes:policy/v1:PodDisruptionBudget"
            and "-ray-" in resource["name"]
        ):
            continue
        if resource["type"] == "gcp:container/cluster:Cluster":
            del resource["props"]["maintenancePolicy"]  # a fresh copy (_as_sent)
        resources.append(resource)
    found = [f for f in _analyze(tmp_path, resources, prod=True)
             if f["policy"] == "production-disruption-controls"]  # fmt: skip
    messages = sorted(f["message"].splitlines()[-1] for f in found)
    assert messages == [
        "RayService classifier: no PodDisruptionBudget selects its head pods",
        "RayService classifier: no PodDisruptionBudget selects its worker group 'cpu' pods",
        "RayService embeddings: no PodDisruptionBudget selects its head pods",
        "RayService embeddings: no PodDisruptionBudget selects its worker group 'h100' pods",
        "RayService embeddings: no PodDisruptionBudget selects its worker group 'l4' pods",
        "the GKE cluster has no maintenance window: upgrades may come any time",
    ]
    assert {f["level"] for f in found} == {"MANDATORY"}
    # dev is not held to it (no policy config), and prod as declared passes (above).
    assert not [f for f in _analyze(tmp_path, resources, prod=False)
                if f["policy"] == "production-disruption-controls"]  # fmt: skip
