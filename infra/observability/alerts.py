"""Layer 5: what must page or warn, as a PrometheusRule built from the stack config.

Every alert carries a severity (critical pages, warning goes to chat: monitoring.py's
routing), a summary and a `runbook_url` anchor into docs/runbooks.md; thresholds come
from config. Alerts about one RayService carry its name as `rayservice`, so a critical
one inhibits that service's warnings. `promtool test rules` exercises each rule on
synthetic series, firing and quiet (tests/infra/observability/test_alerts.py).
"""

from __future__ import annotations

from typing import Any

from infra.config import StackConfig
from infra.constants import GPU_OPERATOR_NAMESPACE, has_gpu_pools

RUNBOOK_BASE = "https://github.com/acme/rayserve-gke/blob/main/docs/runbooks.md"
RULE_LABELS = {"release": "kube-prometheus-stack", "app.kubernetes.io/part-of": "rayserve-gke"}
# The job of the KubeRay operator's ServiceMonitor (the chart's Service name).
KUBERAY_JOB = "kuberay-operator"
# kube-state-metrics exports these pod labels (monitoring.py allowlists them).
KSM_POD_LABELS = ("app.kubernetes.io/instance", "ray.io/group")


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
            # KubeRay exports a constant 1 labelled with the condition's status; `name`
            # is the RayService, copied to `rayservice` for inhibition.
            "label_replace(max by (namespace, name) "
            '(kuberay_service_condition_ready{condition="false"}), '
            '"rayservice", "$1", "name", "(.*)") == 1',
            "10m",
            "critical",
            summary="RayService {{ $labels.namespace }}/{{ $labels.name }} is not Ready",
            description="KubeRay reports the RayService's Ready condition false for 10 minutes: "
            "its serve apps are not (all) running.",
        ),
        _alert(
            "RayHeadDown",
            'sum by (namespace, rayservice, ray_io_cluster) (up{ray_node_type="head"}) == 0',
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
            "sum by (namespace, rayservice, application) "
            '(rate(ray_serve_num_http_error_requests_total{error_code=~"5.."}[5m]))'
            " / sum by (namespace, rayservice, application) "
            "(rate(ray_serve_num_http_requests_total[5m]))"
            f" > {error_ratio:g}",
            "5m",
            "critical",
            summary="{{ $labels.application }} answers too many 5xx",
            description=f"More than {stack.alert_error_rate_percent}% of requests failed with 5xx "
            "for 5 minutes.",
        ),
        _alert(
            "ServeRequestsRejected",
            "sum by (namespace, rayservice, application) "
            '(rate(ray_serve_num_http_error_requests_total{error_code="503"}[5m])) > 0',
            "5m",
            "warning",
            summary="{{ $labels.application }} rejects requests (backpressure)",
            description="A deployment's queue is full (max_queued_requests): callers get 503.",
        ),
        _alert(
            "ServeQueueHigh",
            "sum by (namespace, rayservice, application, deployment) "
            f"(ray_serve_deployment_queued_queries) > {stack.alert_queued_requests}",
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
            "sum by (namespace, rayservice, ray_io_cluster) (ray_serve_num_ongoing_http_requests)"
            " - sum by (namespace, rayservice, ray_io_cluster) "
            f"(ray_serve_replica_processing_queries) > {stack.alert_queued_requests}",
            "5m",
            "warning",
            summary="{{ $labels.ray_io_cluster }}: requests wait at the ingress",
            description=f"More than {stack.alert_queued_requests} HTTP requests accepted but "
            "not yet processed by a replica, for 5 minutes.",
        ),
        _alert(
            "ServeReplicasUnhealthy",
            "sum by (namespace, rayservice, application, deployment) "
            "(1 - ray_serve_deployment_replica_healthy) > 0",
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
                    "histogram_quantile(0.99, sum by (namespace, rayservice, application, le) "
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


def _ksm_label(key: str) -> str:
    """How kube-state-metrics names an allowlisted pod label on `kube_pod_labels`."""
    return "label_" + "".join(c if c.isalnum() else "_" for c in key)


def _pending_ray_pods(stack: StackConfig) -> str:
    """Pending pods of the Ray namespace, with `rayservice` and `ray_group` from their labels."""
    ns = stack.namespace
    instance, group = (_ksm_label(key) for key in KSM_POD_LABELS)
    labels = (
        f'label_replace(label_replace(kube_pod_labels{{namespace="{ns}", {instance}!=""}}, '
        f'"rayservice", "$1", "{instance}", "(.*)"), "ray_group", "$1", "{group}", "(.*)")'
    )
    return (
        f'(max by (namespace, pod) (kube_pod_status_phase{{namespace="{ns}", phase="Pending"}})'
        " == 1) * on (namespace, pod) group_left (rayservice, ray_group) "
        f"max by (namespace, pod, rayservice, ray_group) ({labels})"
    )


def platform_rules(stack: StackConfig) -> list[dict[str, Any]]:
    """The platform's own moving parts: the operator, pods that never start, Prometheus."""
    pending = _pending_ray_pods(stack)
    unschedulable = "on (namespace, pod) (kube_pod_status_unschedulable == 1)"
    gpu_requests = 'kube_pod_container_resource_requests{resource="nvidia_com_gpu"}'
    wants_gpu = f"on (namespace, pod) (sum by (namespace, pod) ({gpu_requests}) > 0)"

    def reason(expr: str, value: str) -> str:
        return f'label_replace({expr}, "reason", "{value}", "", "")'

    # One reason per pod: no node fits and it needs a GPU (the pool is scaling from 0,
    # or GKE cannot get the VM: spot stock-out, quota), no node fits, or scheduled but
    # its containers have not started (image pull, volume).
    pending_with_reason = " or ".join(
        [
            reason(f"({pending}) and {unschedulable} and {wants_gpu}", "NoGpuNode"),
            reason(f"({pending}) and {unschedulable} unless {wants_gpu}", "Unschedulable"),
            reason(f"({pending}) unless {unschedulable}", "ContainersNotStarted"),
        ]
    )
    minutes = stack.alert_pod_pending_minutes
    return [
        _alert(
            "KubeRayOperatorDown",
            f'absent(up{{job="{KUBERAY_JOB}"}} == 1)',
            "10m",
            "critical",
            summary="The KubeRay operator is down",
            description="No healthy KubeRay operator for 10 minutes: RayServices keep serving, "
            "but nothing recreates a lost head or worker, scales, or rolls out a change.",
        ),
        _alert(
            "KubeRayReconcileErrors",
            "sum by (namespace, controller) "
            f'(rate(controller_runtime_reconcile_errors_total{{job="{KUBERAY_JOB}"}}[10m]))'
            " / sum by (namespace, controller) "
            f'(rate(controller_runtime_reconcile_total{{job="{KUBERAY_JOB}"}}[10m])) > 0.1',
            "15m",
            "warning",
            summary="KubeRay's {{ $labels.controller }} controller fails its reconciles",
            description="More than 10% of the operator's reconciles of "
            "{{ $labels.controller }} objects failed for 15 minutes: read the operator's log.",
        ),
        _alert(
            "RayPodPending",
            pending_with_reason,
            f"{minutes}m",
            "warning",
            summary="Ray pod {{ $labels.pod }} Pending: {{ $labels.reason }}",
            description=f"A pod of RayService {{{{ $labels.rayservice }}}} (group "
            f"{{{{ $labels.ray_group }}}}) has been Pending for {minutes} minutes: "
            "{{ $labels.reason }}. NoGpuNode: the GPU pool cannot add a node (maxNodes, "
            "spot stock-out or GPU quota: see GkeScaleUpStockout/GkeScaleUpQuotaExceeded).",
        ),
        _alert(
            "PrometheusRuleEvaluationFailures",
            "sum by (namespace, rule_group) "
            "(increase(prometheus_rule_evaluation_failures_total[10m])) > 0",
            "10m",
            "critical",
            summary="Prometheus fails to evaluate rules of {{ $labels.rule_group }}",
            description="Rule evaluations fail for 10 minutes: the alerts of that group "
            "cannot fire.",
        ),
        _alert(
            "PrometheusScrapeTargetsDown",
            "100 * count by (namespace, job) (up == 0) / count by (namespace, job) (up) > 10",
            "15m",
            "warning",
            summary="{{ $labels.job }}: targets down",
            description="More than 10% of the job's scrape targets have not answered for "
            "15 minutes: their metrics, and the alerts on them, are missing.",
        ),
    ]


def gpu_rules(stack: StackConfig) -> list[dict[str, Any]]:
    memory = stack.alert_gpu_memory_percent / 100
    idle = stack.alert_gpu_idle_percent
    ns = GPU_OPERATOR_NAMESPACE
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
        _alert(
            "GpuOperatorComponentsNotReady",
            f'kube_daemonset_status_number_ready{{namespace="{ns}"}}'
            f' < kube_daemonset_status_desired_number_scheduled{{namespace="{ns}"}}'
            f' or kube_deployment_status_replicas_available{{namespace="{ns}"}}'
            f' < kube_deployment_spec_replicas{{namespace="{ns}"}}',
            "15m",
            "warning",
            summary="GPU Operator component {{ $labels.daemonset }}{{ $labels.deployment }} "
            "not ready",
            description="Pods of a GPU Operator DaemonSet or Deployment have not been ready for "
            "15 minutes: GPU nodes may lack their device plugin, feature labels or DCGM "
            "metrics.",
        ),
    ]


