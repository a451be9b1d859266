"""The models of a stack config: what each key is, its default and its range."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from infra.config import gpu_catalog
from infra.config.fields import (
    AppName,
    Cidr,
    DeploymentName,
    EnvName,
    GpuTypeName,
    ImportPath,
    Namespace,
    PoolName,
    Quantity,
    RoutePrefix,
    ServiceName,
)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
    )


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
    # GKE's limit: 1,000 nodes per node pool per zone.
    max_nodes: int = Field(3, ge=1, le=1000, description="Autoscaler maximum nodes (per zone).")
    disk_size_gb: int = Field(100, ge=20, le=65536, description="Boot disk size.")
    upgrade_max_surge: int = Field(
        1, ge=0, le=100, description="Extra nodes GKE adds while upgrading the pool."
    )
    upgrade_max_unavailable: int = Field(
        0, ge=0, le=100, description="Nodes GKE may take down at once while upgrading."
    )


class Autoscaling(_Model):
    """Serve replica autoscaling (mapped to `autoscaling_config`)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)


# Every worker pod advertises these custom Ray resources (`pool:<name>`, and
# `accelerator:<gpuType>` on GPU pools), so a deployment can be pinned to its hardware.
POOL_RESOURCE = "pool:"
ACCELERATOR_RESOURCE = "accelerator:"
# Units each pod advertises: a pinned replica takes 1, so pinning never limits packing.
PLACEMENT_UNITS = 1000


class RayActorOptions(_Model):
    """Resources one replica reserves."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: Quantity | None = None
    accelerator: GpuTypeName | None = Field(
        None, description="Run only on worker groups whose pool has this GPU type."
    )
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica: `pool:<nodePool>` or "
        "`accelerator:<gpuType>` pins to those worker groups.",
    )

    @property
    def placement(self) -> dict[str, float]:
        """The custom resources one replica needs (`accelerator` is shorthand)."""
        wanted = dict(self.resources)
        if self.accelerator:
            wanted[ACCELERATOR_RESOURCE + self.accelerator] = 1.0
        return wanted


class Deployment(_Model):
    """One Serve deployment's deploy-time knobs; every one is written out explicitly."""

    name: DeploymentName
    num_replicas: int | None = Field(None, ge=1, description="Fixed replicas (or autoscaling).")
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int = Field(5, ge=1)
    # Bounded by default: an overloaded deployment answers 503 at once instead of
    # letting requests pile up until the load balancer times them out.
    max_queued_requests: int = Field(64, ge=1)
    # The 503 an overloaded deployment answers says when to come back (`Retry-After`),
    # which clients (rayserve_client) wait out instead of retrying at once.
    retry_after_s: int = Field(1, ge=0, le=3600)
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
# `serveIngress: auto`: production stacks get Ray's proxy, the others HAProxy. In the
# drills (docs/reliability.md) HAProxy lost the requests it had sent to a lost worker
# node, where the proxy lost none: production waits for that to change (a test
# recomputes this from the drills' JSON).
INGRESS_AUTO = "auto"


class UpgradeStrategy(_Model):
    """How KubeRay rolls out a `rayClusterConfig` change."""

    type: UpgradeType = "NewCluster"


