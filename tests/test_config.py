"""The typed stack config: the stacks load, and every rule rejects with a path and a reason.

Invalid configs start from a real stack file (with Pulumi.yaml defaults, as
`load_stack_file` reads it), change one thing, and check the issue's key path and that
its message names what is allowed.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

import pulumi
import pytest

from infra.config import (
    GPU_TYPE_NAMES,
    PROJECT,
    STRUCTURED_KEYS,
    ConfigError,
    ConfigIssue,
    NodePool,
    StackConfig,
    gpu_catalog,
    parse_stack_config,
)
from infra.config.sources import (
    declared_config,
    load_pulumi_config,
    load_stack_file,
    stack_file_values,
)
from infra.program.runner import ProgramRun, engine_config

STACKS = ("dev", "prod")


def stack_values(stack: str) -> dict[str, Any]:
    """What `load_stack_file` validates: Pulumi.yaml defaults overlaid with the stack file."""
    defaults = {
        key: decl["default"]
        for key, decl in declared_config().items()
        if isinstance(decl, dict) and "default" in decl
    }
    return copy.deepcopy({**defaults, **stack_file_values(stack)})


def rejected(values: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_stack_config(values)
    return info.value


def only_issue(values: dict[str, Any]) -> ConfigIssue:
    """The one issue a config with one mistake must produce."""
    issues = rejected(values).issues
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def issue_at(values: dict[str, Any], path: str) -> str:
    """The message of the one issue at `path` (other issues may follow from it)."""
    issues = rejected(values).issues
    messages = [i.message for i in issues if i.path == path]
    assert len(messages) == 1, [str(i) for i in issues]
    return messages[0]


def pool(cfg: StackConfig, name: str) -> NodePool:
    found = cfg.pool(name)
    assert found is not None
    return found


# ---------------------------------------------------------------------------
# The stacks in this repository.


def test_dev_stack_loads() -> None:
    cfg = load_stack_file("dev")
    assert cfg.production is False
    assert cfg.zone == "us-central1-a"  # zonal
    assert [p.name for p in cfg.node_pools] == ["system", "cpu", "l4"]
    assert pool(cfg, "cpu").spot and pool(cfg, "cpu").gpu_type is None
    l4 = pool(cfg, "l4")
    assert (l4.spot, l4.gpu_type, cfg.gpus_per_node(l4)) == (True, "nvidia-l4", 1)
    assert not pool(cfg, "system").spot
    assert [s.name for s in cfg.services] == ["serving"]
    assert [a.name for a in cfg.services[0].apps] == ["embeddings", "classifier"]
    assert cfg.redis == "in-cluster"


def test_prod_stack_loads() -> None:
    cfg = load_stack_file("prod")
    assert cfg.production is True
    assert cfg.zone == ""  # regional
    assert {"system", "l4", "h100"} <= {p.name for p in cfg.node_pools}
    assert (pool(cfg, "l4").gpu_type, cfg.gpus_per_node(pool(cfg, "l4"))) == ("nvidia-l4", 2)
    assert pool(cfg, "h100").gpu_type == "nvidia-h100-80gb"
    assert cfg.redis == "memorystore"
    assert [s.name for s in cfg.services] == ["embeddings", "classifier"]
    assert [[a.name for a in s.apps] for s in cfg.services] == [["embeddings"], ["classifier"]]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_values_parse_like_load_stack_file(stack: str) -> None:
    assert parse_stack_config(stack_values(stack)) == load_stack_file(stack)


def test_unknown_stack_names_the_allowed_stacks() -> None:
    with pytest.raises(ConfigError) as info:
        load_stack_file("nope")
    (issue,) = info.value.issues
    assert "Pulumi.nope.yaml" in issue.message
    assert "allowed stacks: dev, prod" in issue.message


# ---------------------------------------------------------------------------
# Node pools: GPU types and machine pairings.


def test_unknown_gpu_type_lists_the_allowed_types() -> None:
    values = stack_values("dev")
    values["nodePools"][2]["gpuType"] = "nvidia-tesla-v100"
    issue = only_issue(values)
    assert issue.path == "nodePools[2].gpuType"
    assert all(f"'{name}'" in issue.message for name in GPU_TYPE_NAMES)


@pytest.mark.parametrize(
    ("machine_type", "gpu_type", "gpu_count", "key", "expected"),
    [
        pytest.param(
            "g2-standard-8",
            "nvidia-tesla-a100",
            None,
            "machineType",
            [
                "cannot carry nvidia-tesla-a100",
                "allowed machine types: a2-highgpu-1g",
                *gpu_catalog.GPU_TYPES["nvidia-tesla-a100"].bundled,
            ],
            id="a100-on-g2",
        ),
        pytest.param(
            "a3-highgpu-8g",
            "nvidia-h100-80gb",
            3,
            "gpuCount",
            ["carries exactly 8", "allowed counts for nvidia-h100-80gb: 1 (a3-highgpu-1g)"],
            id="h100-count-3",
        ),
        pytest.param(
            "n1-standard-8",
            "nvidia-tesla-t4",
            3,
            "gpuCount",
            ["count 3 is not offered", "allowed counts: 1, 2, 4"],
            id="t4-count-3",
        ),
        pytest.param(
            "n1-standard-96",
            "nvidia-tesla-t4",
            1,
            "machineType",
            ["allows at most 48 vCPUs", "n1-standard-96 has 96"],
            id="t4-vcpu-cap",
        ),
        pytest.param(
            "e2-standard-8",
            "nvidia-tesla-t4",
            None,
            "machineType",
            ["attaches only to n1 machine types"],
            id="t4-on-e2",
        ),
        pytest.param(
            "g2-standard-8",
            None,
            None,
            "gpuType",
            ["always carries GPUs", ", ".join(GPU_TYPE_NAMES)],
            id="g2-without-gpu-type",
        ),
        pytest.param(
            "e2-standard-8",
            None,
            1,
            "gpuCount",
            ["gpuCount needs a gpuType", ", ".join(GPU_TYPE_NAMES)],
            id="count-without-type",
        ),
        pytest.param(
            "e2_standard_8",
            None,
            None,
            "machineType",
            ["is not a machine type"],
            id="not-a-machine-type",
        ),
        pytest.param(
            "e2-standard-8\n",
            None,
            None,
            "machineType",
            ["is not a machine type"],
            id="machine-type-trailing-newline",
        ),
    ],
)
def test_machine_and_gpu_pairing(
    machine_type: str, gpu_type: str | None, gpu_count: int | None, key: str, expected: list[str]
) -> None:
    values = stack_values("prod")
    extra: dict[str, Any] = {"name": "extra", "machineType": machine_type}
    if gpu_type is not None:
        extra["gpuType"] = gpu_type
    if gpu_count is not None:
        extra["gpuCount"] = gpu_count
    values["nodePools"].append(extra)
    issue = only_issue(values)
    assert issue.path == f"nodePools[4].{key}"
    for text in expected:
        assert text in issue.message


@pytest.mark.parametrize(
    ("machine_type", "gpu_type", "gpu_count", "gpus"),
    [
        ("g2-standard-48", "nvidia-l4", None, 4),
        ("g2-standard-48", "nvidia-l4", 4, 4),
        ("a2-ultragpu-2g", "nvidia-a100-80gb", None, 2),
        ("a3-megagpu-8g", "nvidia-h100-mega-80gb", 8, 8),
        ("n1-standard-96", "nvidia-tesla-t4", 4, 4),
        ("n1-highmem-16", "nvidia-tesla-t4", None, 1),
    ],
)
def test_valid_pairings_load(
    machine_type: str, gpu_type: str, gpu_count: int | None, gpus: int
) -> None:
    values = stack_values("prod")
    extra: dict[str, Any] = {"name": "extra", "machineType": machine_type, "gpuType": gpu_type}
    if gpu_count is not None:
        extra["gpuCount"] = gpu_count
    values["nodePools"].append(extra)
    cfg = parse_stack_config(values)
    assert cfg.gpus_per_node(pool(cfg, "extra")) == gpus


# ---------------------------------------------------------------------------
# Duplicates.


@pytest.mark.parametrize("second", ["/embed", "/embed/"])
def test_duplicate_route_prefix(second: str) -> None:
    values = stack_values("dev")
    values["services"][0]["apps"][1]["routePrefix"] = second
    issue = only_issue(values)
    assert issue.path == "services[0].apps[1].routePrefix"
    assert "duplicate route prefix '/embed'" in issue.message
    assert "first at services[0].apps[0].routePrefix" in issue.message
    assert "'/a' and '/a/' are the same route" in issue.message
    assert "allowed: one app per route prefix" in issue.message


def test_duplicate_route_prefix_across_services() -> None:
    values = stack_values("prod")
    values["services"][1]["apps"][0]["routePrefix"] = "/embed/"
    issue = only_issue(values)
    assert issue.path == "services[1].apps[0].routePrefix"
    assert "first at services[0].apps[0].routePrefix" in issue.message


def test_duplicate_app_name_in_one_service() -> None:
    values = stack_values("dev")
    values["services"][0]["apps"][1]["name"] = "embeddings"
    issue = only_issue(values)
    assert issue.path == "services[0].apps[1].name"
    assert "duplicate app name 'embeddings' (first at services[0].apps[0].name)" in issue.message


def test_duplicate_app_name_across_services() -> None:
    values = stack_values("prod")
    values["services"][1]["apps"][0]["name"] = "embeddings"
    issue = only_issue(values)
    assert issue.path == "services[1].apps[0].name"
    assert "duplicate app name 'embeddings' (first at services[0].apps[0].name)" in issue.message


def test_duplicate_service_name() -> None:
    values = stack_values("prod")
    values["services"][1]["name"] = "embeddings"
    issue = only_issue(values)
    assert issue.path == "services[1].name"
    assert "duplicate service name 'embeddings' (first at services[0].name)" in issue.message


def test_duplicate_node_pool_name() -> None:
    values = stack_values("dev")
    values["nodePools"].append(copy.deepcopy(values["nodePools"][1]))
    issue = only_issue(values)
    assert issue.path == "nodePools[3].name"
    assert "duplicate node pool name 'cpu' (first at nodePools[1].name)" in issue.message


def test_duplicate_deployment_name() -> None:
    values = stack_values("dev")
    deployments = values["services"][0]["apps"][1]["deployments"]
    deployments.append(copy.deepcopy(deployments[0]))
    issue = only_issue(values)
    assert issue.path == "services[0].apps[1].deployments[1].name"
    assert "duplicate deployment name 'Classifier'" in issue.message


# ---------------------------------------------------------------------------
# Ranges across keys.


def _set(path: list[str | int], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(values: dict[str, Any]) -> None:
        target: Any = values
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "path", "rule"),
    [
        pytest.param(
            _set(["nodePools", 1, "minNodes"], 4),
            "nodePools[1].minNodes",
            "minNodes 4 > maxNodes 3; allowed: 0 <= minNodes <= maxNodes",
            id="node-pool-nodes",
        ),
        pytest.param(
            _set(["services", 0, "workerGroups", 0, "minReplicas"], 4),
            "services[0].workerGroups[0].minReplicas",
            "minReplicas 4 > maxReplicas 3; allowed: minReplicas <= maxReplicas",
            id="worker-group-replicas",
        ),
        pytest.param(
            _set(["services", 0, "apps", 0, "deployments", 0, "autoscaling", "minReplicas"], 3),
            "services[0].apps[0].deployments[0].autoscaling.minReplicas",
            "minReplicas 3 > maxReplicas 2; allowed: minReplicas <= maxReplicas",
            id="autoscaling-replicas",
        ),
    ],
)
def test_min_above_max(mutate: Callable[[dict[str, Any]], None], path: str, rule: str) -> None:
    values = stack_values("dev")
    mutate(values)
    issue = only_issue(values)
    assert (issue.path, issue.message) == (path, rule)


def test_max_ongoing_requests_below_batch_size() -> None:
    values = stack_values("dev")
    values["services"][0]["apps"][1]["deployments"][0]["maxOngoingRequests"] = 8
    issue = only_issue(values)
    assert issue.path == "services[0].apps[1].deployments[0].maxOngoingRequests"
    assert "maxOngoingRequests 8 < userConfig.max_batch_size 16" in issue.message
    assert "allowed: maxOngoingRequests >= 16" in issue.message


def test_gpu_deployment_in_a_service_without_gpu_workers() -> None:
    values = stack_values("prod")
    deployment = values["services"][1]["apps"][0]["deployments"][0]
    deployment["rayActorOptions"]["numGpus"] = 1
    issue = only_issue(values)
    assert issue.path == "services[1].apps[0].deployments[0].rayActorOptions.numGpus"
    assert "no GPU worker group" in issue.message
    assert "allowed: numGpus 0, or add a workerGroup on a pool with a gpuType" in issue.message


def test_gpu_deployment_larger_than_any_gpu_node() -> None:
    values = stack_values("prod")  # l4 nodes carry 2 GPUs, h100 nodes 1
    values["services"][0]["apps"][0]["deployments"][0]["rayActorOptions"]["numGpus"] = 4
    issue = only_issue(values)
    assert issue.path == "services[0].apps[0].deployments[0].rayActorOptions.numGpus"
    assert "allowed: numGpus <= 2" in issue.message


def test_worker_group_on_unknown_or_system_pool() -> None:
    values = stack_values("prod")
    values["services"][1]["workerGroups"][0]["nodePool"] = "system"
    issue = only_issue(values)
    assert issue.path == "services[1].workerGroups[0].nodePool"
    assert "allowed: cpu, l4, h100" in issue.message


# ---------------------------------------------------------------------------
# Builder import paths.


@pytest.mark.parametrize(
    ("import_path", "reason"),
    [
        ("serve_apps.nope:build_app", "no module 'serve_apps.nope'"),
        ("serve_apps.nope.app:build_app", "no module 'serve_apps.nope'"),
        ("serve_apps.text_embedding.app:nope", "serve_apps.text_embedding.app defines no 'nope'"),
        (
            "serve_apps.text_embedding.app.inner:build_app",
            "'serve_apps.text_embedding.app' is a module, not a package",
        ),
    ],
)
def test_builder_import_path_does_not_resolve(import_path: str, reason: str) -> None:
    values = stack_values("dev")
    values["services"][0]["apps"][0]["importPath"] = import_path
    issue = only_issue(values)
    assert issue.path == "services[0].apps[0].importPath"
    assert issue.message.startswith(f"'{import_path}' does not resolve")
    assert reason in issue.message


def test_import_path_check_imports_no_app_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps import model libraries: the check parses them and imports only packages."""
    app_module = "serve_apps.text_embedding.app"
    monkeypatch.delitem(sys.modules, app_module, raising=False)
    for import_path in (f"{app_module}:build_app", f"{app_module}.inner:build_app"):
        values = stack_values("dev")
        values["services"][0]["apps"][0]["importPath"] = import_path
        with contextlib.suppress(ConfigError):
            parse_stack_config(values)
        assert app_module not in sys.modules


