"""A hostile-config corpus: every bad config, through the path a user's would take.

Each case changes one thing in a real stack: the stack file's text (read by `make run`
and, strictly, by the program), a config value (as the engine passes it) or a secret
(as ESC supplies it). The real `__main__.py` then runs under mocks. A case passes only
as a *clean error*: a `ConfigError` raised before any resource is declared, naming the
expected key path with a message that says what is allowed, and never echoing a secret.
Anything else is counted against us: a traceback, a vague error, or a config accepted.
`test_corpus_figures` prints the figures the issue asks for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra.config import PROJECT_ROOT, ConfigError
from infra.config.sources import load_stack_file
from infra.program.runner import ProgramRun, run_program
from tests.infra.config.mutations import Mutation, setting, setting_keys, updating
from tests.infra.helpers import project_copy, stack_values

TextEdit = Callable[[str], str]
PROJECT_MAIN = PROJECT_ROOT / "__main__.py"
SECRET_SENTINEL = "s3cr3t-sentinel"


@dataclass(frozen=True)
class Hostile:
    id: str
    category: str
    stack: str
    path: str
    """The key path the error must name ('' for a problem of the file itself)."""
    fragments: tuple[str, ...]
    text: TextEdit | None = None
    values: Mutation | None = None
    secrets: dict[str, Any] = field(default_factory=dict)


def after_config(*lines: str) -> TextEdit:
    """Adds lines at the top of the stack file's `config:` mapping."""
    return lambda text: text.replace(
        "config:\n", "config:\n" + "".join(f"{ln}\n" for ln in lines), 1
    )


def replacing(old: str, new: str) -> TextEdit:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def whole_file(content: str) -> TextEdit:
    return lambda _: content


