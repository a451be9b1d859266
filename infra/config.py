"""The typed stack config: one model for `pulumi up` and for `make run`.

Keys are camelCase in `Pulumi.<stack>.yaml` (Pulumi's convention) and snake_case here.
Parsing happens in two passes, both before any resource exists:
1. pydantic checks shapes, types, ranges and allowed values of every key;
2. `stack_issues` checks what spans keys (duplicates, references between keys,
   machine/GPU pairings, production rules).
Both report `ConfigIssue`s whose `path` is the key path a user would pass to
`pulumi config set --path`, e.g. `services[0].apps[1].routePrefix`.
"""

from __future__ import annotations

import ast
import importlib.util
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from infra import gpu_catalog

PROJECT = "rayserve-gke"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------
# Field types with errors that say what is allowed.

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
Namespace = Annotated[str, _k8s_name(63)]

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
GpuTypeName = Literal[
    "nvidia-l4",
    "nvidia-tesla-t4",
    "nvidia-tesla-a100",
    "nvidia-a100-80gb",
    "nvidia-h100-80gb",
    "nvidia-h100-mega-80gb",
]
GPU_TYPE_NAMES: tuple[str, ...] = get_args(GpuTypeName)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


# ---------------------------------------------------------------------------
# The models.


class NodePool(_Model):
    """A GKE node pool. `system` is required: on-demand, no GPUs; Ray heads run there."""

    name: PoolName = Field(description="Node pool name.")
    machine_type: str = Field(description="Compute Engine machine type, e.g. g2-standard-8.")
    gpu_type: GpuTypeName | None = Field(None, description="GKE accelerator name.")
    gpu_count: int | None = Field(
        None, ge=1, description="GPUs per node; implied by g2/a2/a3 machine types."
    )
    spot: bool = Field(False, description="Spot VMs (never for `system`).")
    min_nodes: int = Field(0, ge=0, description="Autoscaler minimum nodes (per zone).")
    max_nodes: int = Field(3, ge=1, description="Autoscaler maximum nodes (per zone).")
    disk_size_gb: int = Field(100, ge=20, le=65536, description="Boot disk size.")


class Autoscaling(_Model):
    """Serve replica autoscaling (mapped to `autoscaling_config`)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)


class RayActorOptions(_Model):
    """Resources one replica reserves."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: Quantity | None = None


class Deployment(_Model):
    """One Serve deployment's deploy-time knobs; every one is written out explicitly."""

    name: DeploymentName
    num_replicas: int | None = Field(None, ge=1, description="Fixed replicas (or autoscaling).")
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = Field(5, ge=1)
    # Bounded by default: an overloaded deployment answers 503 at once instead of
    # letting requests pile up until the load balancer times them out.
    max_queued_requests: int = Field(64, ge=1)
    ray_actor_options: RayActorOptions = RayActorOptions()
    user_config: dict[str, Any] = Field(default_factory=dict)
    # New replicas start before old ones stop on a restart (code or args change); without
    # capacity for them the old replicas keep serving. 0 restores Serve's stop-first.
    max_surge_percent: int = Field(100, ge=0, le=100)
    graceful_shutdown_timeout_s: float = Field(20.0, ge=0)
    health_check_period_s: float = Field(10.0, gt=0)
    health_check_timeout_s: float = Field(30.0, gt=0)


class App(_Model):
    """A Serve application: one route prefix, one typed builder."""

    name: AppName
    route_prefix: RoutePrefix
    import_path: ImportPath
    args: dict[str, Any] = Field(default_factory=dict)
    deployments: list[Deployment] = Field(min_length=1)
    slo_p99_ms: int = Field(1000, ge=1, description="p99 latency objective (alerts).")


class WorkerGroup(_Model):
    """Ray workers on one node pool."""

    node_pool: PoolName
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(1, ge=1)
    cpu: Quantity = "4"
    memory: Quantity = "16Gi"
    idle_timeout_seconds: int = Field(300, ge=0)


