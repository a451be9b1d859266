"""The Ray platform layer: KubeRay, GPU Operator, GCS Redis, RayServices, `render`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import StackConfig
from infra.config.sources import load_stack_file, stack_file_values
from infra.gpu_operator import gpu_operator_values, resource_quota_manifest
from infra.kuberay import kuberay_values
from infra.program.render import KNOWN_AFTER_UP, charts_of, is_object, program_objects, render
from infra.program.runner import ProgramRun, is_secret, reveal, run_program
from infra.rayservice.manifest import GPU_TOLERATION, SPOT_TOLERATION
from infra.rayservice.serve_config import serve_config
from infra.redis import REDIS_IMAGE, in_cluster_manifests
from tests.k8s_schemas import REFERENCE_DIR, has_schema, set_keys, validation_errors, values_keys

STACKS = ["dev", "prod"]
RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def _objects(stack_name: str, **overrides: Any) -> list[dict[str, Any]]:
    """What the program declares for the stack, with config `overrides` (config keys)."""
    return program_objects(stack_name, overrides)


def _rayservices(stack_name: str, **overrides: Any) -> list[dict[str, Any]]:
    return [o for o in _objects(stack_name, **overrides) if o["kind"] == "RayService"]


# -- schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("stack_name", STACKS)
@pytest.mark.parametrize("driver", ["gke", "operator"])
def test_every_object_of_every_stack_validates(stack_name: str, driver: str) -> None:
    objects = _objects(stack_name, gpuDriver=driver)
    assert {o["kind"] for o in objects} >= {"Namespace", "Secret", "RayService"}
    for obj in filter(has_schema, objects):
        assert validation_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_in_cluster_redis_validates_for_the_clusters_kubernetes() -> None:
    kinds = [m["kind"] for m in in_cluster_manifests("ray")]
    assert kinds == ["Service", "StatefulSet", "PodDisruptionBudget"]
    for manifest in in_cluster_manifests("ray"):
        assert validation_errors(manifest) == []


def _cluster(rs: dict[str, Any]) -> dict[str, Any]:
    return dict(rs["spec"]["rayClusterConfig"])


BREAKAGES = [
    (lambda rs: rs["spec"].update(upgradeStrategy={"clusterUpgradeOptions": {}}), "Options"),
    (lambda rs: _cluster(rs)["authOptions"].update(mode="password"), "mode"),
    (lambda rs: _cluster(rs)["headGroupSpec"].pop("template"), "template"),
    (lambda rs: _cluster(rs)["workerGroupSpecs"][0].update(replicas="two"), "replicas"),
]


@pytest.mark.parametrize(("breakage", "where"), BREAKAGES)
def test_a_broken_rayservice_fails_validation(breakage: Any, where: str) -> None:
    broken = copy.deepcopy(_rayservices("prod")[0])
    breakage(broken)
    errors = validation_errors(broken)
    assert errors and any(where in e for e in errors), errors


def test_a_broken_core_object_fails_validation() -> None:
    statefulset = copy.deepcopy(in_cluster_manifests("ray")[1])
    statefulset["spec"]["replicas"] = "one"
    assert validation_errors(statefulset)
    quota = resource_quota_manifest()
    quota["spec"]["scopeSelector"]["matchExpressions"][0]["operatr"] = "In"
    assert validation_errors(quota)


def test_reference_dir_is_where_the_schemas_are() -> None:
    assert (REFERENCE_DIR / "kuberay-1.7.0" / "crds" / "ray.io_rayservices.yaml").is_file()


# -- Helm values against the pinned charts ------------------------------------------


@pytest.mark.parametrize("single_namespace", [False, True])
def test_kuberay_values_keys_exist_in_the_pinned_chart(single_namespace: bool) -> None:
    known = values_keys(REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml")
    stack = load_stack_file("prod").model_copy(
        update={"kuberay_single_namespace": single_namespace}
    )
    # Maps of user data (a node selector, ResourceRequirements, labels) are not chart keys.
    free = ("nodeSelector", "resources", "metrics.serviceMonitor.additionalLabels")
    for key in set_keys(kuberay_values(stack), free=free):
        assert key in known, f"kuberay-operator 1.7.0 has no values key {key}"
    values = kuberay_values(stack)
    assert values["nodeSelector"] == {"rayserve-gke/role": "system"}
    assert values.get("singleNamespaceInstall", False) is single_namespace
    if single_namespace:
        assert values["watchNamespace"] == ["ray"]


def test_a_renamed_values_key_is_caught() -> None:
    known = values_keys(REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml")
    assert "metrics.serviceMonitor.additionalLabels" in known
    assert "metrics.serviceMonitor.selector" not in known  # renamed in chart 1.7.0


@pytest.mark.parametrize("driver", ["gke", "operator"])
def test_gpu_operator_values_match_the_driver_mode(driver: str) -> None:
    stack = load_stack_file("prod").model_copy(update={"gpu_driver": driver})
    values = gpu_operator_values(stack)
    known = values_keys(REFERENCE_DIR / "gpu-operator-26.7.0" / "values.yaml")
    for key in set_keys(values, free=("operator.nodeSelector",)):
        assert key in known, f"gpu-operator v26.7.0 has no values key {key}"
    installs = driver == "operator"
    assert values["driver"]["enabled"] is installs
    assert values["toolkit"]["enabled"] is installs
    assert values["devicePlugin"]["enabled"] is installs
    assert values["dcgmExporter"]["enabled"] is True
    assert ("hostPaths" in values) is (driver == "gke")


def test_gpu_operator_quota_admits_critical_pods_only() -> None:
    quota = resource_quota_manifest()
    assert quota["metadata"]["namespace"] == "gpu-operator"
    assert quota["spec"]["hard"] == {"pods": "100"}
    (expression,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert expression["scopeName"] == "PriorityClass"
    assert set(expression["values"]) == {"system-node-critical", "system-cluster-critical"}


# -- the RayService spec --------------------------------------------------------------


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
            assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"  # serveIngress defaults to haproxy
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


def test_haproxy_reaches_replicas_on_other_nodes() -> None:
    # HAProxy on any node forwards to ingress replicas on the others, on ports from the
    # direct-ingress range: the service's internal policy admits every port between its
    # own pods, and only them.
    (internal,) = [o for o in _objects("dev") if o["metadata"]["name"].endswith("-ray-internal")]
    (rule,) = internal["spec"]["ingress"]
    assert set(rule) == {"from"}  # no port list: every port
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"] == internal["spec"]["podSelector"]["matchLabels"]


def test_gcs_fault_tolerance_per_redis_mode() -> None:
    (dev,) = _rayservices("dev")
    ft = dev["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "redis://gcs-redis.ray.svc.cluster.local:6379"
    assert ft["redisPassword"] == {
        "valueFrom": {"secretKeyRef": {"name": "gcs-redis-auth", "key": "password"}}
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


def test_incremental_upgrade_options_are_passed_through() -> None:
    services = copy.deepcopy(stack_file_values("prod")["services"])
    services[0]["upgradeStrategy"] = {
        "type": "NewClusterWithIncrementalUpgrade",
        "stepSizePercent": 25,
        "intervalSeconds": 60,
        "maxSurgePercent": 50,
    }
    (rayservice, _) = _rayservices("prod", services=services)
    options = rayservice["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]
    assert (options["stepSizePercent"], options["intervalSeconds"]) == (25, 60)
    assert validation_errors(rayservice) == []


def test_in_cluster_redis_is_durable_authenticated_and_pinned() -> None:
    service, statefulset, pdb = in_cluster_manifests("ray")
    pod = statefulset["spec"]["template"]["spec"]
    container, exporter = pod["containers"]
    assert "@sha256:" in container["image"] and container["image"] == REDIS_IMAGE
    assert "@sha256:" in exporter["image"]
    assert exporter["ports"] == [{"name": "redis-metrics", "containerPort": 9121}]
    assert "--maxmemory-policy noeviction" in container["command"][-1]
    assert "--appendonly yes" in container["command"][-1]
    assert '--requirepass "$REDIS_PASSWORD"' in container["command"][-1]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert pdb["spec"]["maxUnavailable"] == 0
    assert service["spec"]["ports"][0]["port"] == 6379


# -- the program under mocks ------------------------------------------------------------


@pytest.fixture(scope="module", params=STACKS)
def program(request: pytest.FixtureRequest) -> tuple[str, ProgramRun]:
    return request.param, run_program(request.param)


def _deps_closure(run: ProgramRun, key: tuple[str, str]) -> set[tuple[str, str]]:
    """What a resource waits for: its depends_on, and its ancestors' depends_on."""
    deps: set[tuple[str, str]] = set(run.depends_on.get(key, []))
    parent = run.parents.get(key)
    while parent is not None:
        deps |= set(run.depends_on.get(parent, []))
        parent = run.parents.get(parent)
    return deps