def laughs(levels: int = 9) -> TextEdit:
    lines = ['  rayserve-gke:lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        refs = ", ".join([f"*l{n - 1}"] * 9)
        lines.append(f"  rayserve-gke:lol{n}: &l{n} [{refs}]")
    return after_config(*lines)


def y(case_id: str, stack: str, edit: TextEdit, *fragments: str) -> Hostile:
    return Hostile(case_id, "stack file", stack, "", fragments, text=edit)


def ns(case_id: str, edit: TextEdit | None, path: str, *fragments: str, **kw: Any) -> Hostile:
    return Hostile(case_id, "keys", "dev", path, fragments, text=edit, **kw)


def sec(case_id: str, stack: str, secrets: dict[str, Any], path: str, *fragments: str) -> Hostile:
    return Hostile(case_id, "secrets", stack, path, fragments, secrets=secrets)


def val(
    category: str, case_id: str, stack: str, mutate: Mutation, path: str, *fragments: str
) -> Hostile:
    return Hostile(case_id, category, stack, path, fragments, values=mutate)


HASH = "0" * 64
EMBED = "services[0].apps[0]"
CLASSIFY = "services[0].apps[1]"
DEV_CPU_GROUP = "services[0].workerGroups[0]"
RESERVED = "is reserved"
MEMBER = "is not an IAM member; allowed: user:<email>"

CORPUS: list[Hostile] = [
    # --- The stack file: what YAML allows but config must not mean.
    y("duplicate-top-level-key", "dev", after_config("  rayserve-gke:logLevel: INFO"),
      "duplicate key 'rayserve-gke:logLevel'", "line 14", "first at line 6"),
    y("duplicate-production-flag", "prod", after_config("  rayserve-gke:production: false"),
      "duplicate key 'rayserve-gke:production'", "keep only the last one"),
    y("duplicate-nested-key", "dev",
      replacing("      machineType: e2-standard-4\n",
                "      machineType: e2-standard-4\n      machineType: e2-standard-16\n"),
      "duplicate key 'machineType'"),
    y("anchor", "dev", replacing("          args:\n            max_texts",
                                 "          args: &embed_args\n            max_texts"),
      "anchor '&embed_args'", "not allowed in config"),
    y("alias-copies-a-subtree", "dev",
      after_config("  rayserve-gke:iapMembers2: *members"), "alias '*members'"),
    y("billion-laughs", "dev", laughs(), "anchor '&l0'", "not allowed"),
    y("python-object-tag", "dev",
      replacing("rayserve-gke:logLevel: DEBUG",
                'rayserve-gke:logLevel: !!python/object/apply:os.system ["true"]'),
      "tag 'tag:yaml.org,2002:python/object/apply:os.system'", "tags are not allowed"),
    y("str-tag", "dev",
      replacing("rayserve-gke:zone: us-central1-a", "rayserve-gke:zone: !!str us-central1-a"),
      "tags are not allowed"),
    y("custom-tag", "dev", replacing("rayserve-gke:zone: us-central1-a",
                                     "rayserve-gke:zone: !Ref zone"), "tag '!Ref'"),
    y("tab-indentation", "dev", replacing("      machineType: e2-standard-4",
                                          "\t  machineType: e2-standard-4"),
      "line 18", "indented with a tab"),
    y("unclosed-flow-list", "dev",
      after_config("  rayserve-gke:masterAuthorizedNetworks: [1.2.3.4/32"), "not valid YAML"),
    y("two-documents", "dev", lambda text: text + "---\nconfig: {}\n", "not valid YAML"),
    y("config-is-a-list", "dev", whole_file("config:\n  - rayserve-gke:region: us-east1\n"),
      "`config:` must be a mapping of keys"),
    y("huge-file", "dev", lambda text: text + "#" + "x" * (1 << 21) + "\n", "larger than 1024 KiB"),
    y("non-scalar-key", "dev", after_config("  ? [a, b]", "  : 1"), "a key must be a plain value"),
    # --- Keys that would be silently ignored.
    ns("near-miss-prefix", after_config("  rayserve-gk:cloudArmor: true"), "",
       "unknown config namespace 'rayserve-gk'", "did you mean 'rayserve-gke:cloudArmor'?"),
    ns("capitalised-prefix", after_config("  Rayserve-gke:production: true"), "",
       "did you mean 'rayserve-gke:production'?"),
    ns("unknown-namespace", after_config("  acme:owner: ml-platform"), "",
       "unknown config namespace 'acme'", "allowed namespaces: rayserve-gke, gcp, kubernetes"),
    ns("near-miss-prefix-from-the-engine", None, "",
       "did you mean 'rayserve-gke:cloudArmor'?", values=setting("rayserve-gk:cloudArmor", True)),
    ns("top-level-typo", None, "cloudArmour", "did you mean 'cloudArmor'?",
       values=setting("cloudArmour", True)),
    ns("top-level-wrong-case", None, "CloudArmor", "did you mean 'cloudArmor'?",
       values=setting("CloudArmor", True)),
    ns("nested-typo", None, f"{EMBED}.routPrefix", "did you mean 'routePrefix'?",
       values=setting(f"{EMBED}.routPrefix", "/e")),
    # --- Secrets: shapes, requirements, and never as plain config.
    sec("api-key-hashes-not-json", "dev", {"apiKeyHashes": f"not-json-{SECRET_SENTINEL}"},
        "apiKeyHashes", "(secret, value not shown)", "is not JSON", "new-key NAME"),
    sec("api-key-hashes-empty", "dev", {"apiKeyHashes": {}}, "apiKeyHashes",
        "must be a non-empty JSON object"),
    sec("api-key-hashes-raw-key", "dev", {"apiKeyHashes": {"team": f"rsk_{SECRET_SENTINEL}"}},
        "apiKeyHashes", "a raw API key, not its hash"),
    sec("api-key-hashes-short-hash", "dev", {"apiKeyHashes": {"team": "abc123"}},
        "apiKeyHashes", "must be a SHA-256 hex digest"),
    sec("api-key-hashes-bad-name", "dev", {"apiKeyHashes": {"bad name!": HASH}},
        "apiKeyHashes", "key name 'bad name!' must match"),
    sec("api-key-hashes-list", "dev", {"apiKeyHashes": [HASH]}, "apiKeyHashes",
        "must be a non-empty JSON object"),
    sec("api-key-hashes-missing", "dev", {"apiKeyHashes": None}, "apiKeyHashes",
        "required secret is not set", "every request is refused", "--secret apiKeyHashes"),
    sec("iap-client-id-empty", "dev", {"iapOAuthClientId": ""}, "iapOAuthClientId",
        "required secret is not set"),
    sec("iap-client-id-malformed", "prod", {"iapOAuthClientId": SECRET_SENTINEL},
        "iapOAuthClientId", "apps.googleusercontent.com"),
    sec("iap-client-secret-missing", "prod", {"iapOAuthClientSecret": None},
        "iapOAuthClientSecret", "required secret is not set"),
    sec("iap-client-secret-with-spaces", "dev", {"iapOAuthClientSecret": f"a {SECRET_SENTINEL}"},
        "iapOAuthClientSecret", "without spaces"),
    sec("unknown-secret-key", "dev", {"apiKeyHash": {"team": HASH}}, "apiKeyHash",
        "unknown secret key; did you mean 'apiKeyHashes'?"),
    sec("redis-password-with-memorystore", "prod", {"redisPassword": f"long-{SECRET_SENTINEL}"},
        "redisPassword", "only used with redis in-cluster"),
    sec("redis-password-short", "dev", {"redisPassword": "short"}, "redisPassword",
        "at least 16 characters"),
    sec("redis-password-quote", "dev", {"redisPassword": f'quo"te-{SECRET_SENTINEL}'},
        "redisPassword", "without spaces, quotes or backslashes"),
    sec("grafana-password-short", "dev", {"grafanaAdminPassword": "admin"},
        "grafanaAdminPassword", "at least 12 characters"),
    sec("alert-slack-token-not-a-bot-token", "dev", {"alertSlackToken": "xoxp-123"},
        "alertSlackToken", "is not a Slack bot token"),
    sec("production-without-pager", "prod", {"alertPagerDutyKey": None}, "alertPagerDutyKey",
        "a production stack must page on its critical alerts"),
    sec("pagerduty-key-malformed", "prod", {"alertPagerDutyKey": f"key {SECRET_SENTINEL}"},
        "alertPagerDutyKey", "(secret, value not shown)"),
    sec("plain-key-set-as-secret", "dev", {"gcpProject": "acme-ml-platform-dev"}, "gcpProject",
        "set it without --secret"),
    ns("plaintext-secret-in-stack-file",
       after_config(f"  rayserve-gke:redisPassword: plain-{SECRET_SENTINEL}"), "redisPassword",
       "is a secret but was set as plain config", "pulumi config set --secret redisPassword"),
    ns("plaintext-secret-from-the-engine", None, "apiKeyHashes",
       "is a secret but was set as plain config", values=setting("apiKeyHashes", {"t": HASH}),
       secrets={"apiKeyHashes": None}),
    # --- Values that are unsafe, reserved or collide.
    val("unsafe", "control-plane-open-to-the-internet", "prod",
        setting("masterAuthorizedNetworks", ["0.0.0.0/0"]), "masterAuthorizedNetworks[0]",
        "a large part of the internet", "controlPlaneAccess dns"),
    val("unsafe", "control-plane-open-to-a-slash-8", "dev",
        setting("masterAuthorizedNetworks", ["8.0.0.0/8"]), "masterAuthorizedNetworks[0]",
        "public ranges of /16 or narrower"),
    val("unsafe", "control-plane-network-twice", "dev",
        setting("masterAuthorizedNetworks", ["203.0.113.0/24", "203.0.113.0/24"]),
        "masterAuthorizedNetworks[1]", "duplicate network"),
    *(
        val("unsafe", f"namespace-{name}", "dev", setting("namespace", name), "namespace",
            RESERVED, "allowed: any other name")
        for name in ("kube-system", "monitoring", "kuberay-system", "default", "gpu-operator",
                     "kube-public", "gke-managed-system", "gmp-system")
    ),
    val("unsafe", "iap-member-twice-in-other-case", "dev",
        setting("iapMembers", ["group:ml@acme-ml.com", "group:ML@acme-ml.com"]), "iapMembers[1]",
        "duplicate IAP member"),
    val("unsafe", "iap-member-without-email", "dev", setting("iapMembers", ["user:alice"]),
        "iapMembers[0]", MEMBER),
    val("unsafe", "iap-all-users", "dev", setting("iapMembers", ["allUsers"]), "iapMembers[0]",
        MEMBER),
    val("unsafe", "iap-all-authenticated-users", "dev",
        setting("iapMembers", ["allAuthenticatedUsers"]), "iapMembers[0]", MEMBER),
    val("unsafe", "max-nodes-unbounded", "dev", setting("nodePools[1].maxNodes", 100000),
        "nodePools[1].maxNodes", "less than or equal to 1000"),
    val("unsafe", "redis-none-in-production", "prod", setting("redis", "none"), "redis",
        "allowed: memorystore, in-cluster"),
    val("unsafe", "ip-access-without-networks", "prod", setting("controlPlaneAccess", "ip"),
        "masterAuthorizedNetworks", "use controlPlaneAccess dns"),
    val("unsafe", "pod-range-overlaps-nodes", "dev", setting("podCidr", "10.10.0.0/16"), "podCidr",
        "overlaps nodeCidr"),
    val("unsafe", "approval-for-an-unknown-service", "prod",
        setting("approveClusterReplacement", "nope:0123456789ab"), "approveClusterReplacement",
        "allowed: embeddings, classifier"),
    val("unsafe", "zone-outside-region", "dev", setting("zone", "europe-west1-b"), "zone",
        "is not a zone of region us-central1"),
    val("unsafe", "maintenance-window-too-short", "prod",
        setting_keys(maintenanceDays="SU", maintenanceHours=4), "maintenanceHours",
        "gives GKE 16 h in 32 days", "allowed: more maintenanceDays"),
    val("unsafe", "maintenance-day-twice", "dev", setting("maintenanceDays", "SA,SA,SU"),
        "maintenanceDays", "duplicate day 'SA'"),
    val("unsafe", "node-upgrades-never-possible", "prod",
        updating("nodePools[1]", upgradeMaxSurge=0, upgradeMaxUnavailable=0),
        "nodePools[1].upgradeMaxSurge", "GKE could never upgrade the pool"),
    # --- Sizes: pods that never schedule, replicas Ray never places.
    val("sizing", "production-memorystore-without-replica", "prod", setting("redisTier", "BASIC"),
        "redisTier", "allowed: STANDARD_HA"),
    val("sizing", "redis-memory-tiny", "dev", setting("redisMemory", "64Mi"), "redisMemory",
        "allowed: at least 256Mi"),
    val("sizing", "redis-volume-below-its-aof", "dev", setting("redisVolumeSize", "1Gi"),
        "redisVolumeSize", "allowed: at least twice redisMemory"),
    val("sizing", "memorystore-zero-gb", "prod", setting("redisMemoryGb", 0), "redisMemoryGb",
        "greater than or equal to 1"),
    val("sizing", "worker-cpu-beyond-the-machine", "dev", setting(f"{DEV_CPU_GROUP}.cpu", "64"),
        f"{DEV_CPU_GROUP}.cpu", "e2-standard-8 node of pool 'cpu' leaves pods 7.",
        "allowed: cpu <= 7."),
    val("sizing", "worker-memory-beyond-the-machine", "dev",
        setting(f"{DEV_CPU_GROUP}.memory", "64Gi"), f"{DEV_CPU_GROUP}.memory",
        "allowed: memory <= 27."),
    val("sizing", "worker-memory-just-beyond-allocatable", "prod",
        setting("services[1].workerGroups[0].memory", "28Gi"),
        "services[1].workerGroups[0].memory", "n2-standard-8"),
    val("sizing", "head-cpu-beyond-the-system-pool", "dev", setting("services[0].head.cpu", "16"),
        "services[0].head.cpu", "e2-standard-4 node of pool 'system'"),
    val("sizing", "head-memory-too-small", "dev", setting("services[0].head.memory", "512Mi"),
        "services[0].head.memory", "allowed: at least 2.0Gi"),
    val("sizing", "worker-memory-too-small", "dev", setting(f"{DEV_CPU_GROUP}.memory", "256Mi"),
        f"{DEV_CPU_GROUP}.memory", "allowed: at least 1.0Gi"),
    val("sizing", "replica-cpus-beyond-any-worker", "dev",
        setting(f"{CLASSIFY}.deployments[0].rayActorOptions.numCpus", 8),
        f"{CLASSIFY}.deployments[0].rayActorOptions", "no worker group's pod has that much"),
    val("sizing", "replica-memory-beyond-any-worker", "dev",
        setting(f"{CLASSIFY}.deployments[0].rayActorOptions.memory", "20Gi"),
        f"{CLASSIFY}.deployments[0].rayActorOptions", "after Ray's object store"),
    val("sizing", "replicas-beyond-all-workers", "dev",
        setting(f"{CLASSIFY}.deployments[0].numReplicas", 100), "services[0].workerGroups",
        "ask 52 CPU", "give 30"),
    val("sizing", "gpu-replicas-beyond-all-gpu-workers", "dev",
        setting(f"{EMBED}.deployments[0].autoscaling.maxReplicas", 5), "services[0].workerGroups",
        "ask 5 GPU", "give 2"),
    val("sizing", "machine-type-that-only-looks-right", "dev",
        setting("nodePools[1].machineType", "e2-standard-7"), "nodePools[1].machineType",
        "allowed: e2-standard-2, e2-standard-4, e2-standard-8"),
    val("sizing", "machine-family-unknown", "dev",
        setting("nodePools[1].machineType", "n9-standard-8"), "nodePools[1].machineType",
        "allowed: families a2, a3, c2"),
    val("sizing", "gpu-count-beyond-the-node", "prod",
        setting("services[0].apps[0].deployments[0].rayActorOptions.numGpus", 4),
        "services[0].apps[0].deployments[0].rayActorOptions.numGpus", "allowed: numGpus <= 2"),
    # --- Apps: builders, their args, deployments and userConfig.
    *(
        val("apps", f"route-prefix-{prefix}", "dev", setting(f"{EMBED}.routePrefix", prefix),
            f"{EMBED}.routePrefix", "Serve answers its own health and routes")
        for prefix in ("/-/healthz", "/-", "/-/")
    ),
    *(
        val("apps", f"import-path-{case_id}", "dev", setting(f"{EMBED}.importPath", path),
            f"{EMBED}.importPath", fragment)
        for case_id, path, fragment in (
            ("an-imported-module", "serve_apps.text_embedding.app:np", "is not a function"),
            ("a-class", "serve_apps.text_embedding.app:Embedder", "is a class"),
            ("a-constant", "serve_apps.text_embedding.app:MODEL_NAME", "is not a function"),
            ("a-main-module", "serve_apps.auth.__main__:main", "in a __main__ module"),
            ("a-function-without-args", "serve_apps.text_embedding.app:example_request",
             "takes 0 parameter(s)"),
            ("a-package-without-app-config", "serve_apps.auth.keys:hash_key",
             "the app declares no serve_apps.auth.config"),
        )
    ),
    val("apps", "args-wrong-type", "dev", setting(f"{EMBED}.args.max_texts_per_request", "many"),
        f"{EMBED}.args.max_texts_per_request", "valid integer"),
    val("apps", "args-out-of-range", "dev", setting(f"{EMBED}.args.max_texts_per_request", 0),
        f"{EMBED}.args.max_texts_per_request", "greater than or equal to 1"),
    val("apps", "args-unknown-key", "dev", setting(f"{EMBED}.args.max_text", 10),
        f"{EMBED}.args.max_text", "unknown key; allowed keys: max_texts_per_request"),
    val("apps", "args-unknown-device", "dev", setting(f"{EMBED}.args.device", "tpu"),
        f"{EMBED}.args.device", "'auto', 'cpu' or 'cuda'"),
    val("apps", "args-that-contradict", "dev",
        updating(f"{EMBED}.args", runtime="onnx", device="cuda"), f"{EMBED}.args",
        "runtime 'onnx' runs on CPU only"),
    val("apps", "args-of-the-other-app", "dev",
        setting(f"{EMBED}.importPath", "serve_apps.tabular_classifier.app:build_app"),
        f"{EMBED}.args.max_texts_per_request", "unknown key; allowed keys: model_path"),
    val("apps", "user-config-wrong-type", "dev",
        setting(f"{CLASSIFY}.deployments[0].userConfig.max_batch_size", "big"),
        f"{CLASSIFY}.deployments[0].userConfig.max_batch_size", "valid integer"),
    val("apps", "user-config-unknown-key", "dev",
        setting(f"{CLASSIFY}.deployments[0].userConfig.batch_size", 8),
        f"{CLASSIFY}.deployments[0].userConfig.batch_size", "unknown key"),
    val("apps", "user-config-threshold-out-of-range", "dev",
        setting(f"{CLASSIFY}.deployments[0].userConfig.decision_threshold", 1.5),
        f"{CLASSIFY}.deployments[0].userConfig.decision_threshold", "less than 1"),
    val("apps", "user-config-batch-size-zero", "dev",
        setting(f"{CLASSIFY}.deployments[0].userConfig.max_batch_size", 0),
        f"{CLASSIFY}.deployments[0].userConfig.max_batch_size", "greater than or equal to 1"),
    val("apps", "deployment-the-app-does-not-have", "dev",
        setting(f"{EMBED}.deployments[0].name", "Embeder"), f"{EMBED}.deployments[0].name",
        "'Embeder' is not a deployment of this app; allowed: Embedder"),
    val("apps", "pinned-to-a-gpu-the-service-lacks", "dev",
        setting(f"{EMBED}.deployments[0].rayActorOptions.accelerator", "nvidia-h100-80gb"),
        f"{EMBED}.deployments[0].rayActorOptions.accelerator",
        "no worker group of this service advertises 'accelerator:nvidia-h100-80gb'",
        "allowed: accelerator:nvidia-l4, pool:cpu, pool:l4"),
    val("apps", "pinned-to-an-unknown-resource", "dev",
        setting(f"{CLASSIFY}.deployments[0].rayActorOptions.resources", {"fast-disk": 1}),
        f"{CLASSIFY}.deployments[0].rayActorOptions.resources.fast-disk", "advertises 'fast-disk'"),
    val("apps", "pinned-beyond-what-a-pod-offers", "dev",
        setting(f"{CLASSIFY}.deployments[0].rayActorOptions.resources", {"pool:cpu": 5000}),
        f"{CLASSIFY}.deployments[0].rayActorOptions.resources.pool:cpu",
        "allowed: 0 < amount <= 1000"),
    val("apps", "env-shadows-ray", "dev", setting("services[0].env", {"RAY_ADDRESS": "x"}),
        "services[0].env.RAY_ADDRESS", "is set by Ray, KubeRay or this platform"),
    val("apps", "env-lowercase-name", "dev", setting("services[0].env", {"hf_token": "x"}),
        "services[0].env.hf_token", "is not an environment variable name"),
    val("apps", "secret-env-shadows-pythonpath", "dev",
        setting("services[0].secretEnv", ["PYTHONPATH"]), "services[0].secretEnv[0]",
        "is set by Ray, KubeRay or this platform"),
    val("apps", "secret-env-also-plain", "dev",
        updating("services[0]", env={"HF_TOKEN": "x"}, secretEnv=["HF_TOKEN"]),
        "services[0].secretEnv[0]", "is also in env"),
    Hostile("app-secrets-required", "secrets", "dev", "appSecrets",
            ("required secret is not set", "secretEnv"),
            values=setting("services[0].secretEnv", ["HF_TOKEN"])),
    Hostile("app-secrets-missing-a-variable", "secrets", "dev", "appSecrets",
            ("services.serving: must hold exactly its secretEnv variables", "missing: HF_TOKEN"),
            values=setting("services[0].secretEnv", ["HF_TOKEN"]),
            secrets={"appSecrets": {"serving": {"HF_TOKN": SECRET_SENTINEL}}}),
    # --- Types and ranges of single keys.
    val("types", "upgrade-strategy-rolling", "dev",
        updating("services[0]", upgradeStrategy={"type": "Rolling"}),
        "services[0].upgradeStrategy.type", "'NewCluster'"),
    *(
        val("types", case_id, "dev", setting(path, value), path, fragment)
        for case_id, path, value, fragment in (
            ("production-maybe", "production", "maybe", "valid boolean"),
            ("max-nodes-words", "nodePools[1].maxNodes", "three", "valid integer"),
            ("max-nodes-fraction", "nodePools[1].maxNodes", 2.5, "valid integer"),
            ("worker-min-replicas-negative", f"{DEV_CPU_GROUP}.minReplicas", -1,
             "greater than or equal to 0"),
            ("num-cpus-negative", f"{CLASSIFY}.deployments[0].rayActorOptions.numCpus", -1,
             "greater than or equal to 0"),
            ("memory-words", "services[0].head.memory", "lots", "positive Kubernetes quantity"),
            ("log-level-trace", "logLevel", "TRACE", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
            ("retention-in-words", "prometheusRetention", "15 days", "should match pattern"),
            ("services-not-a-list", "services", "serving", "is not a list of objects"),
            ("node-pools-empty", "nodePools", [], "at least 1 item"),
            ("worker-groups-empty", "services[0].workerGroups", [], "at least 1 item"),
            ("gateway-class-unknown", "gatewayClass", "gke-l7-gxlb", "gke-l7-rilb"),
            ("redis-valkey", "redis", "valkey", "'in-cluster', 'memorystore' or 'none'"),
            ("serve-ingress-nginx", "serveIngress", "nginx", "'haproxy' or 'proxy'"),
            ("request-timeout-huge", "requestTimeoutS", 99999, "less than or equal to 3600"),
            ("domain-not-dns", "domain", "localhost", "is not a DNS name"),
            ("rate-limit-zero", "rateLimitPerMinute", 0, "greater than or equal to 1"),
            ("maintenance-day-in-words", "maintenanceDays", "Saturday", "should match pattern"),
            ("maintenance-start-25h", "maintenanceStartUtc", "25:00", "should match pattern"),
        )
    ),
]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    kind: str  # clean | vague | late | echoed | traceback | accepted
    detail: str = ""


def _judge(case: Hostile, error: BaseException | None, declared: int) -> Outcome:
    if error is None:
        return Outcome("accepted", "no error")
    if not isinstance(error, ConfigError):
        return Outcome("traceback", f"{type(error).__name__}: {error}")
    text = str(error)
    if SECRET_SENTINEL in text:
        return Outcome("echoed", text)
    if declared:
        return Outcome("late", f"{declared} resources declared first")
    for issue in error.issues:
        if issue.path == case.path and all(f in str(issue) for f in case.fragments):
            return Outcome("clean")
    return Outcome("vague", text)


def _program(case: Hostile, main: Path | None, overrides: dict[str, Any] | None) -> Outcome:
    run = ProgramRun()
    try:
        run_program(case.stack, overrides, run=run, secrets=case.secrets, main=main or PROJECT_MAIN)
    except Exception as exc:
        return _judge(case, exc, len(run.resources))
    return _judge(case, None, len(run.resources))


def attempt(case: Hostile, tmp_path: Path) -> Outcome:
    """The worst outcome over the paths the case can take."""
    outcomes = []
    if case.text is not None:
        root = project_copy(tmp_path)
        stack_file = root / f"Pulumi.{case.stack}.yaml"
        stack_file.write_text(case.text(stack_file.read_text(encoding="utf-8")), encoding="utf-8")
        try:
            load_stack_file(case.stack, root)
        except Exception as exc:
            outcomes.append(_judge(case, exc, 0))
        else:
            outcomes.append(_judge(case, None, 0))
        outcomes.append(_program(case, root / "__main__.py", None))
    else:
        overrides = None
        if case.values is not None:
            values = stack_values(case.stack)
            case.values(values)
            overrides = values
        outcomes.append(_program(case, None, overrides))
    bad = [o for o in outcomes if o.kind != "clean"]
    return bad[0] if bad else outcomes[0]


_OUTCOMES: dict[str, Outcome] = {}


def outcome(case: Hostile, tmp_path: Path) -> Outcome:
    if case.id not in _OUTCOMES:
        _OUTCOMES[case.id] = attempt(case, tmp_path)
    return _OUTCOMES[case.id]


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_hostile_config_is_a_clean_error(case: Hostile, tmp_path: Path) -> None:
    result = outcome(case, tmp_path)
    assert result.kind == "clean", f"{result.kind}: {result.detail}"


def test_corpus_figures(tmp_path_factory: pytest.TempPathFactory) -> None:
    """tried / clean errors naming the key / tracebacks / accepted with something wrong."""
    results = {c.id: outcome(c, tmp_path_factory.mktemp("case")) for c in CORPUS}
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result.kind] = counts.get(result.kind, 0) + 1
    by_category: dict[str, int] = {}
    for case in CORPUS:
        by_category[case.category] = by_category.get(case.category, 0) + 1
    print(json.dumps({"tried": len(CORPUS), **counts, "by category": by_category}, indent=1))
    assert len({c.id for c in CORPUS}) == len(CORPUS) >= 80
    assert set(by_category) == {
        "stack file",
        "keys",
        "secrets",
        "unsafe",
        "sizing",
        "apps",
        "types",
    }
    assert counts.get("traceback", 0) == 0
    assert counts.get("accepted", 0) == 0
    assert counts == {"clean": len(CORPUS)}
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"A corpus of {len(CORPUS)} hostile configs" in readme