@pytest.mark.parametrize(
    "import_path",
    [
        "os:getcwd",
        "text_embedding.app:build_app",
        "serve_apps.text_embedding.app",
        "serve_apps.text_embedding.app:build_app\n",
    ],
)
def test_builder_import_path_outside_serve_apps(import_path: str) -> None:
    values = stack_values("dev")
    values["services"][0]["apps"][0]["importPath"] = import_path
    issue = only_issue(values)
    assert issue.path == "services[0].apps[0].importPath"
    assert "is not a builder import path: use 'serve_apps.<package>.<module>:" in issue.message


# ---------------------------------------------------------------------------
# Names.


@pytest.mark.parametrize(
    ("mutate", "path", "limit"),
    [
        pytest.param(
            _set(["services", 0, "name"], "My_Service"), "services[0].name", 40, id="service"
        ),
        pytest.param(
            _set(["services", 0, "name"], "serving\n"), "services[0].name", 40, id="newline"
        ),
        pytest.param(
            _set(["services", 0, "apps", 0, "name"], "Embeddings"),
            "services[0].apps[0].name",
            30,
            id="app-uppercase",
        ),
        pytest.param(
            _set(["services", 0, "apps", 0, "name"], "e" * 31),
            "services[0].apps[0].name",
            30,
            id="app-too-long",
        ),
        pytest.param(
            _set(["nodePools", 1, "name"], "c" * 41), "nodePools[1].name", 40, id="pool-too-long"
        ),
        pytest.param(
            _set(["services", 0, "workerGroups", 0, "nodePool"], "-cpu"),
            "services[0].workerGroups[0].nodePool",
            40,
            id="worker-group-pool",
        ),
        pytest.param(_set(["namespace"], "Ray"), "namespace", 63, id="namespace-uppercase"),
        pytest.param(_set(["namespace"], "ray-"), "namespace", 63, id="namespace-dash"),
    ],
)
def test_invalid_kubernetes_names(
    mutate: Callable[[dict[str, Any]], None], path: str, limit: int
) -> None:
    values = stack_values("dev")
    mutate(values)
    issue = only_issue(values)
    assert issue.path == path
    assert "is not a valid Kubernetes name: use lowercase letters, digits and '-'" in issue.message
    assert f"at most {limit} characters" in issue.message


