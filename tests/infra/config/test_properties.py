"""Property: any config either parses into a StackConfig or raises ConfigError."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from infra.config import (
    PROJECT,
    ConfigError,
    StackConfig,
    parse_stack_config,
    stack_issues,
)
from tests.infra.helpers import stack_values

# Nothing else may escape `parse_stack_config` (a TypeError or KeyError inside the
# cross-key checks would surface as a traceback in `pulumi up` instead of a list of
# key paths). The inputs mix near-valid configs (a real stack with a few values replaced,
# deleted or added at random key paths) with fully random JSON-like trees.
# Import paths come from a small safe set, so no arbitrary module is ever imported.

BASES = (stack_values("dev"), stack_values("prod"))

SAFE_IMPORT_PATHS = (
    "serve_apps.text_embedding.app:build_app",
    "serve_apps.tabular_classifier.app:build_app",
    "serve_apps.nope:x",
    "serve_apps.nope.deeper:x",
    "serve_apps.text_embedding.app:nope",
    "serve_apps.text_embedding.app.inner:build_app",
    "serve_apps.text_embedding:build_app",
    "serve_apps:x",
    "os:getcwd",
    "",
)

# Every key the models know (camelCase), so additions often hit a real field.
KNOWN_KEYS = (
    *BASES[0],
    *(k for base in BASES for pool in base["nodePools"] for k in pool),
    "gpuType",
    "gpuCount",
    "diskSizeGb",
    "image",
    "head",
    "workerGroups",
    "apps",
    "upgradeStrategy",
    "type",
    "stepSizePercent",
    "intervalSeconds",
    "maxSurgePercent",
    "nodePool",
    "minReplicas",
    "maxReplicas",
    "initialReplicas",
    "cpu",
    "memory",
    "idleTimeoutSeconds",
    "name",
    "routePrefix",
    "importPath",
    "args",
    "deployments",
    "numReplicas",
    "autoscaling",
    "targetOngoingRequests",
    "upscaleDelayS",
    "downscaleDelayS",
    "maxOngoingRequests",
    "maxQueuedRequests",
    "rayActorOptions",
    "numCpus",
    "numGpus",
    "userConfig",
    "max_batch_size",
    "gracefulShutdownTimeoutS",
    "healthCheckPeriodS",
    "healthCheckTimeoutS",
)

# Values that the rules care about, so near-valid configs reach the cross-key checks.
DOMAIN_VALUES = (
    "system",
    "cpu",
    "l4",
    "h100",
    "serving",
    "embeddings",
    "classifier",
    "/",
    "/embed",
    "/embed/",
    "/classify",
    "nvidia-l4",
    "nvidia-tesla-t4",
    "nvidia-tesla-a100",
    "nvidia-h100-80gb",
    "nvidia-h100-mega-80gb",
    "e2-standard-8",
    "n1-standard-8",
    "n1-standard-96",
    "g2-standard-8",
    "g2-standard-24",
    "a2-highgpu-1g",
    "a3-highgpu-8g",
    "a3-megagpu-8g",
    "none",
    "memorystore",
    "in-cluster",
    "existing",
    "NewCluster",
    "NewClusterWithIncrementalUpgrade",
    "8Gi",
    "500m",
    "0",
    "true",
    "us-central1-b",
    "a" * 300,
)

odd_text = st.text(
    alphabet=st.one_of(
        st.characters(),  # any code point, surrogates included
        st.sampled_from("\x00\n\t /.:-_\u00e9\u0130\u212a\ufeff\U0001f600"),
    ),
    max_size=20,
).filter(lambda s: not s.startswith("serve_apps."))

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-3, max_value=10),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
    st.sampled_from(DOMAIN_VALUES),
)

keys = st.one_of(st.sampled_from(KNOWN_KEYS), odd_text)


def _json_trees(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=12,
    )


trees = _json_trees(leaves)


def _containers(node: Any) -> list[dict[str, Any] | list[Any]]:
    """Every dict and list in a tree, the root first."""
    found: list[dict[str, Any] | list[Any]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            found.append(current)
            stack.extend(current.values())
        elif isinstance(current, list):
            found.append(current)
            stack.extend(current)
    return found


def _sanitize(node: Any, key: Any = None) -> Any:
    """Keep `importPath` values (anywhere in the tree) to the safe set."""
    if isinstance(node, dict):
        return {k: _sanitize(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_sanitize(v) for v in node]
    if key == "importPath" and node not in SAFE_IMPORT_PATHS:
        return SAFE_IMPORT_PATHS[hash(repr(node)) % len(SAFE_IMPORT_PATHS)]
    return node


# Mostly values of the right kind, so that many near-valid configs pass the shape checks
# and reach the cross-key checks; sometimes anything at all.
replacements = st.one_of(
    st.sampled_from(DOMAIN_VALUES),
    st.integers(min_value=-1, max_value=10),
    st.booleans(),
    st.sampled_from(SAFE_IMPORT_PATHS),
    leaves,
    trees,
)


def _like(value: Any) -> st.SearchStrategy[Any]:
    """Another value of the same kind, which usually passes the shape checks."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-1, max_value=20)
    if isinstance(value, float):
        return st.floats(min_value=0, max_value=100)
    if isinstance(value, str):
        return st.sampled_from(DOMAIN_VALUES + SAFE_IMPORT_PATHS)
    if isinstance(value, dict | list):
        return st.just(copy.deepcopy(value))  # containers change through their contents
    return replacements


