"""Config errors: the key path a user would pass to `pulumi config set --path`, and why."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from infra.config.models import StackConfig
from infra.constants import PROJECT


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{PROJECT}:{self.path}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """The stack config is invalid; raised before any resource is created."""

    def __init__(self, issues: Iterable[ConfigIssue], source: str = "stack config") -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        super().__init__(f"Invalid {source} ({len(self.issues)} problem(s)):\n{lines}")


def _format_path(loc: Iterable[Any]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a dict key's own error: the key is the path
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields a pydantic error location points into."""
    model: Any = StackConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        model = _innermost_model(field.annotation)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _innermost_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _innermost_model(arg)
        if found is not None:
            return found
    return None


def issues_from_validation_error(error: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in error.errors():
        loc = tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            if parent is not None:
                keys = [f.alias or n for n, f in parent.model_fields.items()]
                near = difflib.get_close_matches(str(loc[-1]), keys, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                message = f"unknown key; {hint}allowed keys: {', '.join(keys)}"
        elif err["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        issues.append(ConfigIssue(_format_path(loc), message))
    return issues
