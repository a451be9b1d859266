"""`make render STACK=prod`: every Kubernetes object the program declares, as YAML files.

Read off the real program run under mocks in preview mode (`infra.program.runner`), so
there is no second wiring: what is rendered is exactly what `pulumi preview` would send
to the cluster. For review, and for GitOps users who apply manifests themselves. What
only `pulumi up` knows is stated, never invented:
- Secrets are written without data; an annotation says which keys `pulumi up` sets;
- values a provider computes (image digests, Memorystore's address, generated
  passwords) read `(known after pulumi up)`;
- Helm charts are written as their release: pinned chart coordinates and values.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from infra.config import PROJECT_ROOT, ConfigError
from infra.program.runner import (
    MockedResource,
    Mode,
    ProgramRun,
    is_unknown,
    reveal,
    run_program,
    shared_run,
)

SOURCE_ANNOTATION = "rayserve-gke/value-source"
KNOWN_AFTER_UP = "(known after pulumi up)"
HELM_TYPES = frozenset({"kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart"})
# Kubernetes resource types that are not objects in the cluster.
NOT_OBJECTS = frozenset({"pulumi:providers:kubernetes"})


def _known(value: Any) -> Any:
    """The value as the provider sends it: unknowns as KNOWN_AFTER_UP, whole numbers as
    integers (the engine carries every number as a double), keys in a stable order."""
    if is_unknown(value):
        return KNOWN_AFTER_UP
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _known(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_known(v) for v in value]
    return value


def is_object(resource: MockedResource) -> bool:
    """A plain Kubernetes object the program declares (charts are their own kind)."""
    return resource.type.startswith("kubernetes:") and resource.type not in HELM_TYPES


def manifest(resource: MockedResource) -> dict[str, Any]:
    """The object the Kubernetes provider would apply: its inputs, secrets revealed."""
    inputs = _known(reveal(resource.inputs))
    head = {key: inputs.pop(key) for key in ("apiVersion", "kind", "metadata")}
    return {**head, **inputs}


def chart(resource: MockedResource) -> dict[str, Any]:
    """A Helm release or chart as its pinned coordinates and values."""
    inputs = _known(reveal(resource.inputs))
    return {
        "resource": resource.type,
        "name": inputs.get("name", resource.name),
        "chart": inputs["chart"],
        "version": inputs["version"],
        "repository": inputs.get("repositoryOpts", {}).get("repo"),
        "namespace": inputs.get("namespace"),
        "values": inputs.get("values", {}),
    }


def objects_of(run: ProgramRun) -> list[dict[str, Any]]:
    return [manifest(r) for r in run.resources if is_object(r)]


def charts_of(run: ProgramRun) -> list[dict[str, Any]]:
    return [chart(r) for r in run.resources if r.type in HELM_TYPES]


def program_objects(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    mode: Mode = "update",
    secrets: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every plain Kubernetes object the program declares for `stack` (with config
    `overrides`), as applied; one shared run per stack and mode without overrides."""
    if not overrides and not secrets:
        return objects_of(shared_run(stack, mode))
    return objects_of(run_program(stack, overrides, mode=mode, secrets=secrets))


def without_secret_values(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret as written to disk: no data, and which keys `pulumi up` fills in."""
    if obj["kind"] != "Secret":
        return obj
    # A whole data map a provider computes reads KNOWN_AFTER_UP: its keys are unknown too.
    keys = sorted(
        key
        for field in ("data", "stringData")
        if isinstance(obj.get(field), dict)
        for key in obj[field]
    )
    stripped = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
    metadata = dict(stripped["metadata"])
    what = f"keys {', '.join(keys)}" if keys else "its keys"
    metadata["annotations"] = {
        **metadata.get("annotations", {}),
        SOURCE_ANNOTATION: f"pulumi up sets {what} (secret config or generated)",
    }
    return {**stripped, "metadata": metadata}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded serve config) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False)


def file_name(obj: dict[str, Any]) -> str:
    namespace = obj["metadata"].get("namespace", "_cluster")
    return f"{namespace}/{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def render(stack_name: str, out: Path, run: ProgramRun | None = None) -> list[Path]:
    """Write every object and chart of the stack's preview under `out`."""
    run = run or run_program(stack_name, mode="preview")  # ESC's keys: stand-ins
    files = {file_name(o): without_secret_values(o) for o in objects_of(run)}
    files |= {f"helm/{c['chart']}.yaml": c for c in charts_of(run)}
    written = []
    for relative, content in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(content), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.program.render", description=__doc__)
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--out", type=Path, default=None, help="default: rendered/<stack>")
    args = parser.parse_args(argv)
    out = args.out or PROJECT_ROOT / "rendered" / args.stack
    try:
        written = render(args.stack, out)
    except ConfigError as exc:
        print(exc)
        return 2
    print(f"wrote {len(written)} files under {out}")
    for path in written:
        print(f"  {path.relative_to(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
