"""Layer 9: one RayService per service, as a plain manifest built from the stack config.

The head runs no Ray work (`num-cpus: "0"`) on the on-demand `system` pool; each worker
group runs on one node pool with that pool's selectors, tolerations and GPU limits; the
GCS keeps its state in Redis; every Ray pod loads the API-key middleware into Serve's
HTTP servers (the ingress replicas' behind HAProxy, and Serve's proxy) and mounts the
Secret of key hashes. Every container (Ray, the log shipper, KubeRay's autoscaler sidecar)
runs as the image's non-root `ray` user under the restricted profile, its root filesystem
read-only: Ray writes only to the emptyDirs of `RAY_WRITABLE_DIRS` and shared memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import yaml

from infra.config import Service, StackConfig, WorkerGroup
from infra.constants import METRICS_PORT, POOL_LABEL, ROLE_LABEL
from infra.observability.monitoring import ray_head_monitoring_env
from infra.pod_security import container_security_context, pod_security_context, writable_dirs
from infra.rayservice.disruption import priority_class_name
from infra.rayservice.serve_config import SERVE_PORT, ray_process_env, serve_config

# The log-shipping sidecar's module, run from the service's own image.
LOG_SHIPPER_MODULE = "serve_apps.logship"

RAY_VERSION = version("ray")  # pyproject pins it; images use the same tag
API_KEYS_DIR = "/etc/rayserve/api-keys"
API_KEYS_FILE_KEY = "keys.json"
REDIS_CA_DIR = "/etc/rayserve/redis-ca"
REDIS_CA_KEY = "ca.crt"
AUTH_TOKEN_KEY = "auth_token"  # noqa: S105 - a key name; the key KubeRay reads from authOptions.secretName
RAY_LOGS_DIR = "/tmp/ray"  # noqa: S108 - Ray's own log root, shared with the log shipper
# The `ray` user of the rayproject images (docker/base-deps: RAY_UID=1000, RAY_GID=100).
RAY_UID = 1000
RAY_GID = 100
RAY_HOME = "/home/ray"
HOME_CACHE_DIR = f"{RAY_HOME}/.cache"
# Every container's root filesystem is read-only: these are where Ray 2.60 and the
# libraries it loads write (tests/infra/rayservice/test_pod_security.py starts Ray with
# only these writable). TMPDIR stays unset: Ray would move its session root to $TMPDIR/ray.
RAY_WRITABLE_DIRS = {
    # Python's tempfile, Ray's lock files, HAProxy's config and sockets (/tmp/haproxy-serve:
    # the pod's own, so its mode-666 admin socket is reachable from this pod only).
    "tmp": "/tmp",  # noqa: S108
    # Ray's session root: logs, sockets, runtime envs, spilled objects. KubeRay mounts the
    # autoscaler sidecar on this volume by its name; the log shipper reads it.
    "ray-logs": RAY_LOGS_DIR,
    # ~/.cache: Hugging Face, torch and pip/uv caches, and those redirected below.
    "home-cache": HOME_CACHE_DIR,
}
# Caches whose default is outside ~/.cache: under the read-only home, or beside sources.
CACHE_ENV = {
    "XDG_CACHE_HOME": HOME_CACHE_DIR,
    "MPLCONFIGDIR": f"{HOME_CACHE_DIR}/matplotlib",  # default ~/.config/matplotlib
    "NUMBA_CACHE_DIR": f"{HOME_CACHE_DIR}/numba",  # default beside the sources
    "TRITON_CACHE_DIR": f"{HOME_CACHE_DIR}/triton",  # default ~/.triton/cache
    "CUDA_CACHE_PATH": f"{HOME_CACHE_DIR}/nv",  # default ~/.nv/ComputeCache
}
# The object store's shared memory, as KubeRay would add it (memory-backed, at most the
# container's memory limit); declared here so it is reviewed with the rest.
SHARED_MEMORY = ("shared-mem", "/dev/shm")  # noqa: S108 - a mount point, not a temp file
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TOLERATION = {
    "key": "cloud.google.com/gke-spot",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}


@dataclass(frozen=True)
class SecretKey:
    name: str
    key: str


@dataclass(frozen=True)
class RedisConnection:
    """How the GCS reaches its Redis; `ca` is set when the connection uses TLS."""

    address: Any
    """`redis://host:port` or `rediss://host:port` (a str, or a Pulumi Output)."""
    password: SecretKey
    ca: SecretKey | None = None


@dataclass(frozen=True)
class RayServiceInputs:
    """What a RayService needs from other components (all names, no secret values)."""

    namespace: str
    image: Any
    """`repo@sha256:<digest>` (a str, or a Pulumi Output during `pulumi up`)."""
    api_keys: SecretKey
    auth_token: SecretKey
    redis: RedisConnection | None


def auth_token_secret(service: Service) -> SecretKey:
    return SecretKey(f"{service.name}-ray-auth", AUTH_TOKEN_KEY)


def api_keys_secret(service: Service) -> SecretKey:
    return SecretKey(f"{service.name}-api-keys", API_KEYS_FILE_KEY)


def app_env_secret(service: Service) -> str:
    """The Secret holding the service's `secretEnv` values (one key per variable)."""
    return f"{service.name}-app-env"


