"""Layer 8: the Redis behind each service's GCS, so a head restart loses no Serve state.

Every service gets a store of its own, with passwords of its own: one service's head
(or whoever reads its Secret) can neither read nor wipe another service's GCS state.
- `in-cluster` (dev): per service, a one-replica StatefulSet with a PVC, AOF, a
  PodDisruptionBudget and requests/limits, the image pinned by digest. redis-server
  reads everything from files: `redis.conf` (a ConfigMap) and an ACL file holding only
  SHA-256 digests of the passwords (a Secret). No password is ever on a command line:
  the readiness probe's redis-cli reads `REDISCLI_AUTH`, the exporter `REDIS_PASSWORD`.
  Two users: `default` is the GCS's (KubeRay 1.7 passes no username unless
  `redisUsername` is set, so Ray authenticates as `default`); it may send what Ray
  2.60's GCS and KubeRay's cleanup job send, and nothing that reconfigures, scripts,
  replicates, flushes or stops the server. `monitor` (exporter, probe) reads INFO and
  latency counters and no key.
- `memorystore` (prod): one STANDARD_HA instance per service, AUTH and in-transit TLS;
  Ray connects with `rediss://` and trusts the instance's CA via `RAY_REDIS_CA_CERT`.
  Memorystore for Redis has a single AUTH string per instance, so separating services
  costs one instance each (`redisTier`, `redisMemoryGb`); a shared instance would hand
  every head the one key to every service's state.
- `none`: no fault tolerance (dev only; config validation rejects it in production).

Passwords are generated (pulumi_random) or, when ESC supplies `redisPassword`, derived
from it per service and user (HMAC-SHA256): one ESC secret, distinct passwords, and a
leaked service password reveals neither the ESC secret nor any other service's.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.config import Service, StackConfig, quantity_value
from infra.constants import REDIS_EXPORTER_PORT, REDIS_PORT, ROLE_LABEL
from infra.pod_security import container_security_context, pod_security_context
from infra.rayservice.manifest import RedisConnection, SecretKey

# redis 7.4.1 (alpine), pinned by digest; change both together.
REDIS_IMAGE = (
    "redis:7.4.1-alpine@sha256:c1e88455c85225310bbea54816e9c3f4b5295815e6dbf80c34d40afc6df28275"
)
# The image's `redis` user (docker-library/redis alpine: `addgroup -S -g 1000 redis`,
# `adduser -S -G redis -u 999 redis`); the entrypoint that would drop to it is not run.
REDIS_UID = 999
REDIS_GID = 1000
# The Prometheus exporter beside it (pinned by digest), read by the `gcs-redis` PodMonitor.
REDIS_EXPORTER_IMAGE = (
    "quay.io/oliver006/redis_exporter:v1.67.0"
    "@sha256:120f7ec77293459ccfdad66bb1db75ab72e8bfeab99f58b1cc2564cadcd7a9e7"
)
EXPORTER_UID = 59000  # the exporter image's USER
# maxmemory below the container's memory (AOF rewrites and buffers need the rest), and
# never evicting: GCS state must not silently disappear.
MAXMEMORY_SHARE = 0.75
# Memorystore with in-transit encryption serves TLS on this port only.
MEMORYSTORE_TLS_PORT = 6378

PASSWORD_KEY = "password"  # noqa: S105 - a key name (the GCS's password, read by the head)
CA_KEY = "ca.crt"
ACL_KEY = "users.acl"
MONITOR_PASSWORD_KEY = "monitor-password"  # noqa: S105 - a key name
CONF_KEY = "redis.conf"
CONF_DIR = "/etc/redis"
ACL_DIR = "/etc/redis-acl"
GCS_USER = "default"
MONITOR_USER = "monitor"
COMPONENT = "gcs-redis"  # app.kubernetes.io/name of every GCS Redis pod (PodMonitor selects it)

# What the GCS's user may run: hash commands (Ray keeps each GCS table in a hash), DEL
# and UNLINK (Ray's `DEL DUMMY` probe), SCAN (KubeRay's cleanup Job lists the storage
# namespace's keys, then deletes them), EXISTS, INCR/INCRBY (job ids), INFO (Ray asks
# for cluster and sentinel mode), and connection commands. Not: CONFIG, MODULE,
# EVAL/FUNCTION, FLUSHALL, KEYS, DEBUG, SHUTDOWN, REPLICAOF, ACL, CLIENT KILL (@admin,
# @dangerous): the ways a leaked password becomes a rewritten server or a wiped store.
# Proven with Ray's GCS and the cleanup in tests/infra/test_redis.py.
GCS_USER_RULES = (
    "~* resetchannels -@all +@hash +@connection -@admin -@dangerous "
    "+info +del +unlink +exists +scan +incr +incrby"
)
# The exporter and the readiness probe: server counters, no key, no config.
MONITOR_USER_RULES = (
    "resetkeys resetchannels -@all +ping +info +latency|latest +latency|histogram "
    "+slowlog|len +client|setname +select +dbsize"
)


def password_digest(password: str) -> str:
    """The SHA-256 hex digest an ACL file stores instead of a password (`#<digest>`)."""
    return hashlib.sha256(password.encode()).hexdigest()


def acl_file(gcs_digest: str, monitor_digest: str | None = None) -> str:
    """The ACL file of one GCS Redis: the GCS's user and, in-cluster, the monitor's."""
    lines = [f"user {GCS_USER} on #{gcs_digest} {GCS_USER_RULES}"]
    if monitor_digest is not None:
        lines.append(f"user {MONITOR_USER} on #{monitor_digest} {MONITOR_USER_RULES}")
    return "\n".join(lines) + "\n"


def derive_password(master: str, service: str, user: str) -> str:
    """A service user's password from the ESC `redisPassword` (one-way, per service)."""
    context = f"rayserve-gke/gcs-redis/{service}/{user}".encode()
    return hmac.new(master.encode(), context, hashlib.sha256).hexdigest()


