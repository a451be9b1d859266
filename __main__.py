"""The rayserve-gke Pulumi program: read config, wire the layers, export.

Config is validated in full before any resource is declared, so a bad value fails
`pulumi preview` with the key path named and nothing half-created.
"""

import pulumi
import pulumi_gcp as gcp
import yaml

from infra.cluster import GkeCluster, GkeClusterArgs
from infra.config_sources import load_pulumi_config
from infra.edge import Edge, EdgeArgs, hostnames
from infra.gpu_operator import GpuOperator, GpuOperatorArgs, needs_gpu_operator
from infra.images import (
    ArtifactRegistry,
    ArtifactRegistryArgs,
    RegistryLogin,
    ServiceImages,
    ServiceImagesArgs,
    registry_host,
)
from infra.kuberay import KubeRay, KubeRayArgs
from infra.kubernetes import KubernetesAccess, KubernetesAccessArgs
from infra.network import Network, NetworkArgs
from infra.observability import Monitoring, MonitoringArgs
from infra.ray_services import RayService, RayServiceArgs
from infra.redis import GcsRedis, GcsRedisArgs
from infra.serve_config import serve_config
from infra.upgrades import UpgradeGuard, UpgradeGuardArgs

stack = load_pulumi_config()
name = f"rayserve-{pulumi.get_stack()}"
login: RegistryLogin | None
vpc: pulumi.Input[str] | None = None  # GKE mode: Memorystore and internal addresses use it
subnet: pulumi.Input[str] | None = None

if stack.cluster_mode == "gke":
    network = Network(name, NetworkArgs(stack))
    vpc, subnet = network.network.id, network.subnetwork.id
    gke = GkeCluster(name, GkeClusterArgs(stack, network))
    access = KubernetesAccess(
        name,
        KubernetesAccessArgs(
            cluster_name=gke.cluster.name,
            endpoint=gke.cluster.endpoint,
            ca_certificate=gke.cluster.master_auth.cluster_ca_certificate,
        ),
    )
    registry = ArtifactRegistry(name, ArtifactRegistryArgs(stack, gke.node_service_account.email))
    repository: pulumi.Input[str] = registry.url
    login = RegistryLogin(
        server=registry_host(stack.region),
        username="oauth2accesstoken",
        password=gcp.organizations.get_client_config_output().access_token,
    )
    pulumi.export("clusterName", gke.cluster.name)
    pulumi.export("clusterEndpoint", gke.cluster.endpoint)
else:
    access = KubernetesAccess(name, KubernetesAccessArgs(context=stack.kube_context))
    repository = stack.image_repository
    login = None  # the local Docker credential helpers push to an existing registry

images = ServiceImages(name, ServiceImagesArgs(stack, repository, login))

on_cluster = pulumi.ResourceOptions(providers=[access.provider])
secrets = pulumi.Config()
# Monitoring first: KubeRay's and the GPU Operator's ServiceMonitors need its CRDs.
after_monitoring = on_cluster
if stack.monitoring:
    monitoring = Monitoring(
        name,
        MonitoringArgs(
            stack,
            grafana_admin_password=secrets.get_secret("grafanaAdminPassword"),
            alert_webhook_url=secrets.get_secret("alertWebhookUrl"),
        ),
        opts=on_cluster,
    )
    after_monitoring = pulumi.ResourceOptions(
        providers=[access.provider], depends_on=[monitoring.release]
    )
kuberay = KubeRay(name, KubeRayArgs(stack), opts=after_monitoring)
after_namespace = pulumi.ResourceOptions(
    providers=[access.provider], depends_on=[kuberay.namespace]
)
if needs_gpu_operator(stack):
    GpuOperator(name, GpuOperatorArgs(stack), opts=after_monitoring)
redis = GcsRedis(
    name,
    GcsRedisArgs(
        stack,
        namespace=kuberay.namespace.metadata.name,
        password=secrets.get_secret("redisPassword"),
        network=vpc,
    ),
    opts=after_namespace,
)
ray_services = {}
for service in stack.services:
    ray_services[service.name] = RayService(
        f"{name}-{service.name}",
        RayServiceArgs(
            stack,
            service,
            image=images.refs[service.name],
            # No hashes configured: the proxies refuse every request (fail closed).
            api_key_hashes=secrets.get_secret_object("apiKeyHashes") or {},
            redis=redis.connection,
            # Created after, deleted before: CRDs, operator, namespace and Redis.
            depends_on=[kuberay.chart, kuberay.namespace, *redis.ready],
        ),
        opts=on_cluster,
    )
edge = Edge(
    name,
    EdgeArgs(
        stack,
        iap_client_id=secrets.get_secret("iapOAuthClientId"),
        iap_client_secret=secrets.get_secret("iapOAuthClientSecret"),
        subnetwork=subnet,
    ),
    opts=after_namespace,
)
# Warn (prod: fail) before KubeRay replaces a Ray cluster; remember this run's clusters.
guard = UpgradeGuard(
    name,
    UpgradeGuardArgs(stack, {n: rs.cluster_config for n, rs in ray_services.items()}),
)
pulumi.export("rayClusterConfigs", guard.current)
serve_configs = {service.name: serve_config(stack, service) for service in stack.services}

if access.kubeconfig is not None:
    pulumi.export("kubeconfig", access.kubeconfig)
pulumi.export("registryUrl", repository)
if edge.address is not None:
    pulumi.export("gatewayAddress", edge.address)
pulumi.export("endpoints", {name: f"https://{host}" for name, host in hostnames(stack).items()})
pulumi.export("imageDigests", images.refs)
pulumi.export("production", stack.production)
pulumi.export(
    "routes",
    {app.route_prefix: f"{service.name}/{app.name}" for service, app in stack.all_apps()},
)
pulumi.export(
    "serveConfigs",
    {svc: yaml.safe_dump(config, sort_keys=False) for svc, config in serve_configs.items()},
)
