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
    API_KEYS_FILE_KEY,
    AUTH_TOKEN_KEY,
    RayServiceInputs,
    RedisConnection,
    SecretKey,
    rayservice_manifest,
)


def auth_token_secret(service: Service) -> SecretKey:
    return SecretKey(f"{service.name}-ray-auth", AUTH_TOKEN_KEY)


def api_keys_secret(service: Service) -> SecretKey:
    return SecretKey(f"{service.name}-api-keys", API_KEYS_FILE_KEY)


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
        inputs = RayServiceInputs(
            namespace=namespace, image=args.image, api_keys=keys, auth_token=auth, redis=args.redis
        )
        manifest: dict[str, Any] = rayservice_manifest(args.stack, service, inputs)
        self.cluster_config: pulumi.Output[Any] = pulumi.Output.from_input(
            manifest["spec"]["rayClusterConfig"]
        )
        self.custom_resource = k8s.apiextensions.CustomResource(
            name,
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *secrets]),
        )
        self.register_outputs({})