def maxmemory_bytes(stack: StackConfig) -> int:
    return int(quantity_value(stack.redis_memory) * MAXMEMORY_SHARE)


def redis_conf(stack: StackConfig) -> str:
    """redis.conf of the in-cluster GCS Redis (no secret in it: users come from the ACL
    file, mounted from a Secret)."""
    settings = [
        f"port {REDIS_PORT}",
        "dir /data",
        "appendonly yes",
        "appendfsync everysec",
        f"maxmemory {maxmemory_bytes(stack)}",
        "maxmemory-policy noeviction",
        f"aclfile {ACL_DIR}/{ACL_KEY}",
    ]
    return "\n".join(settings) + "\n"


def redis_name(service: str) -> str:
    """The service's GCS Redis (StatefulSet, Service, ConfigMap, PodDisruptionBudget)."""
    return f"{service}-{COMPONENT}"


def auth_secret_name(service: str) -> str:
    """What the service's RayService reads: the GCS's password (and Memorystore's CA)."""
    return f"{redis_name(service)}-auth"


def server_secret_name(service: str) -> str:
    """What the service's Redis pod reads: the ACL file and the monitor's password."""
    return f"{redis_name(service)}-server"


def redis_labels(service: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": COMPONENT,
        "app.kubernetes.io/instance": redis_name(service),
        "app.kubernetes.io/part-of": "rayserve-gke",
    }


