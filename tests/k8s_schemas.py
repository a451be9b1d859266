"""Validation of generated objects against the pinned upstream schemas.

Custom resources: the CRDs' openAPIV3Schema under ../shared/reference (overridable with
RAYSERVE_REFERENCE_DIR). Core objects: the kubernetes-validate package's schemas for the
Kubernetes version the cluster runs.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from infra.cluster import KUBERNETES_VERSION
from infra.config import PROJECT_ROOT

REFERENCE_DIR = Path(
    os.environ.get("RAYSERVE_REFERENCE_DIR", PROJECT_ROOT.parent / "shared" / "reference")
)
CRD_FILES = {
    ("ray.io/v1", "RayService"): "kuberay-1.7.0/crds/ray.io_rayservices.yaml",
    ("ray.io/v1", "RayCluster"): "kuberay-1.7.0/crds/ray.io_rayclusters.yaml",
    ("gateway.networking.k8s.io/v1", "Gateway"): (
        "gateway-api-1.4.0/crds/gateway.networking.k8s.io_gateways.yaml"
    ),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): (
        "gateway-api-1.4.0/crds/gateway.networking.k8s.io_httproutes.yaml"
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "kube-prometheus-stack-88.5.3/crds/crd-prometheusrules.yaml"
    ),
    (
        "monitoring.coreos.com/v1",
        "PodMonitor",
    ): "kube-prometheus-stack-88.5.3/crds/crd-podmonitors.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "kube-prometheus-stack-88.5.3/crds/crd-servicemonitors.yaml"
    ),
}


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    crd = yaml.safe_load((REFERENCE_DIR / CRD_FILES[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return dict(served["schema"]["openAPIV3Schema"])


def has_schema(obj: dict[str, Any]) -> bool:
    """GKE's own policy CRDs (HealthCheckPolicy, GCPBackendPolicy) ship no schema here."""
    return obj.get("apiVersion") != "networking.gke.io/v1"


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of one object; empty when it is valid."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key[0] == "networking.gke.io/v1":
        raise ValueError(f"no schema for GKE's {key[1]} here; check its fields in a test")
    if key in CRD_FILES:
        validator = jsonschema.Draft7Validator(crd_schema(*key))
        return [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def values_keys(path: Path) -> set[str]:
    """Dotted keys of a chart's values.yaml, including keys documented in comments."""
    text = path.read_text()
    keys = set(_flatten(yaml.safe_load(text)))
    for line in text.splitlines():  # `# watchNamespace:` style documented options
        stripped = line.lstrip("# ").rstrip()
        if line.startswith("# ") and stripped.endswith(":") and " " not in stripped:
            keys.add(stripped[:-1])
    return keys


def _flatten(values: Any, prefix: str = "") -> list[str]:
    if not isinstance(values, dict):
        return []
    keys = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        keys += _flatten(value, f"{dotted}.")
    return keys


def set_keys(values: dict[str, Any], prefix: str = "", free: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys a program sets; below a `free` key (a map of user data) not recursed."""
    keys = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, dict) and dotted not in free:
            keys += set_keys(value, f"{dotted}.", free)
    return keys