class Service(_Model):
    """A RayService: apps that share one image and one Ray cluster."""

    name: ServiceName
    image: ServiceName | None = Field(None, description="Folder under images/; default: the name.")
    head: Head = Head()
    worker_groups: list[WorkerGroup] = Field(min_length=1)
    apps: list[App] = Field(min_length=1)
    upgrade_strategy: UpgradeStrategy = UpgradeStrategy()
    env: dict[EnvName, str] = Field(
        default_factory=dict, description="Plain environment variables of the Ray containers."
    )
    secret_env: list[EnvName] = Field(
        default_factory=list,
        description="Environment variables whose values come from the secret `appSecrets` "
        "(ESC), `{service: {NAME: value}}`, through a Kubernetes Secret.",
    )

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
    maintenance_days: str = Field(
        "SA,SU",
        pattern=r"^(MO|TU|WE|TH|FR|SA|SU)(,(MO|TU|WE|TH|FR|SA|SU))*$",
        description="Days (UTC) GKE may upgrade the control plane and nodes: MO,TU,...",
    )
    maintenance_start_utc: str = Field(
        "02:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Start of each day's maintenance window, HH:MM UTC.",
    )
    maintenance_hours: int = Field(
        6, ge=4, le=24, description="Length of each maintenance window (GKE: at least 4 h)."
    )
    cluster_mode: Literal["gke", "existing"] = Field(
        "gke", description="Create GKE, or use an existing cluster's kubeconfig context."
    )
    kube_context: str = Field("", description="kubeconfig context (existing mode).")
    image_repository: str = Field(
        "", description="Existing mode: where images are pushed (gke mode: Artifact Registry)."
    )
    node_cidr: Cidr = Field("10.10.0.0/20", description="Subnet range of the nodes.")
    pod_cidr: Cidr = Field("10.16.0.0/14", description="Secondary range of the pods.")
    service_cidr: Cidr = Field("10.20.0.0/20", description="Secondary range of the Services.")
    master_cidr: Cidr = Field("172.16.0.0/28", description="The control plane's /28.")
    control_plane_access: Literal["dns", "ip"] = Field(
        "dns",
        description="How clients reach the control plane: its DNS endpoint (IAM) or its IP "
        "endpoint (masterAuthorizedNetworks).",
    )
    master_authorized_networks: list[Cidr] = Field(
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
        False,
        description="Refuse a Ray cluster replacement that does not fit the pools (prod).",
    )
    approve_cluster_replacement: str = Field(
        "",
        pattern=r"^([a-z][-a-z0-9]*:[0-9a-f]{12}(,[a-z][-a-z0-9]*:[0-9a-f]{12})*)?$",
        description="`service:fingerprint` pairs: replacements approved for one run.",
    )
    redis: Literal["in-cluster", "memorystore", "none"] = Field(
        "in-cluster", description="Redis behind the GCS for fault tolerance."
    )
    redis_tier: Literal["STANDARD_HA", "BASIC"] = Field(
        "STANDARD_HA", description="Memorystore tier: STANDARD_HA (replica, failover) or BASIC."
    )
    redis_memory_gb: int = Field(
        1, ge=1, le=300, description="Memorystore capacity in GB (its maxmemory)."
    )
    redis_cpu: Quantity = Field("250m", description="In-cluster Redis CPU request.")
    redis_memory: Quantity = Field(
        "1Gi", description="In-cluster Redis memory (request = limit); maxmemory is 75% of it."
    )
    redis_volume_size: Quantity = Field(
        "10Gi", description="In-cluster Redis volume (AOF): at least twice redisMemory."
    )
    domain: str = Field(
        "", description="Public DNS name of the Serve API; ray.<domain>, grafana.<domain> too."
    )
    gateway_class: Literal[
        "gke-l7-global-external-managed", "gke-l7-regional-external-managed", "gke-l7-rilb"
    ] = Field("gke-l7-global-external-managed", description="GKE Gateway class.")
    proxy_only_cidr: Cidr = Field(
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
        # Never kept: _resolve_ingress turns `auto` into a mode by `production`.
        cast(ServeIngress, INGRESS_AUTO),
        description="Serve's HTTP data plane: `haproxy` (HAProxy in front of replicas that "
        "serve HTTP themselves; 2x the one-text throughput of `proxy`, docs/benchmarks.md), "
        "`proxy` (Ray's Python proxy actor on every node), or `auto`: `proxy` in production "
        "stacks, `haproxy` elsewhere (docs/reliability.md).",
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
    alert_redis_connected_clients: int = Field(
        200, ge=1, description="Warn when the GCS Redis has more clients (only GCSs connect)."
    )
    alert_redis_cpu_percent: int = Field(
        80, ge=1, le=100, description="Warn when the GCS Redis uses more of one core."
    )
    alert_pod_pending_minutes: int = Field(
        15, ge=1, description="Warn when a Ray pod stays Pending longer than this."
    )
    alert_slack_channel: str = Field(
        "#rayserve-alerts",
        pattern=r"^#[a-z0-9][a-z0-9._-]{0,79}$",
        description="Slack channel warnings go to, posted with alertSlackToken.",
    )
    node_pools: list[NodePool] = Field(min_length=1)
    services: list[Service] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _resolve_ingress(cls, data: Any) -> Any:
        """`serveIngress: auto` (the default) -> `proxy` in production, else `haproxy`."""
        if not isinstance(data, dict):
            return data
        key = "serve_ingress" if "serve_ingress" in data else "serveIngress"
        if data.get(key, INGRESS_AUTO) != INGRESS_AUTO:
            return data
        try:
            production = TypeAdapter(bool).validate_python(data.get("production", False))
        except ValidationError:
            production = False  # the field itself reports the bad value
        return {**data, key: "proxy" if production else "haproxy"}

    def all_apps(self) -> Iterator[tuple[Service, App]]:
        for service in self.services:
            for app in service.apps:
                yield service, app

    def pool(self, name: str) -> NodePool | None:
        return next((p for p in self.node_pools if p.name == name), None)

    def pool_resources(self, pool: NodePool) -> dict[str, float]:
        """The custom Ray resources every worker pod on `pool` advertises."""
        advertised = {POOL_RESOURCE + pool.name: float(PLACEMENT_UNITS)}
        if pool.gpu_type:
            advertised[ACCELERATOR_RESOURCE + pool.gpu_type] = float(PLACEMENT_UNITS)
        return advertised

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