def secret_manifests(namespace: str, service: str) -> list[dict[str, Any]]:
    """The two Secrets of a service's Redis (their values are set by the component)."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": redis_labels(service)},
            "type": "Opaque",
        }
        for name in (auth_secret_name(service), server_secret_name(service))
    ]


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def in_cluster_manifests(stack: StackConfig, service: str) -> list[dict[str, Any]]:
    """Service, StatefulSet, PodDisruptionBudget and ConfigMap of a service's Redis,
    sized by `redisCpu`, `redisMemory` (request = limit) and `redisVolumeSize`."""
    namespace = stack.namespace
    name = redis_name(service)
    labels = redis_labels(service)
    server_secret = server_secret_name(service)
    monitor_password = _secret_env("REDISCLI_AUTH", server_secret, MONITOR_PASSWORD_KEY)
    container = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "command": ["redis-server", f"{CONF_DIR}/{CONF_KEY}"],
        # For the probe's redis-cli only (the monitor user: PING and INFO, no key).
        "env": [monitor_password],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "resources": {
            "requests": {"cpu": stack.redis_cpu, "memory": stack.redis_memory},
            "limits": {"memory": stack.redis_memory},
        },
        "readinessProbe": {
            "exec": {
                "command": [
                    "sh",
                    "-c",
                    f"redis-cli --user {MONITOR_USER} ping | grep -q PONG",
                ]
            },
            "periodSeconds": 5,
        },
        "livenessProbe": {"tcpSocket": {"port": REDIS_PORT}, "periodSeconds": 10},
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "config", "mountPath": CONF_DIR, "readOnly": True},
            {"name": "acl", "mountPath": ACL_DIR, "readOnly": True},
        ],
        "securityContext": container_security_context(),
    }
    exporter = {
        "name": "redis-exporter",
        "image": REDIS_EXPORTER_IMAGE,
        "env": [
            {"name": "REDIS_ADDR", "value": f"redis://localhost:{REDIS_PORT}"},
            {"name": "REDIS_USER", "value": MONITOR_USER},
            _secret_env("REDIS_PASSWORD", server_secret, MONITOR_PASSWORD_KEY),
        ],
        "ports": [{"name": "redis-metrics", "containerPort": REDIS_EXPORTER_PORT}],
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            **container_security_context(),
            "runAsUser": EXPORTER_UID,
            "runAsGroup": EXPORTER_UID,
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
                        # The volume group-owned by the image's redis group; the ACL
                        # file readable by that group only.
                        "securityContext": pod_security_context(
                            REDIS_UID, REDIS_GID, fs_group=REDIS_GID
                        ),
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 30,
                        "containers": [container, exporter],
                        "volumes": [
                            {
                                "name": "config",
                                "configMap": {
                                    "name": name,
                                    "items": [{"key": CONF_KEY, "path": CONF_KEY}],
                                },
                            },
                            {
                                "name": "acl",
                                "secret": {
                                    "secretName": server_secret,
                                    "items": [{"key": ACL_KEY, "path": ACL_KEY}],
                                    "defaultMode": 0o440,
                                },
                            },
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": stack.redis_volume_size}},
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
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {CONF_KEY: redis_conf(stack)},
        },
    ]


def in_cluster_connection(namespace: str, service: str) -> RedisConnection:
    return RedisConnection(
        address=f"redis://{redis_name(service)}.{namespace}.svc.cluster.local:{REDIS_PORT}",
        password=SecretKey(auth_secret_name(service), PASSWORD_KEY),
    )


def memorystore_instance_id(name: str, service: str) -> str:
    """The service's instance id: Memorystore allows 40 characters (a letter first)."""
    full = f"{name}-{service}"
    if len(full) <= 40:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[:31].rstrip('-')}-{digest}"


def memorystore_spec(name: str, stack: StackConfig, service: Service) -> dict[str, Any]:
    return {
        "name": memorystore_instance_id(name, service.name),
        "tier": stack.redis_tier,
        "memory_size_gb": stack.redis_memory_gb,
        "region": stack.region,
        "auth_enabled": True,
        "transit_encryption_mode": "SERVER_AUTHENTICATION",
        "redis_version": "REDIS_7_2",
        "project": stack.gcp_project,
        "display_name": f"GCS fault tolerance of {name}/{service.name}",
    }


@dataclass
class GcsRedisArgs:
    stack: StackConfig
    """The validated stack config."""
    namespace: pulumi.Input[str]
    """Namespace of the RayServices (and of the Secrets they read)."""
    password: pulumi.Input[str] | None
    """ESC `redisPassword` (in-cluster only): every password is derived from it; None
    generates each one."""
    network: pulumi.Input[str] | None = None
    """Memorystore only: the VPC the instances are reachable from."""


