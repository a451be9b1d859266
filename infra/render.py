"""`make render STACK=prod`: every Kubernetes object the stack creates, as YAML files.

Built by the same pure builders the Pulumi components wrap, with no engine and no cloud
account: for review, and for GitOps users who apply manifests themselves. What only the
engine knows is stated in the object rather than invented:
- Secrets are written without data; an annotation names where the value comes from;
- images carry the content tag of the build context (a digest exists only after the
  push: pipelines resolve it);
- the Memorystore address is the instance's, known after it is created.
The two Helm charts are written as their pinned chart coordinates and values.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from infra.config import PROJECT_ROOT, ConfigError, StackConfig
from infra.config_sources import load_stack_file
from infra.edge import edge_objects, is_global
from infra.gpu_operator import (
    GPU_OPERATOR_CHART,
    GPU_OPERATOR_NAMESPACE,
    GPU_OPERATOR_REPO,
    GPU_OPERATOR_VERSION,
    gpu_operator_values,
    needs_gpu_operator,
    resource_quota_manifest,
)
from infra.images import registry_host, source_digest
from infra.kuberay import (
    KUBERAY_CHART,
    KUBERAY_REPO,
    KUBERAY_VERSION,
    OPERATOR_NAMESPACE,
    kuberay_values,
    operator_namespace,
)
from infra.network_policies import network_policies
from infra.ray_services import api_keys_secret, auth_token_secret
from infra.rayservice import RayServiceInputs, RedisConnection, SecretKey, rayservice_manifest
from infra.redis import (
    CA_KEY,
    PASSWORD_KEY,
    in_cluster_connection,
    in_cluster_manifests,
    password_secret_manifest,
)

SOURCE_ANNOTATION = "rayserve-gke/value-source"
IAP_CLIENT_ID = "IAP_OAUTH_CLIENT_ID"  # ESC secret config iapOAuthClientId, set at pulumi up
MEMORYSTORE_ADDRESS = "rediss://MEMORYSTORE_HOST:6378"


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _secret(name: str, namespace: str, source: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {SOURCE_ANNOTATION: source},
        },
        "type": "Opaque",
    }


def image_ref(stack: StackConfig, image_dir: str, stack_name: str) -> str:
    repository = (
        stack.image_repository
        if stack.cluster_mode == "existing"
        else f"{registry_host(stack.region)}/{stack.gcp_project}/rayserve-{stack_name}"
    )
    return f"{repository}/{image_dir}:{source_digest()[:16]}"


def redis_objects(stack: StackConfig) -> tuple[list[dict[str, Any]], RedisConnection | None]:
    namespace = stack.namespace
    if stack.redis == "none":
        return [], None
    name = password_secret_manifest(namespace)["metadata"]["name"]
    if stack.redis == "memorystore":
        secret = _secret(name, namespace, "Memorystore AUTH string and server CA (pulumi up)")
        connection = RedisConnection(
            MEMORYSTORE_ADDRESS, SecretKey(name, PASSWORD_KEY), SecretKey(name, CA_KEY)
        )
        return [secret], connection
    secret = _secret(name, namespace, "secret config redisPassword, or generated (pulumi up)")
    return [secret, *in_cluster_manifests(namespace)], in_cluster_connection(namespace)


def stack_objects(stack: StackConfig, stack_name: str) -> list[dict[str, Any]]:
    """Every Kubernetes object of the stack the program declares itself."""
    objects = [_namespace(stack.namespace)]
    if operator_namespace(stack) == OPERATOR_NAMESPACE:
        objects.append(_namespace(OPERATOR_NAMESPACE))
    if needs_gpu_operator(stack):
        objects += [_namespace(GPU_OPERATOR_NAMESPACE), resource_quota_manifest()]
    redis, connection = redis_objects(stack)
    objects += redis
    for service in stack.services:
        keys, token = api_keys_secret(service), auth_token_secret(service)
        objects += [
            _secret(keys.name, stack.namespace, "secret config apiKeyHashes (ESC)"),
            _secret(token.name, stack.namespace, "generated Ray auth token (pulumi up)"),
        ]
        inputs = RayServiceInputs(
            namespace=stack.namespace,
            image=image_ref(stack, service.image_dir, stack_name),
            api_keys=keys,
            auth_token=token,
            redis=connection,
        )
        objects.append(rayservice_manifest(stack, service, inputs))
    name = f"rayserve-{stack_name}"
    on_gke = stack.cluster_mode == "gke"
    objects += edge_objects(
        stack,
        name,
        address_name=f"{name}-gateway" if on_gke else None,
        armor=f"{name}-serve-armor" if on_gke and stack.cloud_armor and is_global(stack) else None,
        iap_client_id=IAP_CLIENT_ID,
    )
    objects += network_policies(stack)
    return objects


def helm_charts(stack: StackConfig) -> dict[str, dict[str, Any]]:
    charts = {
        "kuberay-operator": {
            "chart": KUBERAY_CHART,
            "version": KUBERAY_VERSION,
            "repository": KUBERAY_REPO,
            "namespace": operator_namespace(stack),
            "values": kuberay_values(stack),
        }
    }
    if needs_gpu_operator(stack):
        charts["gpu-operator"] = {
            "chart": GPU_OPERATOR_CHART,
            "version": GPU_OPERATOR_VERSION,
            "repository": GPU_OPERATOR_REPO,
            "namespace": GPU_OPERATOR_NAMESPACE,
            "values": gpu_operator_values(stack),
        }
    return charts


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


def render(stack_name: str, out: Path, project_dir: Path = PROJECT_ROOT) -> list[Path]:
    stack = load_stack_file(stack_name, project_dir)
    written = []
    for obj in stack_objects(stack, stack_name):
        path = out / file_name(obj)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(obj), encoding="utf-8")
        written.append(path)
    for release, chart in helm_charts(stack).items():
        path = out / "helm" / f"{release}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(chart), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.render", description=__doc__)
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
