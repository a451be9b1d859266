"""The in-cluster GCS Redis: valid for the cluster's Kubernetes, durable, guarded, pinned."""

from __future__ import annotations

from infra.redis import REDIS_IMAGE, in_cluster_manifests
from tests.k8s_schemas import validation_errors


def test_in_cluster_redis_validates_for_the_clusters_kubernetes() -> None:
    kinds = [m["kind"] for m in in_cluster_manifests("ray")]
    assert kinds == ["Service", "StatefulSet", "PodDisruptionBudget"]
    for manifest in in_cluster_manifests("ray"):
        assert validation_errors(manifest) == []


def test_in_cluster_redis_is_durable_authenticated_and_pinned() -> None:
    service, statefulset, pdb = in_cluster_manifests("ray")
    pod = statefulset["spec"]["template"]["spec"]
    container, exporter = pod["containers"]
    assert "@sha256:" in container["image"] and container["image"] == REDIS_IMAGE
    assert "@sha256:" in exporter["image"]
    assert exporter["ports"] == [{"name": "redis-metrics", "containerPort": 9121}]
    assert "--maxmemory-policy noeviction" in container["command"][-1]
    assert "--appendonly yes" in container["command"][-1]
    assert '--requirepass "$REDIS_PASSWORD"' in container["command"][-1]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert pdb["spec"]["maxUnavailable"] == 0
    assert service["spec"]["ports"][0]["port"] == 6379