@pytest.mark.parametrize(
    ("mutate", "path", "text"),
    [
        pytest.param(
            _set(["services", 0, "apps", 0, "routePrefix"], "/embed\n"),
            "services[0].apps[0].routePrefix",
            "is not a route prefix",
            id="route-prefix",
        ),
        pytest.param(
            _set(["services", 0, "head", "memory"], "4Gi\n"),
            "services[0].head.memory",
            "is not a positive Kubernetes quantity",
            id="quantity",
        ),
        pytest.param(
            _set(["gcpProject"], "acme-ml-platform-dev\n"),
            "gcpProject",
            "is not a GCP project id",
            id="gcp-project",
        ),
    ],
)
def test_trailing_newline_is_not_accepted(
    mutate: Callable[[dict[str, Any]], None], path: str, text: str
) -> None:
    values = stack_values("dev")
    mutate(values)
    issue = only_issue(values)
    assert issue.path == path
    assert text in issue.message


# ---------------------------------------------------------------------------
# Production rules, unknown and missing keys, the system pool.


def test_redis_none_rejected_in_production() -> None:
    values = stack_values("prod")
    values["redis"] = "none"
    issue = only_issue(values)
    assert issue.path == "redis"
    assert "allowed: memorystore, in-cluster" in issue.message


def test_redis_none_allowed_in_dev() -> None:
    values = stack_values("dev")
    values["redis"] = "none"
    assert parse_stack_config(values).redis == "none"


