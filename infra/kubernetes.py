"""Layer 3: the one Kubernetes provider every later component gets through `opts`.

On GKE it is built from the cluster's endpoint with a kubeconfig whose user runs the
`gke-gcloud-auth-plugin` exec plugin: no token or key is ever written to state, and the
kubeconfig is the same bytes on every run, so it never forces a replacement. With
`controlPlaneAccess: dns` the endpoint is the cluster's DNS name (a publicly trusted
certificate, so no CA is pinned; IAM decides who may connect, from anywhere: CI runners
included); with `ip` it is the IP endpoint with the cluster's own CA.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

AUTH_PLUGIN = "gke-gcloud-auth-plugin"


def gke_kubeconfig(cluster_name: str, endpoint: str, ca_certificate: str | None) -> str:
    """A kubeconfig for one GKE cluster that authenticates through gcloud's plugin
    (`ca_certificate` None: the DNS endpoint's public certificate is trusted as is)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {
                    "server": f"https://{endpoint}",
                    **({"certificate-authority-data": ca_certificate} if ca_certificate else {}),
                },
            }
        ],
        "contexts": [
            {"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}
        ],
        "current-context": cluster_name,
        "users": [
            {
                "name": cluster_name,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": AUTH_PLUGIN,
                        "installHint": "gcloud components install gke-gcloud-auth-plugin",
                        "provideClusterInfo": True,
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False)


@dataclass
class KubernetesAccessArgs:
    cluster_name: pulumi.Input[str] | None = None
    """GKE mode: the cluster's name."""
    endpoint: pulumi.Input[str] | None = None
    """GKE mode: the cluster's control plane address."""
    ca_certificate: pulumi.Input[str] | None = None
    """GKE mode, IP endpoint: the cluster's CA (base64, as GKE reports it); None for the
    DNS endpoint."""
    context: str | None = None
    """Existing-cluster mode: a context of the local kubeconfig."""


class KubernetesAccess(pulumi.ComponentResource):
    """Holds the Kubernetes provider; later components take `provider` in their opts."""

    provider: k8s.Provider
    kubeconfig: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: KubernetesAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:k8s:KubernetesAccess", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if args.context:
            self.kubeconfig = None
            self.provider = k8s.Provider(
                f"{name}-provider", context=args.context, enable_server_side_apply=True, opts=child
            )
        else:
            if args.cluster_name is None or args.endpoint is None:
                raise ValueError(
                    "KubernetesAccess needs a context, or a cluster's name and endpoint"
                )
            self.kubeconfig = pulumi.Output.secret(
                pulumi.Output.all(args.cluster_name, args.endpoint, args.ca_certificate).apply(
                    lambda values: gke_kubeconfig(*values)
                )
            )
            self.provider = k8s.Provider(
                f"{name}-provider",
                kubeconfig=self.kubeconfig,
                enable_server_side_apply=True,
                opts=child,
            )
        self.register_outputs({})
