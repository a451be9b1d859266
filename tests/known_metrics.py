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
REDIS_EXPORTER = {"redis_memory_used_bytes", "redis_memory_max_bytes"}
PROMETHEUS = {"up"}
KNOWN = RAY_SERVE | KUBERAY | DCGM | REDIS_EXPORTER | PROMETHEUS

PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "rate", "by", "on", "without", "histogram_quantile",
    "avg_over_time", "absent", "le", "and", "or", "unless", "bool", "humanizePercentage",
    "clamp_min", "label_replace", "max_over_time", "vector",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers and groupings removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)  # string arguments (label_replace)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and not n.isdigit()}
