"""Where a StackConfig comes from: `pulumi.Config` in a deployment, the stack file locally.

Both paths feed the same `parse_stack_config`. The local path reads what the Pulumi
CLI would: defaults declared in `Pulumi.yaml`, overlaid with `Pulumi.<stack>.yaml`.
`secure:` values are ciphertext without the Pulumi service, so the local path never
needs one (the StackConfig holds no secrets; components read secrets as Outputs).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from infra.config import (
    JSON_KEYS,
    PROJECT,
    PROJECT_ROOT,
    ConfigError,
    ConfigIssue,
    StackConfig,
    parse_stack_config,
)
from infra.config.secrets import SECRET_KEY_NAMES, plaintext_secret_issues, secret_issues
from infra.config.strict_yaml import StrictYamlError, load_file

PREFIX = f"{PROJECT}:"
OBJECT_SECRETS = ("apiKeyHashes", "appSecrets")
# Config namespaces a stack may set besides ours: the providers this program uses, and
# Pulumi's own. Anything else is a typo whose keys would be silently ignored.
PROVIDER_NAMESPACES = ("gcp", "kubernetes", "random", "docker", "pulumi")


def _read_yaml(path: Path) -> Any:
    try:
        return load_file(path)
    except StrictYamlError as exc:
        raise ConfigError([ConfigIssue("", str(exc))], path.name) from None


def declared_config(project_dir: Path = PROJECT_ROOT) -> dict[str, dict[str, Any]]:
    """The `config:` declarations of Pulumi.yaml, keyed without the project prefix."""
    project = _read_yaml(project_dir / "Pulumi.yaml")
    declared = project.get("config") or {}
    return {key.removeprefix(PREFIX): value for key, value in declared.items()}


def _declared_defaults(project_dir: Path) -> dict[str, Any]:
    return {
        key: decl["default"]
        for key, decl in declared_config(project_dir).items()
        if isinstance(decl, dict) and "default" in decl
    }


def namespace_issues(keys: Iterable[str]) -> list[ConfigIssue]:
    """Keys under a namespace that is neither ours nor a provider's (`rayserve-gk:x`)."""
    issues = []
    for key in keys:
        namespace, sep, name = key.partition(":")
        if not sep or namespace == PROJECT or namespace in PROVIDER_NAMESPACES:
            continue
        near = difflib.get_close_matches(namespace, [PROJECT], n=1, cutoff=0.6)
        hint = f"did you mean '{PROJECT}:{name}'? " if near else ""
        issues.append(
            ConfigIssue(
                "",
                f"'{key}': unknown config namespace '{namespace}', so the key would be "
                f"ignored; {hint}allowed namespaces: {PROJECT}, {', '.join(PROVIDER_NAMESPACES)}",
            )
        )
    return issues


def _ours(values: Mapping[str, Any]) -> dict[str, Any]:
    """This project's keys without the prefix (Pulumi puts unqualified keys there too)."""
    return {
        key.removeprefix(PREFIX): value
        for key, value in values.items()
        if key.startswith(PREFIX) or ":" not in key
    }


def stack_file_values(stack: str, project_dir: Path = PROJECT_ROOT) -> dict[str, Any]:
    """This project's keys from Pulumi.<stack>.yaml, prefix removed, secure values kept.

    Read strictly (no duplicate keys, aliases or tags); keys under an unknown namespace
    are errors, not silently dropped."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        stacks = sorted(
            p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml")
        )
        raise ConfigError(
            [ConfigIssue("", f"no stack file {path.name}; allowed stacks: {', '.join(stacks)}")],
            f"stack '{stack}'",
        )
    document = _read_yaml(path) or {}
    values = document.get("config") if isinstance(document, dict) else None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError([ConfigIssue("", "`config:` must be a mapping of keys")], path.name)
    issues = namespace_issues(values)
    if issues:
        raise ConfigError(issues, path.name)
    return _ours(values)


def _is_secure(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


def load_stack_file(stack: str, project_dir: Path = PROJECT_ROOT) -> StackConfig:
    """The stack's config as `pulumi up` would see it, read without the Pulumi CLI.

    Secret values (`secure:`) are ciphertext without the Pulumi service: the local path
    skips them (`make run` makes its own keys) but refuses secrets written in plaintext."""
    source = f"Pulumi.{stack}.yaml"
    values = {**_declared_defaults(project_dir), **stack_file_values(stack, project_dir)}
    secure = {k for k, v in values.items() if _is_secure(v)}
    issues = plaintext_secret_issues(set(values) - secure) + _secret_field_issues(secure)
    if issues:
        raise ConfigError(issues, source)
    plain = {k: v for k, v in values.items() if k not in secure and k not in SECRET_KEY_NAMES}
    return parse_stack_config(plain, project_root=project_dir, source=source)


FIELD_KEYS = frozenset(str(f.alias) for f in StackConfig.model_fields.values())


def _secret_field_issues(secret_keys: set[str]) -> list[ConfigIssue]:
    """StackConfig holds no secrets: a secret value for one of its keys is a mistake, and
    a secret key nobody reads is a typo."""
    fields = FIELD_KEYS
    issues = [
        ConfigIssue(
            key, "is set as a secret, but it is plain stack config: set it without --secret"
        )
        for key in sorted(secret_keys & fields)
    ]
    for key in sorted(secret_keys - fields - set(SECRET_KEY_NAMES)):
        near = difflib.get_close_matches(key, SECRET_KEY_NAMES, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        issues.append(
            ConfigIssue(
                key, f"unknown secret key; {hint}allowed secret keys: {', '.join(SECRET_KEY_NAMES)}"
            )
        )
    return issues


@dataclass(frozen=True)
class StackSecrets:
    """The stack's secret config, validated, each value a Pulumi secret (None: unset)."""

    values: Mapping[str, pulumi.Output[Any]]

    def get(self, key: str) -> pulumi.Output[Any] | None:
        if key not in SECRET_KEY_NAMES:
            raise KeyError(f"{key} is not a secret key; allowed: {', '.join(SECRET_KEY_NAMES)}")
        return self.values.get(key)