class Head(_Model):
    """The Ray head pod (on the `system` pool, `num-cpus: 0`)."""

    cpu: Quantity = "2"
    memory: Quantity = "8Gi"


UpgradeType = Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]
ServeIngress = Literal["haproxy", "proxy"]


class UpgradeStrategy(_Model):
    """How KubeRay rolls out a `rayClusterConfig` change."""

    type: UpgradeType = "NewCluster"
    step_size_percent: int | None = Field(None, ge=1, le=100)
    interval_seconds: int | None = Field(None, ge=1)
    max_surge_percent: int | None = Field(None, ge=1, le=100)


class Service(_Model):
    """A RayService: apps that share one image and one Ray cluster."""

    name: ServiceName
    image: ServiceName | None = Field(None, description="Folder under images/; default: the name.")
    head: Head = Head()
    worker_groups: list[WorkerGroup] = Field(min_length=1)
    apps: list[App] = Field(min_length=1)
    upgrade_strategy: UpgradeStrategy = UpgradeStrategy()

    @property
    def image_dir(self) -> str:
        return self.image or self.name


class StackConfig(_Model):
    """Everything one stack (environment) is made of."""

    production: bool = Field(False, description="Production stack: stricter checks.")
    gcp_project: str = Field("", description="GCP project id (required in gke mode).")
    region: str = Field("us-central1", description="GCP region.")
    zone: str = Field("", description="Zone for a zonal cluster; empty = regional.")
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = Field(
        "REGULAR", description="GKE release channel."
    )
    cluster_mode: Literal["gke", "existing"] = Field(
        "gke", description="Create GKE, or use an existing cluster's kubeconfig context."
    )
    kube_context: str = Field("", description="kubeconfig context (existing mode).")
    image_repository: str = Field(
        "", description="Existing mode: where images are pushed (gke mode: Artifact Registry)."
    )
    node_cidr: str = Field("10.10.0.0/20", description="Subnet range of the nodes.")
    pod_cidr: str = Field("10.16.0.0/14", description="Secondary range of the pods.")
    service_cidr: str = Field("10.20.0.0/20", description="Secondary range of the Services.")
    master_cidr: str = Field("172.16.0.0/28", description="The control plane's /28.")
    master_authorized_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed to reach the control plane's public endpoint.",
    )
    gpu_driver: Literal["gke", "operator"] = Field(
        "gke", description="Who installs the NVIDIA driver: GKE, or the GPU Operator."
    )
    namespace: Namespace = Field("ray", description="Namespace of the RayServices.")
    kuberay_single_namespace: bool = Field(
        False, description="Install KubeRay namespace-scoped, watching only `namespace`."
    )
    fail_on_cluster_replacement: bool = Field(
        False, description="Fail an update that would replace a Ray cluster (prod)."
    )
    redis: Literal["in-cluster", "memorystore", "none"] = Field(
        "in-cluster", description="Redis behind the GCS for fault tolerance."
    )
    domain: str = Field(
        "", description="Public DNS name of the Serve API; ray.<domain>, grafana.<domain> too."
    )
    gateway_class: Literal[
        "gke-l7-global-external-managed", "gke-l7-regional-external-managed", "gke-l7-rilb"
    ] = Field("gke-l7-global-external-managed", description="GKE Gateway class.")
    proxy_only_cidr: str = Field(
        "10.129.0.0/23", description="Proxy-only subnet of regional Gateway classes."
    )
    tls_secret: str = Field(
        "", description="Existing mode: a kubernetes.io/tls Secret in `namespace` for the Gateway."
    )
    iap_members: list[str] = Field(
        default_factory=list,
        description="Who may open the Ray dashboards and Grafana through IAP.",
    )
    cloud_armor: bool = Field(False, description="Cloud Armor policy on the Serve backends.")
    rate_limit_per_minute: int = Field(
        600, ge=1, description="Cloud Armor: requests per minute per client IP."
    )
    request_timeout_s: int = Field(
        60, ge=1, le=3600, description="Serve request timeout and load balancer timeout."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Serve log level (logs are JSON)."
    )
    serve_ingress: ServeIngress = Field(
        "haproxy",
        description="Serve's HTTP data plane: `haproxy` (HAProxy in front of replicas that "
        "serve HTTP themselves; 2x the one-text throughput of `proxy`, docs/benchmarks.md) "
        "or `proxy` (Ray's Python proxy actor on every node).",
    )
    monitoring: bool = Field(True, description="Prometheus, Grafana and alerts.")
    log_shipping: bool = Field(True, description="Ship Serve's JSON logs from every pod.")
    prometheus_retention: str = Field(
        "15d", pattern=r"^\d+(ms|s|m|h|d|w|y)$", description="Prometheus retention."
    )
    prometheus_volume_size: Quantity = Field("50Gi", description="Prometheus volume size.")
    alert_error_rate_percent: int = Field(
        5, ge=1, le=100, description="Page when an app's 5xx share exceeds this."
    )
    alert_queued_requests: int = Field(
        50, ge=1, description="Warn when a deployment queues more requests than this."
    )
    alert_gpu_memory_percent: int = Field(
        90, ge=1, le=100, description="Warn when a GPU's memory is fuller than this."
    )
    alert_gpu_idle_percent: int = Field(
        10, ge=1, le=100, description="Flag allocated GPUs busier than this less (cost)."
    )
    alert_redis_memory_percent: int = Field(
        80, ge=1, le=100, description="Page when the GCS Redis uses more of maxmemory."
    )
    node_pools: list[NodePool] = Field(min_length=1)
    services: list[Service] = Field(min_length=1)

    def all_apps(self) -> Iterator[tuple[Service, App]]:
        for service in self.services:
            for app in service.apps:
                yield service, app

    def pool(self, name: str) -> NodePool | None:
        return next((p for p in self.node_pools if p.name == name), None)

    def gpus_per_node(self, pool: NodePool) -> int:
        """GPUs on one node of a (validated) pool; 0 for CPU pools."""
        if pool.gpu_type is None:
            return 0
        return gpu_catalog.gpus_per_node(pool.machine_type, pool.gpu_type, pool.gpu_count)