def _mutate(draw: st.DrawFn, container: dict[Any, Any] | list[Any], action: str) -> None:
    """Replace, tweak, delete, add or duplicate one entry of a dict or list."""
    if action == "add" or not container:
        if isinstance(container, dict):
            container[draw(keys)] = draw(replacements)
        else:
            container.insert(draw(st.integers(0, len(container))), draw(replacements))
        return
    slots = sorted(container, key=repr) if isinstance(container, dict) else range(len(container))
    slot = draw(st.sampled_from(list(slots)))
    if action == "delete":
        del container[slot]
    elif action == "tweak":
        container[slot] = draw(_like(container[slot]))
    elif action == "duplicate":  # a list entry twice, or one key's value under another key
        copied = copy.deepcopy(container[slot])
        if isinstance(container, dict):
            container[draw(st.sampled_from(list(slots)))] = copied
        else:
            container.append(copied)
    else:
        container[slot] = draw(replacements)


@st.composite
def near_valid_configs(draw: st.DrawFn) -> dict[str, Any]:
    values = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        container = draw(st.sampled_from(_containers(values)))
        action = draw(st.sampled_from(("tweak", "tweak", "replace", "delete", "add", "duplicate")))
        _mutate(draw, container, action)
    return _sanitize(values)


configs = st.one_of(
    near_valid_configs(),
    near_valid_configs(),
    trees.map(_sanitize),
    st.dictionaries(keys, trees, max_size=6).map(_sanitize),
)


def _with_long_image_name() -> dict[str, Any]:
    values = copy.deepcopy(BASES[0])
    values["services"][0]["image"] = "a" * 300  # OSError (name too long) in is_file()
    return values


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(values=configs)
@example(values=_with_long_image_name())
@example(values=copy.deepcopy(BASES[1]))
def test_parse_returns_config_or_raises_config_error(values: Any) -> None:
    try:
        cfg = parse_stack_config(values)
    except ConfigError as error:
        assert error.issues
        for issue in error.issues:
            assert isinstance(issue.path, str)
            assert isinstance(issue.message, str)
            assert issue.message
            if issue.path:
                assert f"{PROJECT}:{issue.path}: " in str(error)
        return
    assert isinstance(cfg, StackConfig)
    assert stack_issues(cfg) == []
    # What parsed once parses again from its own (camelCase) dump to the same config.
    assert parse_stack_config(cfg.model_dump(by_alias=True)) == cfg