def load_pulumi_config() -> StackConfig:
    """The stack's plain config inside a Pulumi program run (real engine or mocks)."""
    return load_pulumi_stack(check_secrets=False)[0]


def _stack_file_issues(project_dir: Path) -> list[ConfigIssue]:
    """The CLI parsed the stack file before the program ran, leniently (aliases expand,
    tags pass, secrets may sit there in plaintext); read it again strictly so `pulumi
    preview` refuses what `make run` does."""
    path = project_dir / f"Pulumi.{pulumi.get_stack()}.yaml"
    try:
        _read_yaml(project_dir / "Pulumi.yaml")
        if path.is_file():
            values = stack_file_values(pulumi.get_stack(), project_dir)
            return plaintext_secret_issues({k for k, v in values.items() if not _is_secure(v)})
    except ConfigError as exc:
        return exc.issues
    return []


def load_pulumi_stack(
    *, project_dir: Path | None = None, check_secrets: bool = True
) -> tuple[StackConfig, StackSecrets]:
    """The stack's config and secrets inside a Pulumi program run, all validated before
    the program declares anything.

    The engine hands every value over as a string (objects and arrays JSON-encoded)
    with Pulumi.yaml defaults already applied; secret values arrive decrypted, flagged
    secret. Problems with secrets are listed first, and never show a value. With
    `project_dir`, its stack file is also read strictly.
    """
    from pulumi.runtime import config as runtime_config  # noqa: PLC0415 - Pulumi runs only

    if project_dir is not None:
        file_issues = _stack_file_issues(project_dir)
        if file_issues:
            raise ConfigError(file_issues, f"Pulumi.{pulumi.get_stack()}.yaml")

    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    env_secrets = set(runtime_config.get_config_secret_keys_env())
    ours = _ours(everything)
    secret = {
        key
        for key in ours
        if runtime_config.is_config_secret(PREFIX + key) or PREFIX + key in env_secrets
    }
    issues = (
        plaintext_secret_issues(set(ours) - secret)
        + _secret_field_issues(secret)
        + namespace_issues(everything)
    )
    values: dict[str, Any] = {}
    for key, raw in ours.items():
        if key in SECRET_KEY_NAMES or (key in secret and key not in FIELD_KEYS):
            continue  # a plain key set as a secret is reported once, its value still read
        if key in JSON_KEYS and isinstance(raw, str):
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError as exc:
                issues.append(ConfigIssue(key, f"is not a list of objects: {exc}"))
        else:
            values[key] = raw  # scalars stay strings: pydantic reads "true" and "60"
    stack: StackConfig | None = None
    unreadable = {issue.path for issue in issues}
    try:
        stack = parse_stack_config(values, source="Pulumi config")
    except ConfigError as exc:
        # A key that was not JSON is reported once, not again as missing.
        issues += [i for i in exc.issues if i.path.split(".")[0].split("[")[0] not in unreadable]
    secret_values = {k: ours[k] for k in secret if k in SECRET_KEY_NAMES}
    if check_secrets:
        issues = secret_issues(secret_values, stack) + issues
    if issues or stack is None:
        raise ConfigError(issues, "Pulumi config")
    return stack, StackSecrets(
        {key: pulumi.Output.secret(_decode(key, raw)) for key, raw in secret_values.items()}
    )


def _decode(key: str, raw: Any) -> Any:
    """Objects arrive from ESC (`fn::fromJSON`) or the CLI as JSON text."""
    if key in OBJECT_SECRETS and isinstance(raw, str):
        return json.loads(raw)
    return raw
