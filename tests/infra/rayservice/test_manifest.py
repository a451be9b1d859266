"""The RayService custom resource: its spec per stack and per config switch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from infra.config import ConfigError, StackConfig
from infra.config.sources import load_stack_file, stack_file_values
from infra.program.render import program_objects
from infra.rayservice.manifest import GPU_TOLERATION, SPOT_TOLERATION
from infra.rayservice.serve_config import serve_config
from tests.infra.helpers import STACKS


def _objects(stack_name: str, **overrides: Any) -> list[dict[str, Any]]:
    """What the program declares for the stack, with config `overrides` (config keys)."""
    return program_objects(stack_name, overrides)


def _rayservices(stack_name: str, **overrides: Any) -> list[dict[str, Any]]:
    return [o for o in _objects(stack_name, **overrides) if o["kind"] == "RayService"]


@pytest.mark.parametrize("stack_name", STACKS)
def test_rayservice_spec(stack_name: str) -> None:
    stack: StackConfig = load_stack_file(stack_name)
    for service, rayservice in zip(stack.services, _rayservices(stack_name), strict=True):
        spec = rayservice["spec"]
        assert yaml.safe_load(spec["serveConfigV2"]) == serve_config(stack, service)
        assert spec["excludeHeadPodFromServeSvc"] is True
        assert spec["upgradeStrategy"] == {"type": service.upgrade_strategy.type}
        cluster = spec["rayClusterConfig"]
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["authOptions"] == {"mode": "token", "secretName": f"{service.name}-ray-auth"}
        head = cluster["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"
        head_pod = head["template"]["spec"]
        assert head_pod["nodeSelector"] == {"rayserve-gke/role": "system"}
        assert head_pod["containers"][0]["resources"]["requests"]["memory"] == service.head.memory
        groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        assert set(groups) == {g.node_pool for g in service.worker_groups}
        for group in service.worker_groups:
            pool = stack.pool(group.node_pool)
            assert pool is not None
            rendered = groups[pool.name]
            bounds = (rendered["minReplicas"], rendered["maxReplicas"])
            assert bounds == (group.min_replicas, group.max_replicas)
            assert rendered["idleTimeoutSeconds"] == group.idle_timeout_seconds
            pod = rendered["template"]["spec"]
            container = pod["containers"][0]
            limits = container["resources"]["limits"]
            if pool.gpu_type:
                assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == pool.gpu_type
                assert GPU_TOLERATION in pod["tolerations"]
                assert limits["nvidia.com/gpu"] == stack.gpus_per_node(pool)
            else:
                assert "nvidia.com/gpu" not in limits
            assert (pod["nodeSelector"].get("cloud.google.com/gke-spot") == "true") is pool.spot
            assert (SPOT_TOLERATION in pod.get("tolerations", [])) is pool.spot
        for pod in [head_pod, *(g["template"]["spec"] for g in groups.values())]:
            container = pod["containers"][0]
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == (
                "serve_apps.auth.middleware:proxy_middlewares"
            )
            assert env["RAYSERVE_API_KEYS_FILE"] == "/etc/rayserve/api-keys/keys.json"
            assert env["RAY_worker_niceness"] == "0"  # as `make run` and `make bench` run
            # serveIngress `auto`: HAProxy in dev, Ray's proxy in production stacks.
            haproxy = env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
            assert haproxy is (stack.serve_ingress == "haproxy")
            assert {"readinessProbe", "livenessProbe", "lifecycle"} <= container.keys()
            assert pod["terminationGracePeriodSeconds"] >= 30
            secrets = {
                v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v
            }
            assert secrets["api-keys"] == f"{service.name}-api-keys"
            # The log shipper tails the Ray container's logs from a shared volume.
            shipper = pod["containers"][1]
            assert shipper["name"] == "log-shipper"
            assert shipper["image"] == container["image"]
            assert shipper["command"][:3] == ["python", "-m", "serve_apps.logship"]
            shared = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert shared["ray-logs"] == "/tmp/ray"


@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_serve_ingress_sets_the_data_plane_on_every_ray_pod(ingress: str) -> None:
    """The env that picks HAProxy vs Serve's proxy, and what HAProxy needs to reach replicas."""
    (rayservice,) = _rayservices("dev", serveIngress=ingress)
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        env = {e["name"]: e.get("value") for e in group["template"]["spec"]["containers"][0]["env"]}
        # The API-key middleware is loaded either way: by Serve's proxy, or by every
        # ingress replica's own HTTP server behind HAProxy.
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"].startswith("serve_apps.auth.")
        if ingress == "haproxy":
            assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
            low = int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"])
            high = int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"])
            # Replica ports never overlap Ray's worker ports (defaults, not overridden).
            assert low > 19999 and high - low >= 100
            assert not {"min-worker-port", "max-worker-port"} & group["rayStartParams"].keys()
            assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 10
        else:
            assert not any(name.startswith("RAY_SERVE_ENABLE_HA_PROXY") for name in env)
            assert not any("DIRECT_INGRESS" in name for name in env)


def test_gcs_fault_tolerance_per_redis_mode() -> None:
    (dev,) = _rayservices("dev")
    ft = dev["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    # Each service its own Redis (infra/redis.py), and its own password.
    assert ft["redisAddress"] == "redis://serving-gcs-redis.ray.svc.cluster.local:6379"
    assert ft["redisPassword"] == {
        "valueFrom": {"secretKeyRef": {"name": "serving-gcs-redis-auth", "key": "password"}}
    }
    for prod in _rayservices("prod"):
        cluster = prod["spec"]["rayClusterConfig"]
        # Memorystore's address as the instance reports it (mocked: 10.1.2.3:6378), TLS on.
        assert cluster["gcsFaultToleranceOptions"]["redisAddress"] == "rediss://10.1.2.3:6378"
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in head["env"]}
        assert env["RAY_REDIS_CA_CERT"] == "/etc/rayserve/redis-ca/ca.crt"
    (no_redis,) = _rayservices("dev", redis="none")
    assert "gcsFaultToleranceOptions" not in no_redis["spec"]["rayClusterConfig"]


def test_incremental_upgrades_are_refused_with_the_reason_and_the_alternative() -> None:
    services = copy.deepcopy(stack_file_values("prod")["services"])
    services[0]["upgradeStrategy"] = {"type": "NewClusterWithIncrementalUpgrade"}
    with pytest.raises(ConfigError) as refused:
        _rayservices("prod", services=services)
    (issue,) = refused.value.issues
    assert issue.path == "services[0].upgradeStrategy.type"
    assert "a Gateway and HTTPRoute it creates itself" in issue.message
    assert issue.message.endswith("failOnClusterReplacement checks both fit), None")
    assert "allowed: NewCluster" in issue.message


def test_log_shipping_off_means_one_container_per_ray_pod() -> None:
    for rayservice in _rayservices("dev", logShipping=False):
        cluster = rayservice["spec"]["rayClusterConfig"]
        for template in [cluster["headGroupSpec"]["template"],
                         *(g["template"] for g in cluster["workerGroupSpecs"])]:  # fmt: skip
            assert [c["name"] for c in template["spec"]["containers"]] in (
                ["ray-head"], ["ray-worker"])  # fmt: skip
