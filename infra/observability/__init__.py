"""Layer 5, observability: `monitoring` (kube-prometheus-stack, PodMonitors, Alertmanager's
routing, the component), `alerts` (the PrometheusRule), `dashboards` (Grafana) and
`cloud_alerts` (Cloud Monitoring: Memorystore, GKE scale-ups). Built before the
operators: their ServiceMonitors need its CRDs."""