# Top-level keys whose values are lists of objects. Pulumi.yaml cannot declare a type
# for them (project config types are string, integer, boolean and array of those:
# pulumi/pulumi#11321), so they are documented there in comments instead.
STRUCTURED_KEYS = ("nodePools", "services")
# Keys the Pulumi engine hands over JSON-encoded (lists and objects).
JSON_KEYS = (*STRUCTURED_KEYS, "masterAuthorizedNetworks", "iapMembers")
SYSTEM_POOL = "system"

# ---------------------------------------------------------------------------
# Errors.


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{PROJECT}:{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """The stack config is invalid; raised before any resource is created."""

    def __init__(self, issues: Iterable[ConfigIssue], source: str = "stack config") -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"Invalid {source} ({len(self.issues)} problem(s)):\n{lines}")


def _format_path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields a pydantic error location points into."""
    model: Any = StackConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        model = _innermost_model(field.annotation)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _innermost_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _innermost_model(arg)
        if found is not None:
            return found
    return None


def _issues_from_validation_error(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in error.errors():
        loc = tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            if parent is not None:
                allowed = ", ".join(f.alias or n for n, f in parent.model_fields.items())
                message = f"unknown key; allowed keys: {allowed}"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        issues.append(ConfigIssue(_format_path(loc), message))
    return issues


# ---------------------------------------------------------------------------
# Checks across keys.


def _import_path_issue(import_path: str) -> str | None:
    """Why an import path does not resolve, without importing the app module.

    Only the module's parent packages are imported (they are empty); the module itself
    is parsed, so the Pulumi program needs no model libraries to check a builder.
    """
    module_name, _, attr = import_path.partition(":")
    problem = _parent_package_issue(module_name)
    if problem:
        return f"'{import_path}' does not resolve: {problem}"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        return f"'{import_path}' does not resolve: {exc}"
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return f"'{import_path}' does not resolve: no module '{module_name}'"
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as exc:
        return f"'{import_path}' does not resolve: {module_name} cannot be read ({exc})"
    if attr not in _top_level_names(tree):
        return f"'{import_path}' does not resolve: {module_name} defines no '{attr}'"
    return None


def _parent_package_issue(module_name: str) -> str | None:
    """find_spec imports every parent, so each must be a package, never a module."""
    parts = module_name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(parent)
        except (ImportError, ValueError) as exc:
            return str(exc)
        if spec is None:
            return f"no module '{parent}'"
        if spec.submodule_search_locations is None:
            return f"'{parent}' is a module, not a package"
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _duplicates(items: Iterable[tuple[str, str]], what: str, note: str = "") -> list[ConfigIssue]:
    """Issues for every (path, key) whose key was already seen at an earlier path."""
    seen: dict[str, str] = {}
    issues = []
    for path, key in items:
        if key in seen:
            issues.append(
                ConfigIssue(path, f"duplicate {what} '{key}' (first at {seen[key]}){note}")
            )
        else:
            seen[key] = path
    return issues


def _node_pool_issues(cfg: StackConfig) -> list[ConfigIssue]:
    issues = _duplicates(
        ((f"nodePools[{i}].name", p.name) for i, p in enumerate(cfg.node_pools)),
        "node pool name",
    )
    if cfg.pool(SYSTEM_POOL) is None:
        issues.append(
            ConfigIssue(
                "nodePools",
                f"a '{SYSTEM_POOL}' pool is required (on-demand, no GPUs): it runs the "
                "Ray heads, the operators and monitoring",
            )
        )
    for i, pool in enumerate(cfg.node_pools):
        at = f"nodePools[{i}]"
        if pool.min_nodes > pool.max_nodes:
            issues.append(
                ConfigIssue(
                    f"{at}.minNodes",
                    f"minNodes {pool.min_nodes} > maxNodes {pool.max_nodes}; "
                    "allowed: 0 <= minNodes <= maxNodes",
                )
            )
        family = gpu_catalog.machine_family(pool.machine_type)
        if family is None:
            issues.append(
                ConfigIssue(
                    f"{at}.machineType",
                    f"'{pool.machine_type}' is not a machine type "
                    "(e.g. e2-standard-8, g2-standard-8, a3-highgpu-8g)",
                )
            )
            continue
        if pool.name == SYSTEM_POOL and (pool.spot or pool.gpu_type):
            issues.append(
                ConfigIssue(
                    f"{at}.spot" if pool.spot else f"{at}.gpuType",
                    "the system pool must be on-demand and without GPUs "
                    "(allowed: spot: false, no gpuType)",
                )
            )
        if pool.gpu_type is None:
            if pool.gpu_count is not None:
                issues.append(
                    ConfigIssue(
                        f"{at}.gpuCount",
                        "gpuCount needs a gpuType; allowed gpuType: " + ", ".join(GPU_TYPE_NAMES),
                    )
                )
            if family in gpu_catalog.GPU_ONLY_FAMILIES:
                issues.append(
                    ConfigIssue(
                        f"{at}.gpuType",
                        f"{pool.machine_type} always carries GPUs: set gpuType "
                        f"(allowed: {', '.join(GPU_TYPE_NAMES)})",
                    )
                )
            continue
        try:
            gpu_catalog.gpus_per_node(pool.machine_type, pool.gpu_type, pool.gpu_count)
        except gpu_catalog.PairingError as exc:
            key = "gpuCount" if "count" in str(exc) and pool.gpu_count else "machineType"
            issues.append(ConfigIssue(f"{at}.{key}", str(exc)))
    return issues


def _service_issues(cfg: StackConfig, project_root: Path) -> list[ConfigIssue]:
    issues = _duplicates(
        ((f"services[{i}].name", s.name) for i, s in enumerate(cfg.services)), "service name"
    )
    for i, service in enumerate(cfg.services):
        at = f"services[{i}]"
        dockerfile = project_root / "images" / service.image_dir / "Dockerfile"
        if not dockerfile.is_file():
            available = sorted(
                p.parent.name for p in (project_root / "images").glob("*/Dockerfile")
            )
            issues.append(
                ConfigIssue(
                    f"{at}.image",
                    f"no images/{service.image_dir}/Dockerfile; "
                    f"allowed: {', '.join(available) or '(none yet)'}",
                )
            )
        issues += _duplicates(
            (
                (f"{at}.workerGroups[{j}].nodePool", g.node_pool)
                for j, g in enumerate(service.worker_groups)
            ),
            "worker group node pool",
        )
        worker_pools = []
        for j, group in enumerate(service.worker_groups):
            gat = f"{at}.workerGroups[{j}]"
            pool = cfg.pool(group.node_pool)
            usable = [p.name for p in cfg.node_pools if p.name != SYSTEM_POOL]
            if pool is None or pool.name == SYSTEM_POOL:
                issues.append(
                    ConfigIssue(
                        f"{gat}.nodePool",
                        f"'{group.node_pool}' is not a worker node pool; "
                        f"allowed: {', '.join(usable) or '(define one in nodePools)'}",
                    )
                )
            else:
                worker_pools.append(pool)
            if group.min_replicas > group.max_replicas:
                issues.append(
                    ConfigIssue(
                        f"{gat}.minReplicas",
                        f"minReplicas {group.min_replicas} > maxReplicas "
                        f"{group.max_replicas}; allowed: minReplicas <= maxReplicas",
                    )
                )
        issues += _upgrade_issues(service.upgrade_strategy, f"{at}.upgradeStrategy")
        gpu_pools = [p for p in worker_pools if p.gpu_type]
        capacities = [_safe_gpus(cfg, p) for p in gpu_pools]
        # A pool with an invalid GPU pairing is reported there; its capacity is unknown.
        gpu_capacity = (
            None if None in capacities else max((c for c in capacities if c is not None), default=0)
        )
        for j, app in enumerate(service.apps):
            issues += _app_issues(app, f"{at}.apps[{j}]", gpu_capacity)
    return issues


def _safe_gpus(cfg: StackConfig, pool: NodePool) -> int | None:
    try:
        return cfg.gpus_per_node(pool)
    except gpu_catalog.PairingError:
        return None  # reported against the pool already


def _upgrade_issues(strategy: UpgradeStrategy, at: str) -> list[ConfigIssue]:
    incremental_keys = {
        "stepSizePercent": strategy.step_size_percent,
        "intervalSeconds": strategy.interval_seconds,
        "maxSurgePercent": strategy.max_surge_percent,
    }
    if strategy.type == "NewClusterWithIncrementalUpgrade":
        return [
            ConfigIssue(f"{at}.{key}", f"required when type is {strategy.type}")
            for key, value in incremental_keys.items()
            if value is None
        ]
    return [
        ConfigIssue(
            f"{at}.{key}",
            f"only applies to type NewClusterWithIncrementalUpgrade, not {strategy.type}",
        )
        for key, value in incremental_keys.items()
        if value is not None
    ]


def _app_issues(app: App, at: str, gpu_capacity: int | None) -> list[ConfigIssue]:
    issues = []
    problem = _import_path_issue(app.import_path)
    if problem:
        issues.append(ConfigIssue(f"{at}.importPath", problem))
    issues += _duplicates(
        ((f"{at}.deployments[{k}].name", d.name) for k, d in enumerate(app.deployments)),
        "deployment name",
    )
    for k, dep in enumerate(app.deployments):
        dat = f"{at}.deployments[{k}]"
        if dep.num_replicas is not None and dep.autoscaling is not None:
            issues.append(ConfigIssue(dat, "set numReplicas or autoscaling, not both"))
        if dep.autoscaling is not None:
            scale = dep.autoscaling
            if scale.min_replicas > scale.max_replicas:
                issues.append(
                    ConfigIssue(
                        f"{dat}.autoscaling.minReplicas",
                        f"minReplicas {scale.min_replicas} > maxReplicas "
                        f"{scale.max_replicas}; allowed: minReplicas <= maxReplicas",
                    )
                )
            initial = scale.initial_replicas
            if initial is not None and not scale.min_replicas <= initial <= scale.max_replicas:
                issues.append(
                    ConfigIssue(
                        f"{dat}.autoscaling.initialReplicas",
                        f"initialReplicas {initial} is outside "
                        f"[minReplicas {scale.min_replicas}, maxReplicas {scale.max_replicas}]",
                    )
                )
        batch = dep.user_config.get("max_batch_size")
        if (
            isinstance(batch, int)
            and not isinstance(batch, bool)
            and dep.max_ongoing_requests < batch
        ):
            issues.append(
                ConfigIssue(
                    f"{dat}.maxOngoingRequests",
                    f"maxOngoingRequests {dep.max_ongoing_requests} < userConfig."
                    f"max_batch_size {batch}: a replica could never fill a batch; "
                    f"allowed: maxOngoingRequests >= {batch}",
                )
            )
        gpus = dep.ray_actor_options.num_gpus
        if gpu_capacity is None:
            continue
        if gpus > 0 and gpu_capacity == 0:
            issues.append(
                ConfigIssue(
                    f"{dat}.rayActorOptions.numGpus",
                    f"asks for {gpus:g} GPU(s) but the service has no GPU worker group; "
                    "allowed: numGpus 0, or add a workerGroup on a pool with a gpuType",
                )
            )
        elif gpus > gpu_capacity > 0:
            issues.append(
                ConfigIssue(
                    f"{dat}.rayActorOptions.numGpus",
                    f"asks for {gpus:g} GPUs but the service's largest GPU node has "
                    f"{gpu_capacity}; allowed: numGpus <= {gpu_capacity}",
                )
            )
    return issues


def _stack_wide_app_issues(cfg: StackConfig) -> list[ConfigIssue]:
    located = [
        (f"services[{i}].apps[{j}]", app)
        for i, service in enumerate(cfg.services)
        for j, app in enumerate(service.apps)
    ]
    return _duplicates(((f"{at}.name", app.name) for at, app in located), "app name") + _duplicates(
        ((f"{at}.routePrefix", normalize_route_prefix(app.route_prefix)) for at, app in located),
        "route prefix",
        " ('/a' and '/a/' are the same route); allowed: one app per route prefix",
    )


def _cluster_issues(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    if cfg.production and cfg.redis == "none":
        issues.append(
            ConfigIssue(
                "redis",
                "a production stack needs GCS fault tolerance; allowed: memorystore, "
                "in-cluster ('none' is for dev stacks only)",
            )
        )
    if cfg.cluster_mode == "gke" and not re.fullmatch(
        r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", cfg.gcp_project
    ):
        issues.append(
            ConfigIssue(
                "gcpProject",
                f"'{cfg.gcp_project}' is not a GCP project id (6-30 lowercase letters, "
                "digits and '-'); required when clusterMode is gke",
            )
        )
    if cfg.redis == "memorystore" and cfg.cluster_mode != "gke":
        issues.append(
            ConfigIssue(
                "redis",
                "memorystore needs the stack's own VPC (clusterMode gke); allowed with "
                "clusterMode existing: in-cluster, none",
            )
        )
    if cfg.cluster_mode == "existing":
        issues += [
            ConfigIssue(key, "required when clusterMode is existing")
            for key, value in (
                ("kubeContext", cfg.kube_context),
                ("imageRepository", cfg.image_repository),
            )
            if not value
        ]
    issues += _cidr_issues(cfg)
    issues += _edge_issues(cfg)
    if not re.fullmatch(r"^[a-z]+-[a-z]+\d+$", cfg.region):
        issues.append(
            ConfigIssue("region", f"'{cfg.region}' is not a GCP region (e.g. us-central1)")
        )
    if cfg.zone and not re.fullmatch(rf"^{re.escape(cfg.region)}-[a-z]$", cfg.zone):
        issues.append(
            ConfigIssue(
                "zone",
                f"'{cfg.zone}' is not a zone of region {cfg.region} "
                f"(e.g. {cfg.region}-a); empty for a regional cluster",
            )
        )
    return issues


def _cidr_issues(cfg: StackConfig) -> list[ConfigIssue]:
    """Ranges must parse, not overlap each other, and the control plane's must be a /28."""
    issues = []
    ranges: dict[str, ipaddress.IPv4Network] = {}
    for key, value in (
        ("nodeCidr", cfg.node_cidr),
        ("podCidr", cfg.pod_cidr),
        ("serviceCidr", cfg.service_cidr),
        ("masterCidr", cfg.master_cidr),
        ("proxyOnlyCidr", cfg.proxy_only_cidr),
    ):
        try:
            ranges[key] = ipaddress.IPv4Network(value)
        except ValueError as exc:
            issues.append(ConfigIssue(key, f"'{value}' is not an IPv4 network ({exc})"))
    if "masterCidr" in ranges and ranges["masterCidr"].prefixlen != 28:
        issues.append(ConfigIssue("masterCidr", f"'{cfg.master_cidr}' must be a /28 (GKE's rule)"))
    keys = list(ranges)
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            if ranges[first].overlaps(ranges[second]):
                issues.append(
                    ConfigIssue(second, f"{ranges[second]} overlaps {first} {ranges[first]}")
                )
    for i, value in enumerate(cfg.master_authorized_networks):
        try:
            ipaddress.IPv4Network(value)
        except ValueError as exc:
            issues.append(
                ConfigIssue(f"masterAuthorizedNetworks[{i}]", f"'{value}' is not a CIDR ({exc})")
            )
    return issues