def test_unknown_redis_value_lists_the_allowed_values() -> None:
    values = stack_values("dev")
    values["redis"] = "valkey"
    issue = only_issue(values)
    assert issue.path == "redis"
    assert all(f"'{v}'" in issue.message for v in ("in-cluster", "memorystore", "none"))


@pytest.mark.parametrize(
    ("mutate", "path", "allowed"),
    [
        pytest.param(
            _set(["regoin"], "us-east1"),
            "regoin",
            ["region", "zone", "nodePools", "services", "prometheusVolumeSize"],
            id="top-level",
        ),
        pytest.param(
            _set(["nodePools", 1, "gpus"], 1),
            "nodePools[1].gpus",
            ["name, machineType, gpuType, gpuCount, spot, minNodes, maxNodes, diskSizeGb"],
            id="node-pool",
        ),
        pytest.param(
            _set(["services", 0, "apps", 1, "deployments", 0, "numReplica"], 2),
            "services[0].apps[1].deployments[0].numReplica",
            ["numReplicas", "autoscaling", "maxOngoingRequests", "rayActorOptions"],
            id="deployment",
        ),
        pytest.param(
            _set(["services", 0, "apps", 0, "deployments", 0, "rayActorOptions", "gpus"], 1),
            "services[0].apps[0].deployments[0].rayActorOptions.gpus",
            ["numCpus, numGpus, memory"],
            id="ray-actor-options",
        ),
    ],
)
def test_unknown_keys_list_the_allowed_keys(
    mutate: Callable[[dict[str, Any]], None], path: str, allowed: list[str]
) -> None:
    values = stack_values("dev")
    mutate(values)
    issue = only_issue(values)
    assert issue.path == path
    assert issue.message.startswith("unknown key; allowed keys: ")
    for text in allowed:
        assert text in issue.message


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("services[0].apps[0].importPath", ["services", 0, "apps", 0, "importPath"]),
        ("nodePools[1].machineType", ["nodePools", 1, "machineType"]),
        ("services", ["services"]),
    ],
)
def test_missing_required_key(path: str, parts: list[str | int]) -> None:
    values = stack_values("dev")
    target: Any = values
    for part in parts[:-1]:
        target = target[part]
    del target[parts[-1]]
    issue = only_issue(values)
    assert (issue.path, issue.message) == (path, "required key is missing")


