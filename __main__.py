"""The rayserve-gke Pulumi program: read config, wire the layers, export.

Config is validated in full before any resource is declared, so a bad value fails
`pulumi preview` with the key path named and nothing half-created. The layers, in the
order they are built (each module's docstring carries its number):
 0 apis             infra/apis.py             the Google APIs, first (gke mode)
 1 network          infra/network.py          (gke mode)
 2 cluster          infra/cluster.py          GKE and node pools (gke mode)
 3 kubernetes       infra/kubernetes.py       the one provider, handed down
 4 images           infra/images.py           Artifact Registry, one image per service
 5 observability    infra/observability/      first: the others' monitors need its CRDs
 6 kuberay          infra/kuberay.py          operator and CRDs
 7 gpu operator     infra/gpu_operator.py     when the stack has GPU pools
 8 redis            infra/redis.py            the GCS store for fault tolerance
 9 rayservice       infra/rayservice/         serve config, RayService CRs, upgrade guard
10 edge             infra/edge/               Gateway, routes, IAP, Cloud Armor, NetworkPolicies
"""

from pathlib import Path

import pulumi
import pulumi_gcp as gcp
import yaml

from infra.apis import GcpApis, GcpApisArgs
from infra.cluster import GkeCluster, GkeClusterArgs
from infra.config.sources import load_pulumi_stack
from infra.constants import has_gpu_pools
from infra.edge.gateway import Edge, EdgeArgs, hostnames
from infra.edge.network_policies import NetworkPolicies, NetworkPoliciesArgs
from infra.gpu_operator import GpuOperator, GpuOperatorArgs
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
from infra.observability.cloud_alerts import CloudAlerts, CloudAlertsArgs
from infra.observability.monitoring import Monitoring, MonitoringArgs
from infra.rayservice.component import RayService, RayServiceArgs, app_secrets_of
from infra.rayservice.disruption import RayDisruption, RayDisruptionArgs
from infra.rayservice.serve_config import serve_config
from infra.rayservice.upgrades import (
    OUTPUT_NAME,
    UpgradeGuard,
    UpgradeGuardArgs,
    known_cluster_config,
)
from infra.redis import GcsRedis, GcsRedisArgs, memorystore_instance_id

PROJECT_DIR = Path(__file__).resolve().parent
# Every key and secret checked (the stack file strictly too) before anything is declared.
stack, secrets = load_pulumi_stack(project_dir=PROJECT_DIR)
name = f"rayserve-{pulumi.get_stack()}"
login: RegistryLogin | None
vpc: pulumi.Input[str] | None = None  # GKE mode: Memorystore and internal addresses use it
subnet: pulumi.Input[str] | None = None

