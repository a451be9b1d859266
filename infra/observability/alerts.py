"""Layer 5: what must page, as a PrometheusRule built from the stack config.

Every alert carries a severity, a summary and a `runbook_url` anchor into
docs/runbooks.md; thresholds come from config. `promtool test rules` exercises each one
on synthetic series (tests/infra/observability/test_alerts.py).
"""

from __future__ import annotations

from typing import Any

from infra.config import StackConfig

RUNBOOK_BASE = "https://github.com/acme/rayserve-gke/blob/main/docs/runbooks.md"
RULE_LABELS = {"release": "kube-prometheus-stack", "app.kubernetes.io/part-of": "rayserve-gke"}


def _alert(
    name: str, expr: str, duration: str, severity: str, *, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK_BASE}#{name.lower()}",
        },
    }


def serve_rules(stack: StackConfig) -> list[dict[str, Any]]:
    error_ratio = stack.alert_error_rate_percent / 100
    rules = [
        _alert(
            "RayServiceNotReady",
            # KubeRay exports a constant 1 labelled with the condition's status.
            'max by (namespace, name) (kuberay_service_condition_ready{condition="false"}) == 1',
            "10m",
            "critical",
            summary="RayService {{ $labels.namespace }}/{{ $labels.name }} is not Ready",
            description="KubeRay reports the RayService's Ready condition false for 10 minutes: "
            "its serve apps are not (all) running.",
        ),
        _alert(
            "RayHeadDown",
            'sum by (namespace, ray_io_cluster) (up{ray_node_type="head"}) == 0',
            "5m",
            "critical",
            summary="Ray head of {{ $labels.ray_io_cluster }} is down",
            description="The head's metrics endpoint has not answered for 5 minutes.",
        ),
        _alert(
            "RayHeadMetricsMissing",
            'absent(up{ray_node_type="head"})',
            "15m",
            "critical",
            summary="No Ray head is being scraped",
            description="No head target at all for 15 minutes: the GCS cannot be watched.",
        ),
        _alert(
            "ServeHighErrorRatio",
            "sum by (application) "
            '(rate(ray_serve_num_http_error_requests_total{error_code=~"5.."}[5m]))'
            " / sum by (application) (rate(ray_serve_num_http_requests_total[5m]))"
            f" > {error_ratio:g}",
            "5m",
            "critical",
            summary="{{ $labels.application }} answers too many 5xx",
            description=f"More than {stack.alert_error_rate_percent}% of requests failed with 5xx "
            "for 5 minutes.",
        ),
        _alert(
            "ServeRequestsRejected",
            "sum by (application) "
            '(rate(ray_serve_num_http_error_requests_total{error_code="503"}[5m])) > 0',
            "5m",
            "warning",
            summary="{{ $labels.application }} rejects requests (backpressure)",
            description="A deployment's queue is full (max_queued_requests): callers get 503.",
        ),
        _alert(
            "ServeQueueHigh",
            "sum by (application, deployment) (ray_serve_deployment_queued_queries)"
            f" > {stack.alert_queued_requests}",
            "5m",
            "warning",
            summary="{{ $labels.application }}/{{ $labels.deployment }} has a long queue",
            description=f"More than {stack.alert_queued_requests} requests queued for 5 minutes.",
        ),
        _alert(
            # With the HAProxy data plane, requests wait inside the ingress replicas,
            # where no per-deployment queue gauge exists (the one above counts handle
            # queues): what the ingress holds minus what replicas process is the wait.
            "ServeIngressBacklog",
            "sum by (namespace, ray_io_cluster) (ray_serve_num_ongoing_http_requests)"
            " - sum by (namespace, ray_io_cluster) (ray_serve_replica_processing_queries)"
            f" > {stack.alert_queued_requests}",
            "5m",
            "warning",
            summary="{{ $labels.ray_io_cluster }}: requests wait at the ingress",
            description=f"More than {stack.alert_queued_requests} HTTP requests accepted but "
            "not yet processed by a replica, for 5 minutes.",
        ),
        _alert(
            "ServeReplicasUnhealthy",
            "sum by (application, deployment) (1 - ray_serve_deployment_replica_healthy) > 0",
            "5m",
            "warning",
            summary="{{ $labels.application }}/{{ $labels.deployment }}: unhealthy replicas",
            description="At least one replica failed its health check for 5 minutes.",
        ),
    ]
    for service in stack.services:
        for app in service.apps:
            rules.append(
                _alert(
                    f"ServeP99LatencyHigh{_camel(app.name)}",
                    "histogram_quantile(0.99, sum by (application, le) "
                    f'(rate(ray_serve_http_request_latency_ms_bucket{{application="{app.name}"}}'
                    f"[5m]))) > {app.slo_p99_ms}",
                    "10m",
                    "warning",
                    summary=f"{app.name} p99 latency above its {app.slo_p99_ms} ms SLO",
                    description=f"p99 latency of {app.name} has been above "
                    f"{app.slo_p99_ms} ms for 10 minutes.",
                )
            )
    return rules


def gpu_rules(stack: StackConfig) -> list[dict[str, Any]]:
    memory = stack.alert_gpu_memory_percent / 100
    idle = stack.alert_gpu_idle_percent
    return [
        _alert(
            "GpuMemoryNearFull",
            f"DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) > {memory:g}",
            "10m",
            "warning",
            summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} memory almost full",
            description=f"Frame buffer above {stack.alert_gpu_memory_percent}% for 10 minutes: "
            "the next batch may fail with CUDA out of memory.",
        ),
        _alert(
            "GpuAllocatedButIdle",
            f'avg_over_time(DCGM_FI_DEV_GPU_UTIL{{pod!=""}}[1h]) < {idle}',
            "1h",
            "info",
            summary="GPU {{ $labels.gpu }} of pod {{ $labels.pod }} idles while allocated",
            description=f"Allocated to a pod but under {idle}% busy for 2 hours: money spent for "
            "nothing (lower minReplicas or the pool's minNodes).",
        ),
    ]


def redis_rules(stack: StackConfig) -> list[dict[str, Any]]:
    ratio = stack.alert_redis_memory_percent / 100
    return [
        _alert(
            "GcsRedisMemoryHigh",
            f"redis_memory_used_bytes / redis_memory_max_bytes > {ratio:g}",
            "10m",
            "critical",
            summary="GCS Redis memory near its limit",
            description="Redis refuses writes at maxmemory (noeviction: GCS state must not be "
            "evicted), and the GCS then fails.",
        ),
    ]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def rule_groups(stack: StackConfig) -> list[dict[str, Any]]:
    groups = [{"name": "rayserve-serve", "rules": serve_rules(stack)}]
    if any(pool.gpu_type for pool in stack.node_pools):
        groups.append({"name": "rayserve-gpu", "rules": gpu_rules(stack)})
    if stack.redis == "in-cluster":
        groups.append({"name": "rayserve-redis", "rules": redis_rules(stack)})
    return groups


def prometheus_rule_manifest(stack: StackConfig, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "rayserve-alerts", "namespace": namespace, "labels": RULE_LABELS},
        "spec": {"groups": rule_groups(stack)},
    }
