"""Parsing stack config: the stacks load, and every rule rejects with a key path and a reason."""

from __future__ import annotations

import contextlib
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
from infra.config.sources import declared_config, load_pulumi_config, load_stack_file
from infra.program.runner import ProgramRun, engine_config
from tests.infra.config.mutations import Mutation, deleting, duplicating, setting, updating
from tests.infra.helpers import STACKS, stack_values


def rejected(values: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_stack_config(values)
    return info.value


def only_issue(values: dict[str, Any]) -> ConfigIssue:
    """The one issue a config with one mistake must produce."""
    issues = rejected(values).issues
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


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
# One mistake, one issue: a real stack's values (with Pulumi.yaml defaults, as
# `load_stack_file` reads them) with one thing changed give exactly one issue, at the
# key path of the change, whose message says what is allowed.


def extra_pool(machine_type: str, **gpu: Any) -> Mutation:
    """Adds a node pool `extra` (prod has four: it becomes nodePools[4])."""

    def mutate(values: dict[str, Any]) -> None:
        values["nodePools"].append({"name": "extra", "machineType": machine_type, **gpu})

    return mutate


def case(
    case_id: str, stack: str, mutate: Mutation, path: str, *message: str
) -> pytest.ParameterSet:
    """One row: the issue's path, and fragments its message contains; a fragment that
    starts with `^` starts the message, one that ends with `$` ends it."""
    return pytest.param(stack, mutate, path, message, id=case_id)


def _has(message: str, fragment: str) -> bool:
    if fragment.startswith("^") and fragment.endswith("$"):
        return message == fragment[1:-1]
    if fragment.startswith("^"):
        return message.startswith(fragment[1:])
    if fragment.endswith("$"):
        return message.endswith(fragment[:-1])
    return fragment in message


IMPORT_PATH = "services[0].apps[0].importPath"
KUBERNETES_NAME = "is not a valid Kubernetes name: use lowercase letters, digits and '-'"
NOT_A_BUILDER = "is not a builder import path: use 'serve_apps.<package>.<module>:"
UNKNOWN_KEY = "^unknown key; "
NOT_ON_SYSTEM_POOL = "allowed: spot: false, no gpuType"
ALL_GPU_TYPES = ", ".join(GPU_TYPE_NAMES)

ONE_MISTAKE = [
    # Node pools: GPU types and machine pairings.
    case("unknown-gpu-type", "dev", setting("nodePools[2].gpuType", "nvidia-tesla-v100"),
         "nodePools[2].gpuType", *(f"'{name}'" for name in GPU_TYPE_NAMES)),
    case("a100-on-g2", "prod", extra_pool("g2-standard-8", gpuType="nvidia-tesla-a100"),
         "nodePools[4].machineType", "cannot carry nvidia-tesla-a100",
         "allowed machine types: a2-highgpu-1g",
         *gpu_catalog.GPU_TYPES["nvidia-tesla-a100"].bundled),
    case("h100-count-3", "prod",
         extra_pool("a3-highgpu-8g", gpuType="nvidia-h100-80gb", gpuCount=3),
         "nodePools[4].gpuCount", "carries exactly 8",
         "allowed counts for nvidia-h100-80gb: 1 (a3-highgpu-1g)"),
    case("t4-count-3", "prod", extra_pool("n1-standard-8", gpuType="nvidia-tesla-t4", gpuCount=3),
         "nodePools[4].gpuCount", "count 3 is not offered", "allowed counts: 1, 2, 4"),
    case("t4-vcpu-cap", "prod",
         extra_pool("n1-standard-96", gpuType="nvidia-tesla-t4", gpuCount=1),
         "nodePools[4].machineType", "allows at most 48 vCPUs", "n1-standard-96 has 96"),
    case("t4-on-e2", "prod", extra_pool("e2-standard-8", gpuType="nvidia-tesla-t4"),
         "nodePools[4].machineType", "attaches only to n1 machine types"),
    case("g2-without-gpu-type", "prod", extra_pool("g2-standard-8"),
         "nodePools[4].gpuType", "always carries GPUs", ALL_GPU_TYPES),
    case("count-without-type", "prod", extra_pool("e2-standard-8", gpuCount=1),
         "nodePools[4].gpuCount", "gpuCount needs a gpuType", ALL_GPU_TYPES),
    case("not-a-machine-type", "prod", extra_pool("e2_standard_8"),
         "nodePools[4].machineType", "is not a machine type"),
    case("machine-type-trailing-newline", "prod", extra_pool("e2-standard-8\n"),
         "nodePools[4].machineType", "is not a machine type"),
    # Duplicates.
    *(
        case(f"duplicate-route-prefix-{second}", "dev",
             setting("services[0].apps[1].routePrefix", second),
             "services[0].apps[1].routePrefix", "duplicate route prefix '/embed'",
             "first at services[0].apps[0].routePrefix", "'/a' and '/a/' are the same route",
             "allowed: one app per route prefix")
        for second in ("/embed", "/embed/")
    ),
    case("duplicate-route-prefix-across-services", "prod",
         setting("services[1].apps[0].routePrefix", "/embed/"),
         "services[1].apps[0].routePrefix", "first at services[0].apps[0].routePrefix"),
    case("duplicate-app-name-in-one-service", "dev",
         setting("services[0].apps[1].name", "embeddings"), "services[0].apps[1].name",
         "duplicate app name 'embeddings' (first at services[0].apps[0].name)"),
    case("duplicate-app-name-across-services", "prod",
         setting("services[1].apps[0].name", "embeddings"), "services[1].apps[0].name",
         "duplicate app name 'embeddings' (first at services[0].apps[0].name)"),
    case("duplicate-service-name", "prod", setting("services[1].name", "embeddings"),
         "services[1].name", "duplicate service name 'embeddings' (first at services[0].name)"),
    case("duplicate-node-pool-name", "dev", duplicating("nodePools[1]"), "nodePools[3].name",
         "duplicate node pool name 'cpu' (first at nodePools[1].name)"),
    case("duplicate-deployment-name", "dev", duplicating("services[0].apps[1].deployments[0]"),
         "services[0].apps[1].deployments[1].name", "duplicate deployment name 'Classifier'"),
    # Ranges across keys.
    case("node-pool-nodes", "dev", setting("nodePools[1].minNodes", 4), "nodePools[1].minNodes",
         "^minNodes 4 > maxNodes 3; allowed: 0 <= minNodes <= maxNodes$"),
    case("worker-group-replicas", "dev", setting("services[0].workerGroups[0].minReplicas", 4),
         "services[0].workerGroups[0].minReplicas",
         "^minReplicas 4 > maxReplicas 3; allowed: minReplicas <= maxReplicas$"),
    case("autoscaling-replicas", "dev",
         setting("services[0].apps[0].deployments[0].autoscaling.minReplicas", 3),
         "services[0].apps[0].deployments[0].autoscaling.minReplicas",
         "^minReplicas 3 > maxReplicas 2; allowed: minReplicas <= maxReplicas$"),
    case("max-ongoing-requests-below-batch-size", "dev",
         setting("services[0].apps[1].deployments[0].maxOngoingRequests", 8),
         "services[0].apps[1].deployments[0].maxOngoingRequests",
         "maxOngoingRequests 8 < userConfig.max_batch_size 16",
         "allowed: maxOngoingRequests >= 16"),
    case("gpu-deployment-without-gpu-workers", "prod",
         setting("services[1].apps[0].deployments[0].rayActorOptions.numGpus", 1),
         "services[1].apps[0].deployments[0].rayActorOptions.numGpus", "no GPU worker group",
         "allowed: numGpus 0, or add a workerGroup on a pool with a gpuType"),
    # prod's l4 nodes carry 2 GPUs, its h100 nodes 1.
    case("gpu-deployment-larger-than-any-gpu-node", "prod",
         setting("services[0].apps[0].deployments[0].rayActorOptions.numGpus", 4),
         "services[0].apps[0].deployments[0].rayActorOptions.numGpus", "allowed: numGpus <= 2"),
    case("worker-group-on-the-system-pool", "prod",
         setting("services[1].workerGroups[0].nodePool", "system"),
         "services[1].workerGroups[0].nodePool", "allowed: cpu, l4, h100"),
    # Builder import paths.
    *(
        case(f"import-path-does-not-resolve-{import_path}", "dev",
             setting(IMPORT_PATH, import_path), IMPORT_PATH,
             f"^'{import_path}' does not resolve", reason)
        for import_path, reason in (
            ("serve_apps.nope:build_app", "no module 'serve_apps.nope'"),
            ("serve_apps.nope.app:build_app", "no module 'serve_apps.nope'"),
            ("serve_apps.text_embedding.app:nope",
             "serve_apps.text_embedding.app defines no 'nope'"),
            ("serve_apps.text_embedding.app.inner:build_app",
             "'serve_apps.text_embedding.app' is a module, not a package"),
        )
    ),
    *(
        case(f"import-path-outside-serve-apps-{import_path!r}", "dev",
             setting(IMPORT_PATH, import_path), IMPORT_PATH, NOT_A_BUILDER)
        for import_path in (
            "os:getcwd",
            "text_embedding.app:build_app",
            "serve_apps.text_embedding.app",
            "serve_apps.text_embedding.app:build_app\n",
        )
    ),
    # Names.
    case("service-name", "dev", setting("services[0].name", "My_Service"), "services[0].name",
         KUBERNETES_NAME, "at most 40 characters"),
    case("service-name-newline", "dev", setting("services[0].name", "serving\n"),
         "services[0].name", KUBERNETES_NAME, "at most 40 characters"),
    case("app-name-uppercase", "dev", setting("services[0].apps[0].name", "Embeddings"),
         "services[0].apps[0].name", KUBERNETES_NAME, "at most 30 characters"),
    case("app-name-too-long", "dev", setting("services[0].apps[0].name", "e" * 31),
         "services[0].apps[0].name", KUBERNETES_NAME, "at most 30 characters"),
    case("pool-name-too-long", "dev", setting("nodePools[1].name", "c" * 41),
         "nodePools[1].name", KUBERNETES_NAME, "at most 40 characters"),
    case("worker-group-pool-name", "dev", setting("services[0].workerGroups[0].nodePool", "-cpu"),
         "services[0].workerGroups[0].nodePool", KUBERNETES_NAME, "at most 40 characters"),
    case("namespace-uppercase", "dev", setting("namespace", "Ray"), "namespace",
         KUBERNETES_NAME, "at most 63 characters"),
    case("namespace-dash", "dev", setting("namespace", "ray-"), "namespace",
         KUBERNETES_NAME, "at most 63 characters"),
    # A trailing newline is not accepted.
    case("route-prefix-newline", "dev", setting("services[0].apps[0].routePrefix", "/embed\n"),
         "services[0].apps[0].routePrefix", "is not a route prefix"),
    case("quantity-newline", "dev", setting("services[0].head.memory", "4Gi\n"),
         "services[0].head.memory", "is not a positive Kubernetes quantity"),
    case("gcp-project-newline", "dev", setting("gcpProject", "acme-ml-platform-dev\n"),
         "gcpProject", "is not a GCP project id"),
    # Production rules, gateways, unknown and missing keys, the system pool.
    case("redis-none-in-production", "prod", setting("redis", "none"), "redis",
         "allowed: memorystore, in-cluster"),
    case("unknown-redis-value", "dev", setting("redis", "valkey"), "redis",
         "'in-cluster'", "'memorystore'", "'none'"),
    case("cloud-armor-needs-the-global-gateway", "prod",
         setting("gatewayClass", "gke-l7-regional-external-managed"), "cloudArmor",
         "allowed with gke-l7-regional-external-managed: false"),
    case("unknown-top-level-key", "dev", setting("regoin", "us-east1"), "regoin", UNKNOWN_KEY,
         "did you mean 'region'? allowed keys: ",
         "region", "zone", "nodePools", "services", "prometheusVolumeSize"),
    case("unknown-node-pool-key", "dev", setting("nodePools[1].gpus", 1), "nodePools[1].gpus",
         UNKNOWN_KEY,
         "name, machineType, gpuType, gpuCount, spot, minNodes, maxNodes, diskSizeGb"),
    case("unknown-deployment-key", "dev",
         setting("services[0].apps[1].deployments[0].numReplica", 2),
         "services[0].apps[1].deployments[0].numReplica", UNKNOWN_KEY,
         "numReplicas", "autoscaling", "maxOngoingRequests", "rayActorOptions"),
    case("unknown-ray-actor-options-key", "dev",
         setting("services[0].apps[0].deployments[0].rayActorOptions.gpus", 1),
         "services[0].apps[0].deployments[0].rayActorOptions.gpus", UNKNOWN_KEY,
         "numCpus, numGpus, memory"),
    *(
        case(f"missing-{path}", "dev", deleting(path), path, "^required key is missing$")
        for path in ("services[0].apps[0].importPath", "nodePools[1].machineType", "services")
    ),
    case("system-pool-is-required", "dev", setting("nodePools[0].name", "base"), "nodePools",
         "a 'system' pool is required (on-demand, no GPUs)"),
    case("system-pool-is-never-spot", "dev", updating("nodePools[0]", spot=True),
         "nodePools[0].spot", NOT_ON_SYSTEM_POOL),
    case("system-pool-is-never-gpu", "dev",
         updating("nodePools[0]", machineType="g2-standard-8", gpuType="nvidia-l4"),
         "nodePools[0].gpuType", NOT_ON_SYSTEM_POOL),
]  # fmt: skip


@pytest.mark.parametrize(("stack", "mutate", "path", "message"), ONE_MISTAKE)
def test_one_mistake_gives_one_issue_at_its_path(
    stack: str, mutate: Mutation, path: str, message: tuple[str, ...]
) -> None:
    values = stack_values(stack)
    mutate(values)
    issue = only_issue(values)
    assert issue.path == path
    for fragment in message:
        assert _has(issue.message, fragment), (fragment, issue.message)


# ---------------------------------------------------------------------------
# Other shapes: valid configs, what the checks must not do, input that is no mapping.


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


def test_redis_none_allowed_in_dev() -> None:
    values = stack_values("dev")
    values["redis"] = "none"
    assert parse_stack_config(values).redis == "none"


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


def test_pulumi_config_reads_past_known_secrets(pulumi_config: Callable[..., None]) -> None:
    config = {**engine_config("dev"), f"{PROJECT}:grafanaAdminPassword": "a-long-password"}
    pulumi_config("dev", config, [f"{PROJECT}:grafanaAdminPassword"])
    assert load_pulumi_config() == load_stack_file("dev")


def test_pulumi_config_names_an_unknown_secret_key(pulumi_config: Callable[..., None]) -> None:
    """A typo'd secret would be silently unused: it is an error with the near miss."""
    config = {**engine_config("dev"), f"{PROJECT}:apiKeys": "ciphertext-stand-in"}
    pulumi_config("dev", config, [f"{PROJECT}:apiKeys"])
    with pytest.raises(ConfigError) as info:
        load_pulumi_config()
    (issue,) = info.value.issues
    assert issue.path == "apiKeys"
    assert "unknown secret key; did you mean 'apiKeyHashes'?" in issue.message
    assert "ciphertext-stand-in" not in str(info.value)


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
