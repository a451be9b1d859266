"""Metric names the platform's dashboards and alerts may use, by who emits them.

From the pinned versions: Ray 2.60 (Serve's proxy and replica metrics; `ray_` prefix
added by Ray's exporter), KubeRay 1.7.0's operator metrics, DCGM exporter fields
(dcgm-exporter's default counters), redis_exporter v1.67, and Prometheus' own `up`; and
the metric names a PromQL expression reads.
"""

import re

RAY_SERVE = {
    "ray_serve_num_http_requests_total",
    "ray_serve_num_http_error_requests_total",
    "ray_serve_http_request_latency_ms_bucket",
    "ray_serve_deployment_replica_healthy",
    "ray_serve_deployment_queued_queries",
    "ray_serve_num_ongoing_http_requests",
    "ray_serve_replica_processing_queries",
}
KUBERAY = {"kuberay_service_condition_ready"}
DCGM = {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}
REDIS_EXPORTER = {
    "redis_memory_used_bytes", "redis_memory_max_bytes", "redis_up", "redis_connected_clients",
    "redis_cpu_sys_seconds_total", "redis_cpu_user_seconds_total",
}  # fmt: skip
# controller-runtime's, as the KubeRay operator exports them.
CONTROLLER_RUNTIME = {
    "controller_runtime_reconcile_total",
    "controller_runtime_reconcile_errors_total",
}
# kube-state-metrics (kube-prometheus-stack's subchart).
KUBE_STATE_METRICS = {
    "kube_pod_status_phase", "kube_pod_status_unschedulable", "kube_pod_labels",
    "kube_pod_container_resource_requests", "kube_daemonset_status_number_ready",
    "kube_daemonset_status_desired_number_scheduled", "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
}  # fmt: skip
PROMETHEUS = {"up", "prometheus_rule_evaluation_failures_total"}
KNOWN = RAY_SERVE | KUBERAY | DCGM | REDIS_EXPORTER | CONTROLLER_RUNTIME | PROMETHEUS
KNOWN |= KUBE_STATE_METRICS

PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "rate", "by", "on", "without", "histogram_quantile",
    "avg_over_time", "absent", "le", "and", "or", "unless", "bool", "humanizePercentage",
    "clamp_min", "label_replace", "max_over_time", "vector", "increase", "changes",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers and groupings removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)  # string arguments (label_replace)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and not n.isdigit()}