def test_system_pool_is_required() -> None:
    values = stack_values("dev")
    values["nodePools"][0]["name"] = "base"
    issue = only_issue(values)
    assert issue.path == "nodePools"
    assert "a 'system' pool is required (on-demand, no GPUs)" in issue.message


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"spot": True}, "spot"),
        ({"machineType": "g2-standard-8", "gpuType": "nvidia-l4"}, "gpuType"),
    ],
)
def test_system_pool_is_never_spot_nor_gpu(changes: dict[str, Any], key: str) -> None:
    values = stack_values("dev")
    values["nodePools"][0].update(changes)
    issue = only_issue(values)
    assert issue.path == f"nodePools[0].{key}"
    assert "allowed: spot: false, no gpuType" in issue.message


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        parse_stack_config(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert [i.path for i in info.value.issues] == [""]


# ---------------------------------------------------------------------------
# Every issue at once.


def test_all_shape_issues_are_reported_together() -> None:
    values = stack_values("dev")
    values["namespace"] = "Ray"
    values["nodePools"][2]["gpuType"] = "nvidia-v100"
    values["services"][0]["apps"][1]["deployments"][0]["numReplica"] = 1
    del values["services"][0]["apps"][0]["routePrefix"]
    error = rejected(values)
    paths = [
        "namespace",
        "nodePools[2].gpuType",
        "services[0].apps[0].routePrefix",
        "services[0].apps[1].deployments[0].numReplica",
    ]
    assert sorted(i.path for i in error.issues) == paths
    assert f"({len(paths)} problem(s))" in str(error)
    for path in paths:
        assert f"{PROJECT}:{path}: " in str(error)


def test_all_cross_key_issues_are_reported_together() -> None:
    values = stack_values("prod")
    values["redis"] = "none"
    values["nodePools"][1]["minNodes"] = 9
    values["services"][1]["name"] = "embeddings"
    values["services"][1]["apps"][0]["routePrefix"] = "/embed/"
    values["services"][1]["apps"][0]["importPath"] = "serve_apps.nope:build_app"
    values["services"][1]["apps"][0]["deployments"][0]["maxOngoingRequests"] = 4
    error = rejected(values)
    paths = {
        "redis",
        "nodePools[1].minNodes",
        "services[1].name",
        "services[1].apps[0].routePrefix",
        "services[1].apps[0].importPath",
        "services[1].apps[0].deployments[0].maxOngoingRequests",
    }
    assert {i.path for i in error.issues} == paths
    assert len(error.issues) == len(paths)
    for path in paths:
        assert f"{PROJECT}:{path}: " in str(error)


# ---------------------------------------------------------------------------
# Pulumi.yaml declares every scalar key with the model's type and default.


def _pulumi_type(annotation: Any) -> str:
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is str:
        return "string"
    if get_origin(annotation) is Literal and all(isinstance(a, str) for a in get_args(annotation)):
        return "string"
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if item is str or (get_origin(item) is Annotated and get_args(item)[0] is str):
            return "array"
    raise AssertionError(f"no Pulumi.yaml type for {annotation!r}")


ALIASES = {name: field.alias or name for name, field in StackConfig.model_fields.items()}
SCALAR_FIELDS = {
    ALIASES[name]: field
    for name, field in StackConfig.model_fields.items()
    if ALIASES[name] not in STRUCTURED_KEYS
}


def test_structured_keys_are_the_list_fields() -> None:
    assert set(STRUCTURED_KEYS) <= set(ALIASES.values())
    required = {ALIASES[n] for n, f in StackConfig.model_fields.items() if f.is_required()}
    assert required == set(STRUCTURED_KEYS)


@pytest.mark.parametrize("key", sorted(SCALAR_FIELDS))
def test_pulumi_yaml_declares_scalar_key(key: str) -> None:
    field = SCALAR_FIELDS[key]
    declaration = declared_config().get(key)
    assert isinstance(declaration, dict), f"Pulumi.yaml config: declares no {key}"
    assert declaration.get("type") == _pulumi_type(field.annotation)
    assert isinstance(declaration.get("description"), str) and declaration["description"].strip()
    assert "default" in declaration
    default = field.get_default(call_default_factory=True)
    assert declaration["default"] == default
    assert type(declaration["default"]) is type(default)
    if declaration["type"] == "array":
        assert declaration.get("items") == {"type": "string"}


def test_pulumi_yaml_declares_nothing_else() -> None:
    assert set(declared_config()) - set(SCALAR_FIELDS) == set()


# ---------------------------------------------------------------------------
# Inside a Pulumi program: the engine's strings give the same StackConfig.


@pytest.fixture
def pulumi_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Sets mocks and config for one stack; clears the config (and secret keys) after."""
    for name in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS"):
        monkeypatch.delenv(name, raising=False)

    def configure(stack: str, config: dict[str, str], secret_keys: Sequence[str] = ()) -> None:
        pulumi.runtime.set_mocks(ProgramRun(), project=PROJECT, stack=stack, preview=False)
        pulumi.runtime.set_all_config(config, secret_keys=list(secret_keys))

    yield configure
    pulumi.runtime.set_all_config({}, secret_keys=[])


@pytest.mark.parametrize("stack", STACKS)
def test_pulumi_config_matches_the_stack_file(
    stack: str, pulumi_config: Callable[..., None]
) -> None:
    config = engine_config(stack)
    assert all(isinstance(v, str) for v in config.values())
    pulumi_config(stack, config)
    assert load_pulumi_config() == load_stack_file(stack)


def test_pulumi_config_ignores_other_secrets(pulumi_config: Callable[..., None]) -> None:
    config = {**engine_config("dev"), f"{PROJECT}:apiKeys": "ciphertext-stand-in"}
    pulumi_config("dev", config, [f"{PROJECT}:apiKeys"])
    assert load_pulumi_config() == load_stack_file("dev")


def test_pulumi_config_rejects_a_secret_stack_config_key(
    pulumi_config: Callable[..., None],
) -> None:
    pulumi_config("prod", engine_config("prod"), [f"{PROJECT}:gcpProject"])
    with pytest.raises(ConfigError) as info:
        load_pulumi_config()
    (issue,) = info.value.issues
    assert issue.path == "gcpProject"
    assert "set it without --secret" in issue.message


def test_pulumi_config_rejects_bad_json(pulumi_config: Callable[..., None]) -> None:
    config = {**engine_config("dev"), f"{PROJECT}:services": "[{not json"}
    pulumi_config("dev", config)
    with pytest.raises(ConfigError) as info:
        load_pulumi_config()
    (issue,) = info.value.issues
    assert issue.path == "services"
    assert "is not a list of objects" in issue.message