def rayservice_inputs(
    stack: StackConfig, service: Service, image: Any, redis: RedisConnection | None
) -> RayServiceInputs:
    """The one place a RayService's inputs are put together (the component and the
    upgrade guard both build from it)."""
    return RayServiceInputs(
        namespace=stack.namespace,
        image=image,
        api_keys=api_keys_secret(service),
        auth_token=auth_token_secret(service),
        redis=redis,
    )


def _probe(*urls: str) -> dict[str, Any]:
    # Mirrors KubeRay's own probes (raylet and GCS health; Serve proxy on workers),
    # written out so they are reviewed with the rest of the spec.
    checks = " && ".join(f"wget -T 2 -q -O- {url} | grep success" for url in urls)
    return {
        "exec": {"command": ["bash", "-c", checks]},
        "initialDelaySeconds": 10,
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 10,
    }


def _proxy_probe() -> dict[str, Any]:
    return {
        "httpGet": {"path": "/-/healthz", "port": SERVE_PORT},
        "initialDelaySeconds": 10,
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }


def _env(stack: StackConfig, service: Service, inputs: RayServiceInputs) -> list[dict[str, Any]]:
    process_env = ray_process_env(stack.serve_ingress)
    env: list[dict[str, Any]] = [
        {"name": name, "value": value} for name, value in (process_env | CACHE_ENV).items()
    ]
    env.append({"name": "RAYSERVE_API_KEYS_FILE", "value": f"{API_KEYS_DIR}/{API_KEYS_FILE_KEY}"})
    if inputs.redis is not None and inputs.redis.ca is not None:
        env.append({"name": "RAY_REDIS_CA_CERT", "value": f"{REDIS_CA_DIR}/{REDIS_CA_KEY}"})
    # The apps' own settings (names checked against the ones above: config/fields.py).
    env += [{"name": name, "value": value} for name, value in service.env.items()]
    secret = app_env_secret(service)
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in service.secret_env
    ]
    return env


def _volumes(inputs: RayServiceInputs) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "api-keys",
            "secret": {
                "secretName": inputs.api_keys.name,
                "items": [{"key": inputs.api_keys.key, "path": API_KEYS_FILE_KEY}],
            },
        }
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True}
    ]
    if inputs.redis is not None and inputs.redis.ca is not None:
        volumes.append(
            {
                "name": "redis-ca",
                "secret": {
                    "secretName": inputs.redis.ca.name,
                    "items": [{"key": inputs.redis.ca.key, "path": REDIS_CA_KEY}],
                },
            }
        )
        mounts.append({"name": "redis-ca", "mountPath": REDIS_CA_DIR, "readOnly": True})
    return volumes, mounts


