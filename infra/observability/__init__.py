"""Layer 5, observability: `monitoring` (kube-prometheus-stack, PodMonitors, the
component), `alerts` (the PrometheusRule) and `dashboards` (Grafana). Built before the
operators: their ServiceMonitors need its CRDs."""