def redis_rules(stack: StackConfig) -> list[dict[str, Any]]:
    """The in-cluster GCS Redis, from its exporter; Memorystore's are Cloud Monitoring
    policies with the same thresholds (cloud_alerts.py)."""
    ratio = stack.alert_redis_memory_percent / 100
    cpu = stack.alert_redis_cpu_percent / 100
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
        _alert(
            "GcsRedisDown",
            # The exporter reaches no Redis, the exporter is down, or none is scraped.
            "max by (namespace, rayservice, pod) "
            '(redis_up == 0 or up{job=~".*gcs-redis"} == 0) or absent(up{job=~".*gcs-redis"} == 1)',
            "5m",
            "critical",
            summary="GCS Redis is down",
            description="Redis has not answered for 5 minutes: a head that restarts now "
            "cannot recover its GCS state, and running GCSs fail their writes.",
        ),
        _alert(
            "GcsRedisClientsHigh",
            f"redis_connected_clients > {stack.alert_redis_connected_clients}",
            "10m",
            "warning",
            summary="GCS Redis has too many clients",
            description=f"More than {stack.alert_redis_connected_clients} connections for 10 "
            "minutes; only each Ray cluster's GCS connects, so connections leak.",
        ),
        _alert(
            "GcsRedisCpuHigh",
            "sum by (namespace, rayservice, pod) (rate(redis_cpu_sys_seconds_total[5m])"
            f" + rate(redis_cpu_user_seconds_total[5m])) > {cpu:g}",
            "10m",
            "warning",
            summary="GCS Redis is CPU-bound",
            description=f"Redis used more than {stack.alert_redis_cpu_percent}% of a core for "
            "10 minutes: GCS calls slow down and Ray behaves erratically.",
        ),
    ]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def rule_groups(stack: StackConfig) -> list[dict[str, Any]]:
    groups = [
        {"name": "rayserve-serve", "rules": serve_rules(stack)},
        {"name": "rayserve-platform", "rules": platform_rules(stack)},
    ]
    if has_gpu_pools(stack):
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