def _container(
    name: str,
    stack: StackConfig,
    inputs: RayServiceInputs,
    cpu: str,
    memory: str,
    *,
    service: Service,
    gpus: int,
    worker: bool,
) -> dict[str, Any]:
    _, mounts = _volumes(inputs)
    _, writable = writable_dirs(RAY_WRITABLE_DIRS)
    shm_name, shm_path = SHARED_MEMORY
    limits: dict[str, Any] = {"memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    container: dict[str, Any] = {
        "name": name,
        "image": inputs.image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(stack, service, inputs),
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "securityContext": container_security_context(),
        "volumeMounts": [*mounts, *writable, {"name": shm_name, "mountPath": shm_path}],
        # Let Serve drain in-flight requests before the pod goes.
        "lifecycle": {"preStop": {"exec": {"command": ["bash", "-c", "sleep 10 && ray stop"]}}},
        "ports": [
            {"name": "serve", "containerPort": SERVE_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
    }
    raylet = "http://localhost:52365/api/local_raylet_healthz"
    if worker:
        container["readinessProbe"] = _proxy_probe()
        container["livenessProbe"] = _probe(raylet)
    else:
        container["ports"] += [
            {"name": "gcs-server", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "client", "containerPort": 10001},
            {"name": "as-metrics", "containerPort": 44217},  # autoscaler
            {"name": "dash-metrics", "containerPort": 44227},  # dashboard
        ]
        gcs = "http://localhost:8265/api/gcs_healthz"
        container["readinessProbe"] = _probe(raylet, gcs)
        container["livenessProbe"] = _probe(raylet, gcs)
    return container


def _log_shipper(image: str) -> dict[str, Any]:
    """Tails the Ray container's log files to stdout, as JSON (serve_apps/logship.py)."""
    return {
        "name": "log-shipper",
        "image": image,
        "command": ["python", "-m", LOG_SHIPPER_MODULE, f"{RAY_LOGS_DIR}/session_latest/logs"],
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "ray-logs", "mountPath": RAY_LOGS_DIR, "readOnly": True}],
    }


def _pod_spec(
    inputs: RayServiceInputs,
    container: dict[str, Any],
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]],
    *,
    role: str,
    ship_logs: bool,
) -> dict[str, Any]:
    volumes, _ = _volumes(inputs)
    writable, _ = writable_dirs(RAY_WRITABLE_DIRS)
    shm_name, _ = SHARED_MEMORY
    shared_memory = {"medium": "Memory", "sizeLimit": container["resources"]["limits"]["memory"]}
    containers = [container]
    if ship_logs:
        containers.append(_log_shipper(inputs.image))
    spec: dict[str, Any] = {
        "securityContext": pod_security_context(RAY_UID, RAY_GID),
        # Heads outrank workers, workers the rest (infra/rayservice/disruption.py).
        "priorityClassName": priority_class_name(inputs.namespace, role),
        "nodeSelector": node_selector,
        "terminationGracePeriodSeconds": 60,
        "containers": containers,
        "volumes": [*volumes, *writable, {"name": shm_name, "emptyDir": shared_memory}],
    }
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def worker_group_spec(
    stack: StackConfig, service: Service, group: WorkerGroup, inputs: RayServiceInputs
) -> dict[str, Any]:
    pool = stack.pool(group.node_pool)
    assert pool is not None  # validated config
    gpus = stack.gpus_per_node(pool)
    selector = {POOL_LABEL: pool.name}
    tolerations = []
    if pool.gpu_type:
        selector["cloud.google.com/gke-accelerator"] = pool.gpu_type
        tolerations.append(GPU_TOLERATION)
    if pool.spot:
        selector["cloud.google.com/gke-spot"] = "true"
        tolerations.append(SPOT_TOLERATION)
    container = _container(
        "ray-worker",
        stack,
        inputs,
        group.cpu,
        group.memory,
        service=service,
        gpus=gpus,
        worker=True,
    )
    return {
        "groupName": pool.name,
        "replicas": group.min_replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "idleTimeoutSeconds": group.idle_timeout_seconds,
        "rayStartParams": {
            "metrics-export-port": str(METRICS_PORT),
            # Placement resources (`pool:<name>`, `accelerator:<gpuType>`) deployments pin
            # to; KubeRay passes the value to `ray start --resources` as is.
            "resources": json.dumps(json.dumps(stack.pool_resources(pool), sort_keys=True)),
        },
        "template": {
            "metadata": {"labels": _labels(service, "worker")},
            # Autoscaler v2 tracks workers by pod: a crashed worker is replaced, not restarted
            # in place under the same pod (Ray's guidance for v2 on KubeRay).
            "spec": {
                **_pod_spec(
                    inputs,
                    container,
                    selector,
                    tolerations,
                    role="worker",
                    ship_logs=stack.log_shipping,
                ),
                "restartPolicy": "Never",
            },
        },
    }


