"""Layer 5: Grafana dashboards: Ray's own, generated from the pinned Ray, and two of ours.

Ray's default, Serve and Serve-deployment dashboards come from
`ray.dashboard.modules.metrics.grafana_dashboard_factory` at program run time, so they
always match the Ray version the images run. Ours use only the stack's Prometheus
datasource and metrics that Ray Serve, KubeRay, DCGM and the Redis exporter emit.
"""

from __future__ import annotations

import json
from typing import Any

from infra.config import StackConfig

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}


def ray_dashboards() -> dict[str, str]:
    from ray.dashboard.modules.metrics import grafana_dashboard_factory as factory  # noqa: PLC0415

    generated = {
        "ray-default": factory.generate_default_grafana_dashboard,
        "ray-serve": factory.generate_serve_grafana_dashboard,
        "ray-serve-deployment": factory.generate_serve_deployment_grafana_dashboard,
    }
    return {name: generate()[0] for name, generate in generated.items()}


def _panel(
    panel_id: int, title: str, exprs: dict[str, str], unit: str = "short", width: int = 12
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {
            "h": 8,
            "w": width,
            "x": 0 if panel_id % 2 else 12,
            "y": (panel_id - 1) // 2 * 8,
        },
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (legend, expr) in enumerate(exprs.items())
        ],
    }


def _dashboard(uid: str, title: str, panels: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["rayserve-gke"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def overview_dashboard(stack: StackConfig) -> dict[str, Any]:
    del stack  # one dashboard for every stack: apps and services are label values
    rate = "[5m]"
    latency = f"rate(ray_serve_http_request_latency_ms_bucket{rate})"
    errors_5xx = f'rate(ray_serve_num_http_error_requests_total{{error_code=~"5.."}}{rate})'
    panels = [
        _panel(
            1,
            "Requests/s per app",
            {
                "{{application}}": f"sum by (application) (rate(ray_serve_num_http_requests_total{rate}))"
            },
        ),
        _panel(
            2,
            "5xx ratio per app",
            {
                "{{application}}": f"sum by (application) ({errors_5xx}) / "
                f"sum by (application) (rate(ray_serve_num_http_requests_total{rate}))"
            },
            "percentunit",
        ),
        _panel(
            3,
            "Latency p50 / p99 per app",
            {
                "p50 {{application}}": f"histogram_quantile(0.5, sum by (application, le) ({latency}))",
                "p99 {{application}}": f"histogram_quantile(0.99, sum by (application, le) ({latency}))",
            },
            "ms",
        ),
        _panel(
            4,
            "Healthy replicas per deployment",
            {
                "{{application}}/{{deployment}}": "sum by (application, deployment) (ray_serve_deployment_replica_healthy)"
            },
        ),
        _panel(
            5,
            "Queued requests",
            {
                "{{application}}/{{deployment}}": "sum by (application, deployment) (ray_serve_deployment_queued_queries)",
                "waiting at the ingress ({{ray_io_cluster}})": "sum by (ray_io_cluster) (ray_serve_num_ongoing_http_requests)"
                " - sum by (ray_io_cluster) (ray_serve_replica_processing_queries)",
            },
        ),
        _panel(
            6,
            "Rejected requests/s (503, backpressure)",
            {
                "{{application}}": "sum by (application) "
                f'(rate(ray_serve_num_http_error_requests_total{{error_code="503"}}{rate}))'
            },
        ),
        _panel(
            7,
            "RayService ready",
            {
                "{{namespace}}/{{name}}": 'max by (namespace, name) (kuberay_service_condition_ready{condition="true"})'
            },
        ),
        _panel(
            8,
            "Ray head up",
            {"{{ray_io_cluster}}": 'max by (ray_io_cluster) (up{ray_node_type="head"})'},
        ),
        _panel(
            9,
            "GPU utilisation vs allocation",
            {
                "busy (avg %)": "avg(DCGM_FI_DEV_GPU_UTIL)",
                "allocated to pods (%)": '100 * count(DCGM_FI_DEV_GPU_UTIL{pod!=""}) '
                "/ count(DCGM_FI_DEV_GPU_UTIL)",
            },
            "percent",
        ),
    ]
    return _dashboard("rayserve-overview", "Ray Serve platform overview", panels)


def gpu_dashboard() -> dict[str, Any]:
    memory_ratio = "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
    panels = [
        _panel(
            1,
            "GPU utilisation per node",
            {"{{Hostname}}": "avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)"},
            "percent",
        ),
        _panel(
            2,
            "GPU utilisation per Ray worker pod",
            {"{{pod}}": 'avg by (pod) (DCGM_FI_DEV_GPU_UTIL{pod!=""})'},
            "percent",
        ),
        _panel(
            3,
            "GPU memory used per node",
            {"{{Hostname}}": "sum by (Hostname) (DCGM_FI_DEV_FB_USED)"},
            "decmbytes",
        ),
        _panel(
            4,
            "GPU memory used per Ray worker pod",
            {"{{pod}}": 'sum by (pod) (DCGM_FI_DEV_FB_USED{pod!=""})'},
            "decmbytes",
        ),
        _panel(
            5, "GPU memory fill per GPU", {"{{Hostname}} gpu {{gpu}}": memory_ratio}, "percentunit"
        ),
        _panel(6, "GPUs per node", {"{{Hostname}}": "count by (Hostname) (DCGM_FI_DEV_GPU_UTIL)"}),
    ]
    return _dashboard("rayserve-gpu", "GPUs (DCGM)", panels)


def all_dashboards(stack: StackConfig) -> dict[str, str]:
    ours = {"rayserve-overview": overview_dashboard(stack)}
    if any(pool.gpu_type for pool in stack.node_pools):
        ours["rayserve-gpu"] = gpu_dashboard()
    return {**ray_dashboards(), **{k: json.dumps(v, sort_keys=True) for k, v in ours.items()}}
