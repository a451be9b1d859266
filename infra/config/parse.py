"""Parse a stack config: pydantic checks each key, then the checks across keys; both
before any resource exists."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infra.config.checks import stack_issues
from infra.config.errors import ConfigError, ConfigIssue, issues_from_validation_error
from infra.config.models import StackConfig
from infra.constants import PROJECT_ROOT


def parse_stack_config(
    raw: Mapping[str, Any], *, project_root: Path = PROJECT_ROOT, source: str = "stack config"
) -> StackConfig:
    """Validate un-namespaced config values into a StackConfig, or raise ConfigError."""
    if not isinstance(raw, Mapping):
        raise ConfigError([ConfigIssue("", "the config must be a mapping of keys")], source)
    try:
        cfg = StackConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(issues_from_validation_error(exc), source) from None
    issues = stack_issues(cfg, project_root)
    if issues:
        raise ConfigError(issues, source)
    return cfg
