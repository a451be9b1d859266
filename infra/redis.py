"""Layer 8: Redis behind the GCS, so a head restart loses no Serve state.

- `in-cluster` (dev): a one-replica StatefulSet with a PVC, AOF persistence, AUTH, a
  PodDisruptionBudget and requests/limits, the image pinned by digest.
- `memorystore` (prod): STANDARD_HA with AUTH and in-transit TLS; Ray connects with
  `rediss://` and trusts the instance's CA through `RAY_REDIS_CA_CERT`.
- `none`: no fault tolerance (dev only; config validation rejects it in production).
The password lives only in a Kubernetes Secret (and in Pulumi state as a secret).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.config import StackConfig
from infra.constants import REDIS_EXPORTER_PORT, REDIS_PORT, ROLE_LABEL
from infra.rayservice.manifest import RedisConnection, SecretKey

# redis 7.4.1 (alpine), pinned by digest; change both together.
REDIS_IMAGE = (
    "redis:7.4.1-alpine@sha256:c1e88455c85225310bbea54816e9c3f4b5295815e6dbf80c34d40afc6df28275"
)
# The Prometheus exporter beside it (pinned by digest), read by the `gcs-redis` PodMonitor.
REDIS_EXPORTER_IMAGE = (
    "quay.io/oliver006/redis_exporter:v1.67.0"
    "@sha256:120f7ec77293459ccfdad66bb1db75ab72e8bfeab99f58b1cc2564cadcd7a9e7"
)
# Below the 1Gi limit, and never evicting: GCS state must not silently disappear.
REDIS_MAXMEMORY = "768mb"
PASSWORD_KEY = "password"  # noqa: S105 - a key name
CA_KEY = "ca.crt"


REDIS_NAME = "gcs-redis"  # one GCS Redis per namespace


def password_secret_manifest(namespace: str) -> dict[str, Any]:
    """The Secret holding the Redis password (its value is set by the component)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{REDIS_NAME}-auth", "namespace": namespace},
        "type": "Opaque",
    }


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": "gcs-redis", "app.kubernetes.io/part-of": "rayserve-gke"}


def in_cluster_manifests(namespace: str, volume_size: str = "10Gi") -> list[dict[str, Any]]:
    """Service, StatefulSet and PodDisruptionBudget of the in-cluster Redis."""
    name = REDIS_NAME
    labels = _labels()
    secret = password_secret_manifest(namespace)["metadata"]["name"]
    command = (
        'exec redis-server --requirepass "$REDIS_PASSWORD" --appendonly yes '
        f"--appendfsync everysec --dir /data --protected-mode no --maxmemory {REDIS_MAXMEMORY} "
        "--maxmemory-policy noeviction"
    )
    container = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "command": ["sh", "-c", command],
        "env": [
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}},
            }
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"memory": "1Gi"},
        },
        "readinessProbe": {
            "exec": {
                "command": ["sh", "-c", 'redis-cli -a "$REDIS_PASSWORD" --no-auth-warning ping']
            },
            "periodSeconds": 5,
        },
        "livenessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 10},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 999,
        },
    }
    exporter = {
        "name": "redis-exporter",
        "image": REDIS_EXPORTER_IMAGE,
        "env": [
            {"name": "REDIS_ADDR", "value": f"redis://localhost:{REDIS_PORT}"},
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": PASSWORD_KEY}},
            },
        ],
        "ports": [{"name": "redis-metrics", "containerPort": REDIS_EXPORTER_PORT}],
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 59000,
        },
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {ROLE_LABEL: "system"},
                        "securityContext": {"fsGroup": 999},
                        "terminationGracePeriodSeconds": 30,
                        "containers": [container, exporter],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": volume_size}},
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            # One replica: voluntary evictions (node drains, upgrades) must wait.
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": labels}},
        },
    ]


def in_cluster_connection(namespace: str) -> RedisConnection:
    name = REDIS_NAME
    return RedisConnection(
        address=f"redis://{name}.{namespace}.svc.cluster.local:{REDIS_PORT}",
        password=SecretKey(f"{name}-auth", PASSWORD_KEY),
    )


def memorystore_spec(name: str, stack: StackConfig) -> dict[str, Any]:
    return {
        "name": f"{name}-gcs",
        "tier": "STANDARD_HA",
        "memory_size_gb": 1,
        "region": stack.region,
        "auth_enabled": True,
        "transit_encryption_mode": "SERVER_AUTHENTICATION",
        "redis_version": "REDIS_7_2",
        "project": stack.gcp_project,
        "display_name": f"GCS fault tolerance of {name}",
    }


@dataclass
class GcsRedisArgs:
    stack: StackConfig
    """The validated stack config."""
    namespace: pulumi.Input[str]
    """Namespace of the RayServices (and of the Secret they read)."""
    password: pulumi.Input[str] | None
    """In-cluster Redis password from ESC secret config; None generates one."""
    network: pulumi.Input[str] | None = None
    """Memorystore only: the VPC the instance is reachable from."""


class GcsRedis(pulumi.ComponentResource):
    """The Redis the stack's GCS uses, and the Secret with its password."""

    connection: RedisConnection | None
    ready: list[pulumi.Resource]

    def __init__(
        self, name: str, args: GcsRedisArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:redis:GcsRedis", name, None, opts)
        stack = args.stack
        child = pulumi.ResourceOptions(parent=self)
        self.ready = []
        namespace = stack.namespace
        if stack.redis == "none":
            self.connection = None
            self.register_outputs({})
            return
        secret_meta = password_secret_manifest(namespace)["metadata"]
        string_data: dict[str, Any]
        if stack.redis == "memorystore":
            instance = gcp.redis.Instance(
                f"{name}-gcs",
                authorized_network=args.network,
                **memorystore_spec(name, stack),
                opts=child,
            )
            # Memorystore generates its AUTH string; Ray reads it from the Secret.
            string_data = {
                PASSWORD_KEY: instance.auth_string,
                CA_KEY: instance.server_ca_certs.apply(
                    lambda certs: certs[0].cert if certs else ""
                ),
            }
            self.connection = RedisConnection(
                # TLS port of the instance; `rediss://` makes Ray use TLS with the CA.
                address=pulumi.Output.concat(
                    "rediss://", instance.host, ":", instance.port.apply(str)
                ),
                password=SecretKey(secret_meta["name"], PASSWORD_KEY),
                ca=SecretKey(secret_meta["name"], CA_KEY),
            )
            self.ready.append(instance)
        else:
            password = (
                args.password
                or (
                    random.RandomPassword(
                        f"{name}-redis-password", length=40, special=False, opts=child
                    )
                ).result
            )
            string_data = {PASSWORD_KEY: password}
            self.connection = in_cluster_connection(namespace)
        secret = k8s.core.v1.Secret(
            f"{name}-redis-auth",
            metadata={"name": secret_meta["name"], "namespace": args.namespace},
            string_data=pulumi.Output.secret(cast(Any, string_data)),
            opts=child,
        )
        self.ready.append(secret)
        if stack.redis == "in-cluster":
            for manifest in in_cluster_manifests(namespace):
                self.ready.append(_apply(f"{name}-{manifest['kind'].lower()}", manifest, child))
        self.register_outputs({})


def _apply(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.Resource:
    kinds = {
        "Service": k8s.core.v1.Service,
        "StatefulSet": k8s.apps.v1.StatefulSet,
        "PodDisruptionBudget": k8s.policy.v1.PodDisruptionBudget,
    }
    resource_type: Any = kinds[manifest["kind"]]
    return resource_type(name, metadata=manifest["metadata"], spec=manifest["spec"], opts=opts)