def _edge_issues(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    if not re.fullmatch(r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", cfg.domain):
        issues.append(
            ConfigIssue("domain", f"'{cfg.domain}' is not a DNS name (e.g. serve.example.com)")
        )
    if cfg.cluster_mode == "existing" and not cfg.tls_secret:
        issues.append(
            ConfigIssue(
                "tlsSecret",
                "required when clusterMode is existing (no Certificate Manager there): "
                "a kubernetes.io/tls Secret for the Gateway",
            )
        )
    if cfg.cloud_armor and cfg.gateway_class != "gke-l7-global-external-managed":
        issues.append(
            ConfigIssue(
                "cloudArmor",
                "Cloud Armor backend policies here are global; allowed with "
                f"{cfg.gateway_class}: false (or gatewayClass gke-l7-global-external-managed)",
            )
        )
    member = re.compile(r"(user|group|serviceAccount|domain):[^\s]+")
    for i, value in enumerate(cfg.iap_members):
        if not member.fullmatch(value):
            issues.append(
                ConfigIssue(
                    f"iapMembers[{i}]",
                    f"'{value}' is not an IAM member; allowed: user:..., group:..., "
                    "serviceAccount:..., domain:...",
                )
            )
    return issues


def stack_issues(cfg: StackConfig, project_root: Path = PROJECT_ROOT) -> list[ConfigIssue]:
    """Every problem that spans keys; empty when the stack is deployable."""
    return (
        _cluster_issues(cfg)
        + _node_pool_issues(cfg)
        + _service_issues(cfg, project_root)
        + _stack_wide_app_issues(cfg)
    )


def parse_stack_config(
    raw: Mapping[str, Any], *, project_root: Path = PROJECT_ROOT, source: str = "stack config"
) -> StackConfig:
    """Validate un-namespaced config values into a StackConfig, or raise ConfigError."""
    if not isinstance(raw, Mapping):
        raise ConfigError([ConfigIssue("", "the config must be a mapping of keys")], source)
    try:
        cfg = StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_issues_from_validation_error(exc), source) from None
    issues = stack_issues(cfg, project_root)
    if issues:
        raise ConfigError(issues, source)
    return cfg