def _labels(service: Service, role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "rayserve",
        "app.kubernetes.io/instance": service.name,
        "app.kubernetes.io/component": f"ray-{role}",
        "app.kubernetes.io/part-of": "rayserve-gke",
    }


def _autoscaler_options() -> dict[str, Any]:
    """The autoscaler sidecar KubeRay adds to the head pod (same image, same pod user)."""
    return {
        # Autoscaler v2 honours each group's idleTimeoutSeconds (v1 has one timeout for all).
        "version": "v2",
        "upscalingMode": "Default",
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": container_security_context(),
        # It writes its logs under Ray's session root (the head's volume, so the dashboard
        # shows its events) and may use tempfile; nothing else.
        "volumeMounts": [
            {"name": "tmp", "mountPath": RAY_WRITABLE_DIRS["tmp"]},
            {"name": "ray-logs", "mountPath": RAY_LOGS_DIR},
        ],
    }


def _upgrade_strategy(service: Service) -> dict[str, Any]:
    # NewClusterWithIncrementalUpgrade is refused by config validation (checks.py).
    return {"type": service.upgrade_strategy.type}


def rayservice_manifest(
    stack: StackConfig, service: Service, inputs: RayServiceInputs
) -> dict[str, Any]:
    """The RayService custom resource of one service."""
    head = _container(
        "ray-head",
        stack,
        inputs,
        service.head.cpu,
        service.head.memory,
        service=service,
        gpus=0,
        worker=False,
    )
    if stack.monitoring:
        head["env"] += ray_head_monitoring_env()
    cluster: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": _autoscaler_options(),
        "authOptions": {"mode": "token", "secretName": inputs.auth_token.name},
        "headGroupSpec": {
            "rayStartParams": {
                "num-cpus": "0",  # the head schedules no replicas: it keeps the GCS alive
                "dashboard-host": "0.0.0.0",  # noqa: S104 - NetworkPolicies guard it
                "metrics-export-port": str(METRICS_PORT),
            },
            "template": {
                "metadata": {"labels": _labels(service, "head")},
                "spec": _pod_spec(
                    inputs,
                    head,
                    {ROLE_LABEL: "system"},
                    [],
                    role="head",
                    ship_logs=stack.log_shipping,
                ),
            },
        },
        "workerGroupSpecs": [
            worker_group_spec(stack, service, group, inputs) for group in service.worker_groups
        ],
    }
    if inputs.redis is not None:
        cluster["gcsFaultToleranceOptions"] = {
            "redisAddress": inputs.redis.address,
            "redisPassword": {
                "valueFrom": {
                    "secretKeyRef": {
                        "name": inputs.redis.password.name,
                        "key": inputs.redis.password.key,
                    }
                }
            },
            # One key space per RayService in a shared Redis.
            "externalStorageNamespace": f"{inputs.namespace}-{service.name}",
        }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": service.name,
            "namespace": inputs.namespace,
            "labels": _labels(service, "rayservice"),
        },
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config(stack, service), sort_keys=False),
            "excludeHeadPodFromServeSvc": True,
            "upgradeStrategy": _upgrade_strategy(service),
            "rayClusterConfig": cluster,
        },
    }


def serve_service_name(service: Service) -> str:
    """The Service KubeRay creates in front of the Serve proxies."""
    return f"{service.name}-serve-svc"