def test_rayservices_come_after_crds_operator_and_redis(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    rayservices = run.of_type(RAYSERVICE)
    assert len(rayservices) == len(load_stack_file(stack_name).services)
    redis_kind = {"dev": "kubernetes:apps/v1:StatefulSet", "prod": "gcp:redis/instance:Instance"}
    for resource in rayservices:
        deps = {typ for typ, _ in _deps_closure(run, (resource.type, resource.name))}
        assert "kubernetes:helm.sh/v4:Chart" in deps  # the CRDs and the operator
        assert "kubernetes:core/v1:Namespace" in deps
        assert redis_kind[stack_name] in deps
        assert "kubernetes:core/v1:Secret" in deps


def test_every_password_and_token_is_a_secret(program: tuple[str, ProgramRun]) -> None:
    _, run = program
    secrets = run.of_type("kubernetes:core/v1:Secret")
    assert len(secrets) >= 3
    for secret in secrets:
        assert is_secret(secret.inputs["stringData"]), secret.name
    for resource in run.resources:
        text = str(resource.inputs)
        assert "mock-redis-auth" not in text or is_secret(resource.inputs.get("stringData"))


def test_no_image_is_unpinned(program: tuple[str, ProgramRun]) -> None:
    _, run = program
    images = [i for r in run.resources for i in _images(reveal(r.inputs))]
    assert images
    for image in images:
        assert "@sha256:" in image, image


def _images(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == "image" and isinstance(v, str)]
        return found + [i for v in value.values() for i in _images(v)]
    if isinstance(value, list):
        return [i for v in value for i in _images(v)]
    return []


# -- render -------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_name", STACKS)
def test_render_writes_exactly_what_the_program_declares(stack_name: str, tmp_path: Path) -> None:
    """`make render`: one valid file per Kubernetes object the program declares, one per
    chart, nothing else; never a secret value, never an invented digest."""
    run = run_program(stack_name, mode="preview")
    written = render(stack_name, tmp_path, run=run)
    objects = [yaml.safe_load(p.read_text()) for p in written if p.parent.name != "helm"]

    def identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])

    declared = [r for r in run.resources if is_object(r)]
    assert len(declared) >= 30
    assert sorted(map(identity, objects)) == sorted(identity(reveal(r.inputs)) for r in declared)
    for obj in objects:
        assert not has_schema(obj) or validation_errors(obj) == [], identity(obj)
        for image in _images(obj):
            assert image == KNOWN_AFTER_UP or "@sha256:" in image, image
        if obj["kind"] == "Secret":
            assert "data" not in obj and "stringData" not in obj  # never a value on disk
    charts = {p.stem: yaml.safe_load(p.read_text()) for p in written if p.parent.name == "helm"}
    assert sorted(charts) == sorted(c["chart"] for c in charts_of(run))
    assert charts["kuberay-operator"]["version"] == "1.7.0"
    assert charts["gpu-operator"]["version"] == "v26.7.0"
    assert charts["kube-prometheus-stack"]["version"] == "88.5.3"


def test_log_shipping_off_means_one_container_per_ray_pod() -> None:
    for rayservice in _rayservices("dev", logShipping=False):
        cluster = rayservice["spec"]["rayClusterConfig"]
        for template in [cluster["headGroupSpec"]["template"],
                         *(g["template"] for g in cluster["workerGroupSpecs"])]:  # fmt: skip
            assert [c["name"] for c in template["spec"]["containers"]] in (
                ["ray-head"], ["ray-worker"])  # fmt: skip


def test_the_pinned_operator_enables_incremental_upgrades() -> None:
    """`NewClusterWithIncrementalUpgrade` needs KubeRay's feature gate: chart 1.7.0 has it on."""
    values = yaml.safe_load(
        (REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml").read_text()
    )
    gates = {gate["name"]: gate["enabled"] for gate in values["featureGates"]}
    assert gates["RayServiceIncrementalUpgrade"] is True
    assert "featureGates" not in kuberay_values(load_stack_file("prod"))  # chart defaults kept
