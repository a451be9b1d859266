"""Field types: each checks one key on its own, with an error that says what is allowed."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from infra.config import gpu_catalog
from infra.constants import GPU_OPERATOR_NAMESPACE, MONITORING_NAMESPACE, OPERATOR_NAMESPACE

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _k8s_name(max_length: int) -> Any:
    def check(value: str) -> str:
        if len(value) > max_length or not _DNS_LABEL.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a valid Kubernetes name: use lowercase letters, digits "
                f"and '-', start with a letter, end with a letter or digit, "
                f"at most {max_length} characters"
            )
        return value

    return AfterValidator(check)


# RayService names get suffixes (`-xxxxx-head-svc`, `-serve-svc`) that must still fit
# Kubernetes' 63-character Service names; GKE caps node pool names at 40.
ServiceName = Annotated[str, _k8s_name(40)]
PoolName = Annotated[str, _k8s_name(40)]
AppName = Annotated[str, _k8s_name(30)]

# Kubernetes' and GKE's own namespaces, and the ones this stack's operators live in:
# RayServices there would mix with (and their NetworkPolicies would lock down) others.
RESERVED_NAMESPACES = frozenset(
    {"default", OPERATOR_NAMESPACE, MONITORING_NAMESPACE, GPU_OPERATOR_NAMESPACE}
)
RESERVED_NAMESPACE_PREFIXES = ("kube-", "gke-", "gmp-")


def _check_namespace(value: str) -> str:
    if value in RESERVED_NAMESPACES or value.startswith(RESERVED_NAMESPACE_PREFIXES):
        raise ValueError(
            f"'{value}' is reserved (Kubernetes', GKE's or this stack's operators'); "
            f"allowed: any other name, not {', '.join(sorted(RESERVED_NAMESPACES))} or "
            f"{', '.join(p + '*' for p in RESERVED_NAMESPACE_PREFIXES)} (e.g. 'ray')"
        )
    return value


Namespace = Annotated[str, _k8s_name(63), AfterValidator(_check_namespace)]

_QUANTITY = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|m)?$")
_UNITS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def quantity_value(quantity: str) -> float:
    """A Kubernetes quantity as a number: `8Gi` -> 8589934592, `500m` -> 0.5."""
    match = _QUANTITY.fullmatch(quantity)
    if not match:
        raise ValueError(f"'{quantity}' is not a Kubernetes quantity")
    return float(match.group("num")) * _UNITS[match.group("unit")]


def _check_quantity(value: str) -> str:
    if not _QUANTITY.fullmatch(value) or quantity_value(value) <= 0:
        raise ValueError(
            f"'{value}' is not a positive Kubernetes quantity (e.g. '2', '500m', '8Gi', '512Mi')"
        )
    return value


Quantity = Annotated[str, AfterValidator(_check_quantity)]


def _check_route_prefix(value: str) -> str:
    if not re.fullmatch(r"^/[A-Za-z0-9._~/-]*$", value) or "//" in value:
        raise ValueError(
            f"'{value}' is not a route prefix: start with '/', then letters, digits "
            "and . _ ~ - /, no empty segments (e.g. '/embed', '/v1/classify')"
        )
    if normalize_route_prefix(value) == "/-" or value.startswith("/-/"):
        raise ValueError(
            f"'{value}' is under '/-/', where Serve answers its own health and routes "
            "checks (/-/healthz, /-/routes); allowed: any other prefix, e.g. '/embed'"
        )
    return value


RoutePrefix = Annotated[str, AfterValidator(_check_route_prefix)]


def normalize_route_prefix(prefix: str) -> str:
    """`/a/` and `/a` are the same route to Serve; `/` stays `/`."""
    return prefix.rstrip("/") or "/"


def _check_import_path(value: str) -> str:
    if not re.fullmatch(r"^serve_apps(\.[A-Za-z_][A-Za-z0-9_]*)+:[A-Za-z_][A-Za-z0-9_]*$", value):
        raise ValueError(
            f"'{value}' is not a builder import path: use 'serve_apps.<package>.<module>:"
            "<builder>' (apps live in serve_apps/, which every image carries)"
        )
    return value


ImportPath = Annotated[str, AfterValidator(_check_import_path)]
DeploymentName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
GPU_TYPE_NAMES: tuple[str, ...] = tuple(gpu_catalog.GPU_TYPES)


def _check_gpu_type(value: str) -> str:
    if value not in gpu_catalog.GPU_TYPES:
        allowed = ", ".join(f"'{name}'" for name in GPU_TYPE_NAMES)
        raise ValueError(f"'{value}' is not a GKE GPU; allowed: {allowed}")
    return value


# The GPUs the machine catalog knows (infra/config/gpu_catalog.py), nothing else.
GpuTypeName = Annotated[str, AfterValidator(_check_gpu_type)]


def _check_ipv4_network(value: str) -> str:
    try:
        ipaddress.IPv4Network(value)
    except ValueError as exc:
        raise ValueError(f"'{value}' is not an IPv4 network ({exc})") from None
    return value


Cidr = Annotated[str, AfterValidator(_check_ipv4_network)]


# Environment variables Ray, KubeRay and this platform set on Ray containers: an app's
# `env`/`secretEnv` must not shadow them (a wrong RAY_* or PYTHONPATH breaks the node).
RESERVED_ENV_PREFIXES = ("RAY_", "RAYSERVE_", "KUBERAY_", "NVIDIA_", "CUDA_")
RESERVED_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "PYTHONPATH", "TMPDIR", "LD_LIBRARY_PATH", "HOSTNAME",
        "MY_POD_IP", "MY_POD_NAME", "FQ_RAY_IP", "REDIS_PASSWORD", "OMP_NUM_THREADS",
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME",
    }
)  # fmt: skip


def _check_env_name(value: str) -> str:
    if not re.fullmatch(r"^[A-Z_][A-Z0-9_]{0,127}$", value):
        raise ValueError(
            f"'{value}' is not an environment variable name: use A-Z, 0-9 and _, not "
            "starting with a digit (e.g. HF_TOKEN, MODEL_REVISION)"
        )
    if value in RESERVED_ENV_NAMES or value.startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(
            f"'{value}' is set by Ray, KubeRay or this platform; allowed: any other name, not "
            f"{', '.join(p + '*' for p in RESERVED_ENV_PREFIXES)} or "
            f"{', '.join(sorted(RESERVED_ENV_NAMES))}"
        )
    return value


EnvName = Annotated[str, AfterValidator(_check_env_name)]