if stack.cluster_mode == "gke":  # layers 0-2, and the provider (3) from the cluster
    apis = GcpApis(name, GcpApisArgs(stack))
    pulumi.runtime.register_stack_transformation(apis.after_apis)
    network = Network(name, NetworkArgs(stack))
    vpc, subnet = network.network.id, network.subnetwork.id
    gke = GkeCluster(name, GkeClusterArgs(stack, network))
    access = KubernetesAccess(
        name,
        KubernetesAccessArgs(
            cluster_name=gke.cluster.name,
            endpoint=gke.control_plane_endpoint,
            ca_certificate=gke.control_plane_ca,
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
    pulumi.export("clusterEndpoint", gke.control_plane_endpoint)
else:
    access = KubernetesAccess(name, KubernetesAccessArgs(context=stack.kube_context))
    repository = stack.image_repository
    login = None  # the local Docker credential helpers push to an existing registry

# 4: one image per service, referenced by digest.
images = ServiceImages(name, ServiceImagesArgs(stack, repository, login, project_root=PROJECT_DIR))

on_cluster = pulumi.ResourceOptions(providers=[access.provider])
# 5: monitoring first: KubeRay's and the GPU Operator's ServiceMonitors need its CRDs.
after_monitoring = on_cluster
if stack.monitoring:
    monitoring = Monitoring(
        name,
        MonitoringArgs(
            stack,
            grafana_admin_password=secrets.get("grafanaAdminPassword"),
            pagerduty_key=secrets.get("alertPagerDutyKey"),
            slack_token=secrets.get("alertSlackToken"),
        ),
        opts=on_cluster,
    )
    after_monitoring = pulumi.ResourceOptions(
        providers=[access.provider], depends_on=[monitoring.release]
    )
kuberay = KubeRay(name, KubeRayArgs(stack), opts=after_monitoring)  # 6
after_namespace = pulumi.ResourceOptions(
    providers=[access.provider], depends_on=[kuberay.namespace]
)
# What creates the namespaces the NetworkPolicies (10) go into.
namespace_owners: list[pulumi.Resource] = [kuberay.namespace, kuberay.chart]
if stack.monitoring:
    namespace_owners.append(monitoring.release)
if has_gpu_pools(stack):  # 7
    namespace_owners.append(
        GpuOperator(name, GpuOperatorArgs(stack), opts=after_monitoring).release
    )
redis = GcsRedis(  # 8
    name,
    GcsRedisArgs(
        stack,
        namespace=kuberay.namespace.metadata.name,
        password=secrets.get("redisPassword"),
        network=vpc,
    ),
    opts=after_namespace,
)
if stack.cluster_mode == "gke" and stack.monitoring:
    # 5, outside the cluster: Memorystore and the autoscaler, in Cloud Monitoring.
    CloudAlerts(
        name,
        CloudAlertsArgs(
            stack,
            cluster_name=gke.cluster.name,
            # Each service's GCS has its own instance (infra/redis.py).
            memorystore_instances=(
                [memorystore_instance_id(name, service.name) for service in stack.services]
                if stack.redis == "memorystore"
                else []
            ),
            pagerduty_key=secrets.get("alertPagerDutyKey"),
            slack_token=secrets.get("alertSlackToken"),
        ),
        opts=pulumi.ResourceOptions(depends_on=[r for rs in redis.ready.values() for r in rs]),
    )
# 9: Ray pods' priorities and disruption budgets; the guard (it reads only what is known
# in preview); then one RayService per service, each taking the guard's verdict.
RayDisruption(name, RayDisruptionArgs(stack), opts=after_namespace)
guard = UpgradeGuard(
    name,
    UpgradeGuardArgs(
        stack,
        {
            service.name: known_cluster_config(
                stack,
                service,
                images.source_digests[service.name],
                redis.connections.get(service.name),
            )
            for service in stack.services
        },
    ),
)
for service in stack.services:
    RayService(
        f"{name}-{service.name}",
        RayServiceArgs(
            stack,
            service,
            image=images.refs[service.name],
            api_key_hashes=secrets.get("apiKeyHashes") or {},  # required: checked above
            redis=redis.connections.get(service.name),
            # Created after, deleted before: CRDs, operator, namespace and its Redis.
            depends_on=[kuberay.chart, kuberay.namespace, *redis.ready.get(service.name, [])],
            verdict=guard.verdicts[service.name],
            app_secrets=app_secrets_of(secrets.get("appSecrets"), service.name),
        ),
        opts=on_cluster,
    )
pulumi.export(OUTPUT_NAME, guard.known_configs)
# 10: the public edge, and who may talk to whom inside the cluster.
edge = Edge(
    name,
    EdgeArgs(
        stack,
        iap_client_id=secrets.get("iapOAuthClientId"),
        iap_client_secret=secrets.get("iapOAuthClientSecret"),
        subnetwork=subnet,
    ),
    opts=after_namespace,
)
NetworkPolicies(
    name,
    NetworkPoliciesArgs(stack, memorystore_hosts=redis.memorystore_hosts),
    opts=pulumi.ResourceOptions(providers=[access.provider], depends_on=namespace_owners),
)
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
