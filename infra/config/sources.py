"""Where a StackConfig comes from: `pulumi.Config` in a deployment, the stack file locally.

Both paths feed the same `parse_stack_config`. The local path reads what the Pulumi
CLI would: defaults declared in `Pulumi.yaml`, overlaid with `Pulumi.<stack>.yaml`.
`secure:` values are ciphertext without the Pulumi service, so the local path never
needs one (the StackConfig holds no secrets; components read secrets as Outputs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from infra.config import (
    JSON_KEYS,
    PROJECT,
    PROJECT_ROOT,
    ConfigError,
    ConfigIssue,
    StackConfig,
    parse_stack_config,
)

PREFIX = f"{PROJECT}:"


def declared_config(project_dir: Path = PROJECT_ROOT) -> dict[str, dict[str, Any]]:
    """The `config:` declarations of Pulumi.yaml, keyed without the project prefix."""
    project = yaml.safe_load((project_dir / "Pulumi.yaml").read_text(encoding="utf-8"))
    declared = project.get("config") or {}
    return {key.removeprefix(PREFIX): value for key, value in declared.items()}


def _declared_defaults(project_dir: Path) -> dict[str, Any]:
    return {
        key: decl["default"]
        for key, decl in declared_config(project_dir).items()
        if isinstance(decl, dict) and "default" in decl
    }


def stack_file_values(stack: str, project_dir: Path = PROJECT_ROOT) -> dict[str, Any]:
    """This project's keys from Pulumi.<stack>.yaml, prefix removed, secure values kept."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        stacks = sorted(
            p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml")
        )
        raise ConfigError(
            [ConfigIssue("", f"no stack file {path.name}; allowed stacks: {', '.join(stacks)}")],
            f"stack '{stack}'",
        )
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values = document.get("config") or {}
    return {k.removeprefix(PREFIX): v for k, v in values.items() if k.startswith(PREFIX)}


def load_stack_file(stack: str, project_dir: Path = PROJECT_ROOT) -> StackConfig:
    """The stack's config as `pulumi up` would see it, read without the Pulumi CLI."""
    values = {**_declared_defaults(project_dir), **stack_file_values(stack, project_dir)}
    secure = {k for k, v in values.items() if isinstance(v, dict) and set(v) == {"secure"}}
    _reject_secret_fields(secure, f"Pulumi.{stack}.yaml")
    values = {k: v for k, v in values.items() if k not in secure}
    return parse_stack_config(values, project_root=project_dir, source=f"Pulumi.{stack}.yaml")


def _reject_secret_fields(secret_keys: set[str], source: str) -> None:
    """StackConfig holds no secrets: a secret value for one of its keys is a mistake."""
    fields = {f.alias for f in StackConfig.model_fields.values()}
    issues = [
        ConfigIssue(
            key, "is set as a secret, but it is plain stack config: set it without --secret"
        )
        for key in sorted(secret_keys & fields)
    ]
    if issues:
        raise ConfigError(issues, source)


def load_pulumi_config() -> StackConfig:
    """The stack's config inside a Pulumi program run (real engine or mocks).

    The engine hands every value over as a string (objects and arrays JSON-encoded)
    with Pulumi.yaml defaults already applied. Secret keys are skipped here: they are
    not StackConfig fields, and components read them with `require_secret`.
    """
    from pulumi.runtime import config as runtime_config  # noqa: PLC0415 - Pulumi runs only

    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    env_secrets = set(runtime_config.get_config_secret_keys_env())
    ours = {k.removeprefix(PREFIX): v for k, v in everything.items() if k.startswith(PREFIX)}
    secret = {
        key
        for key in ours
        if runtime_config.is_config_secret(PREFIX + key) or PREFIX + key in env_secrets
    }
    _reject_secret_fields(secret, "Pulumi config")
    values: dict[str, Any] = {}
    for key, raw in ours.items():
        if key in secret:
            continue
        if key in JSON_KEYS and isinstance(raw, str):
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                issue = ConfigIssue(key, f"is not a list of objects: {exc}")
                raise ConfigError([issue], "Pulumi config") from None
        else:
            values[key] = raw  # scalars stay strings: pydantic reads "true" and "60"
    return parse_stack_config(values, source="Pulumi config")