class GcsRedis(pulumi.ComponentResource):
    """Each service's GCS Redis and the Secrets with its passwords.

    `connections`, `ready` and `memorystore_hosts` are keyed by service name; a service
    has no entry without fault tolerance (`redis: none`).
    """

    connections: dict[str, RedisConnection]
    ready: dict[str, list[pulumi.Resource]]
    memorystore_hosts: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: GcsRedisArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:redis:GcsRedis", name, None, opts)
        self._name = name
        self._args = args
        self.connections, self.ready, self.memorystore_hosts = {}, {}, {}
        if args.stack.redis != "none":
            for service in args.stack.services:
                if args.stack.redis == "memorystore":
                    self._memorystore(service)
                else:
                    self._in_cluster(service)
        self.register_outputs({})

    def _password(self, service: str, user: str) -> pulumi.Output[str]:
        if self._args.password is not None:
            derived = pulumi.Output.from_input(self._args.password).apply(
                lambda master: derive_password(master, service, user)
            )
            return pulumi.Output.secret(derived)
        return random.RandomPassword(
            f"{self._name}-{service}-redis-{user}-password",
            length=40,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        ).result

    def _secret(self, service: str, secret_name: str, data: Any) -> k8s.core.v1.Secret:
        manifest = next(
            m
            for m in secret_manifests(self._args.stack.namespace, service)
            if m["metadata"]["name"] == secret_name
        )
        return k8s.core.v1.Secret(
            f"{self._name}-{secret_name}",
            metadata={**manifest["metadata"], "namespace": self._args.namespace},
            string_data=pulumi.Output.secret(cast(Any, data)),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _memorystore(self, service: Service) -> None:
        instance = gcp.redis.Instance(
            f"{self._name}-{service.name}-gcs",
            authorized_network=self._args.network,
            **memorystore_spec(self._name, self._args.stack, service),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Memorystore generates the instance's AUTH string; the head reads it here.
        secret = self._secret(
            service.name,
            auth_secret_name(service.name),
            {
                PASSWORD_KEY: instance.auth_string,
                CA_KEY: instance.server_ca_certs.apply(
                    lambda certs: certs[0].cert if certs else ""
                ),
            },
        )
        self.connections[service.name] = RedisConnection(
            # The TLS port; `rediss://` makes Ray use TLS with the CA.
            address=pulumi.Output.concat("rediss://", instance.host, ":", instance.port.apply(str)),
            password=SecretKey(auth_secret_name(service.name), PASSWORD_KEY),
            ca=SecretKey(auth_secret_name(service.name), CA_KEY),
        )
        self.memorystore_hosts[service.name] = instance.host
        self.ready[service.name] = [instance, secret]

    def _in_cluster(self, service: Service) -> None:
        gcs = self._password(service.name, GCS_USER)
        monitor = self._password(service.name, MONITOR_USER)
        acl = pulumi.Output.all(gcs, monitor).apply(
            lambda passwords: acl_file(password_digest(passwords[0]), password_digest(passwords[1]))
        )
        ready: list[pulumi.Resource] = [
            self._secret(service.name, auth_secret_name(service.name), {PASSWORD_KEY: gcs}),
            self._secret(
                service.name,
                server_secret_name(service.name),
                {ACL_KEY: acl, MONITOR_PASSWORD_KEY: monitor},
            ),
        ]
        child = pulumi.ResourceOptions(parent=self, depends_on=list(ready))
        for manifest in in_cluster_manifests(self._args.stack, service.name):
            kind = manifest["kind"].lower()
            ready.append(_apply(f"{self._name}-{service.name}-redis-{kind}", manifest, child))
        self.connections[service.name] = in_cluster_connection(
            self._args.stack.namespace, service.name
        )
        self.ready[service.name] = ready


def _apply(name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions) -> pulumi.Resource:
    if manifest["kind"] == "ConfigMap":
        return k8s.core.v1.ConfigMap(
            name, metadata=manifest["metadata"], data=manifest["data"], opts=opts
        )
    kinds = {
        "Service": k8s.core.v1.Service,
        "StatefulSet": k8s.apps.v1.StatefulSet,
        "PodDisruptionBudget": k8s.policy.v1.PodDisruptionBudget,
    }
    resource_type: Any = kinds[manifest["kind"]]
    return resource_type(name, metadata=manifest["metadata"], spec=manifest["spec"], opts=opts)
