"""The rayserve-gke Pulumi program: read config, wire the layers, export.

Config is validated in full before any resource is declared, so a bad value fails
`pulumi preview` with the key path named and nothing half-created.
"""

import pulumi
import pulumi_gcp as gcp
import yaml

from infra.cluster import GkeCluster, GkeClusterArgs
from infra.config_sources import load_pulumi_config
from infra.images import (
    ArtifactRegistry,
    ArtifactRegistryArgs,
    RegistryLogin,
    ServiceImages,
    ServiceImagesArgs,
    registry_host,
)
from infra.kubernetes import KubernetesAccess, KubernetesAccessArgs
from infra.network import Network, NetworkArgs
from infra.serve_config import serve_config

stack = load_pulumi_config()
name = f"rayserve-{pulumi.get_stack()}"
login: RegistryLogin | None

if stack.cluster_mode == "gke":
    network = Network(name, NetworkArgs(stack))
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
serve_configs = {service.name: serve_config(stack, service) for service in stack.services}

if access.kubeconfig is not None:
    pulumi.export("kubeconfig", access.kubeconfig)
pulumi.export("registryUrl", repository)
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
