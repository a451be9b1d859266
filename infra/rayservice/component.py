"""Layer 9: the RayService component: its two Secrets and the custom resource itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.config import Service, StackConfig
from infra.rayservice.manifest import (
    RedisConnection,
    api_keys_secret,
    app_env_secret,
    auth_token_secret,
    rayservice_inputs,
    rayservice_manifest,
)
from infra.rayservice.upgrades import FINGERPRINT_ANNOTATION


def app_secrets_of(app_secrets: pulumi.Output[Any] | None, service: str) -> Any:
    """One service's `secretEnv` values out of the `appSecrets` secret (still secret)."""
    if app_secrets is None:
        return None
    return app_secrets.apply(lambda by_service: by_service.get(service, {}))


@dataclass
class RayServiceArgs:
    stack: StackConfig
    """The validated stack config."""
    service: Service
    """The service this RayService runs."""
    image: pulumi.Input[str]
    """`repo@sha256:<digest>` of the service's image."""
    api_key_hashes: pulumi.Input[dict[str, str]]
    """Named SHA-256 hashes of the API keys (secret config)."""
    redis: RedisConnection | None
    """How the GCS reaches Redis; None without fault tolerance."""
    depends_on: list[pulumi.Resource]
    """CRDs and operator, the namespace, Redis: created before, deleted after."""
    verdict: pulumi.Input[str]
    """The upgrade guard's verdict on this service's rayClusterConfig: its fingerprint,
    or a failed Output when the replacement is refused (the CR is then never sent)."""
    app_secrets: pulumi.Input[dict[str, str]] | None = None
    """The values of the service's `secretEnv` variables (secret config `appSecrets`)."""


class RayService(pulumi.ComponentResource):
    """One service's RayService with its Ray auth token and API-key Secrets."""

    def __init__(
        self, name: str, args: RayServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:ray:RayService", name, None, opts)
        service, namespace = args.service, args.stack.namespace
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        token = random.RandomPassword(f"{name}-ray-token", length=48, special=False, opts=child)
        auth = auth_token_secret(service)
        keys = api_keys_secret(service)
        secrets = [
            k8s.core.v1.Secret(
                f"{name}-ray-auth",
                metadata={"name": auth.name, "namespace": namespace},
                string_data={auth.key: token.result},
                opts=child,
            ),
            k8s.core.v1.Secret(
                f"{name}-api-keys",
                metadata={"name": keys.name, "namespace": namespace},
                string_data=pulumi.Output.secret(
                    cast(
                        Any,
                        pulumi.Output.from_input(args.api_key_hashes).apply(
                            lambda hashes: {keys.key: json.dumps(hashes, sort_keys=True)}
                        ),
                    )
                ),
                opts=child,
            ),
        ]
        if service.secret_env:
            secrets.append(
                k8s.core.v1.Secret(
                    f"{name}-app-env",
                    metadata={"name": app_env_secret(service), "namespace": namespace},
                    string_data=pulumi.Output.secret(cast(Any, args.app_secrets or {})),
                    opts=child,
                )
            )
        inputs = rayservice_inputs(args.stack, service, args.image, args.redis)
        manifest: dict[str, Any] = rayservice_manifest(args.stack, service, inputs)
        metadata = manifest["metadata"]
        metadata["annotations"] = {
            **metadata.get("annotations", {}),
            FINGERPRINT_ANNOTATION: args.verdict,
        }
        self.cluster_config: pulumi.Output[Any] = pulumi.Output.from_input(
            manifest["spec"]["rayClusterConfig"]
        )
        self.custom_resource = k8s.apiextensions.CustomResource(
            name,
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=metadata,
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *secrets]),
        )
        self.register_outputs({})
