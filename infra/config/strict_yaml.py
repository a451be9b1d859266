"""A strict YAML loader for the project's and stacks' files.

Plain YAML lets a stack file mean something other than what it shows: a duplicate key
silently keeps the last value, anchors and aliases copy (and can multiply: "billion
laughs") whole subtrees, and tags construct arbitrary types. None of those belongs in
config, so each is an error with its line, before any value is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

MAX_BYTES = 1 << 20  # stack files are a few KiB; anything near this is not config


class StrictYamlError(ValueError):
    """The file is not the plain YAML config is written in; the message names the line."""


def _where(node_or_event: Any) -> str:
    mark = node_or_event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise StrictYamlError(
                f"{_where(event)}: alias '*{event.anchor}' — anchors and aliases are not "
                "allowed in config; write the value out"
            )
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise StrictYamlError(
                f"{_where(event)}: anchor '&{anchor}' — anchors and aliases are not allowed "
                "in config; write the value out"
            )
        if explicit_tag(event):
            raise StrictYamlError(
                f"{_where(event)}: tag '{event.tag}' — tags are not allowed in config; "
                "write a plain value"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                raise StrictYamlError(f"{_where(key_node)}: a key must be a plain value")
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise StrictYamlError(
                    f"{_where(key_node)}: duplicate key '{key}' (first at "
                    f"{_where(seen[key])}); YAML would silently keep only the last one"
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def explicit_tag(event: Any) -> bool:
    """Whether the event carries a tag written in the file (`!!str`, `!custom`)."""
    if isinstance(event, yaml.ScalarEvent):
        # implicit = (plain, quoted): both False only when a tag was written.
        return event.tag is not None and not any(event.implicit)
    if isinstance(event, yaml.CollectionStartEvent):
        return event.tag is not None and not event.implicit
    return False


def load(text: str, source: str) -> Any:
    """Parse config YAML strictly; errors name `source` and the line."""
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise StrictYamlError(f"{source}: larger than {MAX_BYTES // 1024} KiB; not a config file")
    for number, line in enumerate(text.splitlines(), start=1):
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise StrictYamlError(
                f"{source}: line {number}: indented with a tab; YAML indents with spaces only"
            )
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data()
    except StrictYamlError as exc:
        raise StrictYamlError(f"{source}: {exc}") from None
    except ConstructorError as exc:
        raise StrictYamlError(f"{source}: {_describe(exc)}") from None
    except yaml.YAMLError as exc:
        raise StrictYamlError(f"{source}: {_describe(exc)}") from None
    finally:
        loader.dispose()


def _describe(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem} (not valid YAML)"


def load_file(path: Path) -> Any:
    return load(path.read_text(encoding="utf-8"), path.name)
