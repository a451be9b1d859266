"""One change to a stack's config values (camelCase keys, as `stack_values` returns
them), addressed by the key path a user would pass to `pulumi config set --path`."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

Mutation = Callable[[dict[str, Any]], None]


def _at(values: dict[str, Any], path: str) -> tuple[Any, str | int]:
    """The container holding `path` (`services[0].apps[1].name`) and its last key."""
    *parents, last = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    target: Any = values
    for part in parents:
        target = target[part]
    return target, last


def setting(path: str, value: Any) -> Mutation:
    def mutate(values: dict[str, Any]) -> None:
        target, key = _at(values, path)
        target[key] = value

    return mutate


def updating(path: str, **changes: Any) -> Mutation:
    def mutate(values: dict[str, Any]) -> None:
        target, key = _at(values, path)
        target[key].update(changes)

    return mutate


def setting_keys(**changes: Any) -> Mutation:
    """Sets several top-level keys at once."""
    return lambda values: values.update(changes)


def deleting(path: str) -> Mutation:
    def mutate(values: dict[str, Any]) -> None:
        target, key = _at(values, path)
        del target[key]

    return mutate


def duplicating(path: str) -> Mutation:
    """Appends a copy of the list item at `path` to its list."""

    def mutate(values: dict[str, Any]) -> None:
        target, key = _at(values, path)
        target.append(copy.deepcopy(target[key]))

    return mutate
