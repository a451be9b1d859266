"""Layer 0 (gke mode): the Google APIs the stack's resources are made through.

A fresh project has most of them off, and the first `pulumi up` would fail minutes in
on whichever resource comes first. Each API is enabled by the program and kept enabled
on destroy (other workloads in the project may use it; turning Compute off would take
them down too). Every other Google resource waits for them (`after_apis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.config import StackConfig

# Pulumi module of a Google resource type (`gcp:<module>/...`) -> the API that serves it.
API_OF_MODULE = {
    "artifactregistry": "artifactregistry.googleapis.com",
    "certificatemanager": "certificatemanager.googleapis.com",
    "compute": "compute.googleapis.com",
    "container": "container.googleapis.com",
    "iap": "iap.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
    "projects": "cloudresourcemanager.googleapis.com",
    "redis": "redis.googleapis.com",
    "serviceaccount": "iam.googleapis.com",
}
# What the cluster itself calls at run time: IAP behind the Gateway's backend policies,
# Cloud Logging for the shipped logs, IAM credentials for Workload Identity.
RUNTIME_APIS = ("iap.googleapis.com", "logging.googleapis.com", "iamcredentials.googleapis.com")


def required_apis(stack: StackConfig) -> list[str]:
    """Every API this stack needs, sorted (empty outside gke mode: no Google resources)."""
    if stack.cluster_mode != "gke":
        return []
    modules = {
        "artifactregistry", "certificatemanager", "compute", "container", "projects",
        "serviceaccount",
    }  # fmt: skip
    if stack.monitoring:
        modules.add("monitoring")
    if stack.redis == "memorystore":
        modules.add("redis")
    return sorted({API_OF_MODULE[m] for m in modules} | set(RUNTIME_APIS))


def api_of(resource_type: str) -> str | None:
    """`gcp:compute/network:Network` -> compute.googleapis.com; None for non-Google types."""
    if not resource_type.startswith("gcp:"):
        return None
    module = resource_type.removeprefix("gcp:").split("/", 1)[0]
    return API_OF_MODULE.get(module, f"(no API known for gcp module '{module}')")


@dataclass
class GcpApisArgs:
    stack: StackConfig
    """The validated stack config."""


class GcpApis(pulumi.ComponentResource):
    """One `projects.Service` per required API, never disabled on destroy."""

    services: list[gcp.projects.Service]

    def __init__(
        self, name: str, args: GcpApisArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:project:Apis", name, None, opts)
        stack = args.stack
        self.services = [
            gcp.projects.Service(
                f"{name}-{api.split('.', 1)[0]}",
                project=stack.gcp_project,
                service=api,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in required_apis(stack)
        ]
        self.register_outputs({"apis": [s.service for s in self.services]})

    def after_apis(self, args: Any) -> pulumi.ResourceTransformationResult | None:
        """A stack transformation: every other Google resource waits for the APIs."""
        if not args.type_.startswith("gcp:") or args.type_.startswith("gcp:projects/service:"):
            return None
        return pulumi.ResourceTransformationResult(
            args.props,
            pulumi.ResourceOptions.merge(
                args.opts, pulumi.ResourceOptions(depends_on=self.services)
            ),
        )
