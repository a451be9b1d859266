"""Layer 9: Serve config generation: one service's typed config -> the `serveConfigV2` dict.

Every knob is written out, because Serve's defaults have changed between releases
(max_ongoing_requests went from 100 to 5) and a config that relies on them changes
behaviour on a Ray upgrade without a diff.
"""

from __future__ import annotations

import math
from typing import Any

from infra.config import (
    App,
    Deployment,
    ServeIngress,
    Service,
    StackConfig,
    normalize_route_prefix,
    quantity_value,
)
from infra.constants import SERVE_PORT

# The API-key middleware Serve loads into each of its HTTP servers.
MIDDLEWARE_IMPORT_PATH = "serve_apps.auth.middleware:proxy_middlewares"

# GKE's L7 load balancers keep idle backend connections for 600 s; a backend that
# closes them sooner races the balancer and turns some requests into 502s.
KEEP_ALIVE_TIMEOUT_S = 620
# Ray's own faster ingress (Ray 2.60): HAProxy on every node forwards to the ingress
# replicas, which serve HTTP themselves on ports from this range. The range is Ray's
# default and lies outside Ray's worker ports (10002-19999).
DIRECT_INGRESS_PORTS = (30000, 31000)
# How long a stopping ingress replica keeps its port before closing. Ray's default
# (30 s) is sized for outside load balancers; our HAProxys hear of a removed replica
# from the controller within a config reload and retry refused connections, so 5 s is
# plenty and scale-downs and upgrades finish sooner (docs/reliability.md: no failed
# request in the scale-down, churn and new-version drills at 5 s).
DIRECT_INGRESS_DRAIN_S = 5
# HAProxy's settings we rely on (Ray's template reads them from the environment; a test,
# tests/infra/rayservice/test_haproxy_template.py, renders Ray's template with them).
# A replica answers 408 itself at requestTimeoutS; HAProxy's `timeout server` (none by
# default) only cuts a replica that cannot answer at all (hung, stopped), which would
# otherwise hold the request and its HAProxy connection forever.
HAPROXY_SERVER_TIMEOUT_MARGIN_S = 5
# Connect to a replica: a few seconds means the replica is gone, so `retry-on
# conn-failure` + `option redispatch` try another one while the request has time.
HAPROXY_CONNECT_TIMEOUT_S = 5
# Access log off, on purpose: Ray's template logs every request at `info` (it cannot
# be limited to errors), which would double the log volume the replicas' own JSON
# access log already ships; HAProxy's own failures (no server, timeouts, refused
# connections) are counted in Serve's HTTP metrics from HAProxy's per-request metrics
# socket. A loopback UDP port nobody listens on drops the lines in the kernel; a file
# (stdout) would grow without rotation in /tmp, a missing unix socket would print an
# alert per line to HAProxy's stderr.
HAPROXY_LOG_TARGET = "127.0.0.1:514"


def haproxy_env(request_timeout_s: int | None) -> dict[str, str]:
    """HAProxy's timeouts and log target, derived from the stack (`serveIngress: haproxy`)."""
    env = {
        "RAY_SERVE_HAPROXY_TIMEOUT_CONNECT_S": str(HAPROXY_CONNECT_TIMEOUT_S),
        # An idle client (the load balancer's kept-alive connection) like Serve's own
        # keep-alive, longer than the balancer's 600 s.
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(KEEP_ALIVE_TIMEOUT_S),
        "RAY_SERVE_HAPROXY_LOG_TARGET": HAPROXY_LOG_TARGET,
    }
    if request_timeout_s is not None:
        server_timeout_s = request_timeout_s + HAPROXY_SERVER_TIMEOUT_MARGIN_S
        env["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"] = str(server_timeout_s)
        # After a reload the old HAProxy finishes its requests, then stops: never
        # before the longest request may end, or the reload cuts it (Ray's default,
        # 120 s, is shorter than prod's 125 s server timeout).
        env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"] = str(
            server_timeout_s + HAPROXY_SERVER_TIMEOUT_MARGIN_S
        )
    return env


def ray_process_env(ingress: ServeIngress, request_timeout_s: int | None = None) -> dict[str, str]:
    """The environment of every Ray process, on the cluster and under `make run` alike.
    `request_timeout_s` is the stack's requestTimeoutS; without it HAProxy keeps Ray's
    defaults for the timeouts derived from it."""
    env = {
        # The API-key middleware. Serve runs it in its proxy (`proxy`) or in the
        # ingress replicas' own HTTP servers (`haproxy`): either way every route but the
        # health probes needs a key.
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": MIDDLEWARE_IMPORT_PATH,
        # Ray starts workers (Serve's proxy and replicas) at nice 15, below everything
        # else on the machine; serving is the job here (measured: +15 % one-text
        # throughput on 2 cores, docs/benchmarks.md). Per-pod cgroups keep other pods
        # unaffected.
        "RAY_worker_niceness": "0",
    }
    if ingress == "haproxy":
        low, high = DIRECT_INGRESS_PORTS
        env |= {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(low),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(high),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DIRECT_INGRESS_DRAIN_S),
        }
        env |= haproxy_env(request_timeout_s)
    return env


# How Serve's autoscaler reduces a deployment's request count over its look-back window
# (30 s) behind HAProxy: the peak, not Ray's mean. Behind HAProxy the replicas report
# their own series (no proxy counts for them), and under the mean a load step reached
# the maximum in 2-5 decisions, in 57-122 s, and fell back as replicas joined; under the
# peak it took one decision, 32-38 s, never fell back, as fast as the proxy (31-108 s):
# docs/reliability.md. The cost: a burst counts for the whole window, so with
# upscale_delay_s at most 30 s (the stacks' default) one sample above target can add
# replicas (a longer delay asks for load within every 30 s of it), and scale-down waits
# until the window's peak is below target.
DIRECT_INGRESS_AGGREGATION = "max"


def direct_ingress_concurrency(dep: Deployment) -> tuple[int, int]:
    """`(max_ongoing_requests, max_queued_requests)` for an autoscaling deployment that
    takes HTTP itself (`serveIngress: haproxy`).

    Behind HAProxy, Serve's autoscaler counts only the requests a replica is running
    (at most max_ongoing_requests each), not the ones queued inside it, so one decision
    can grow a deployment by at most maxOngoingRequests / targetOngoingRequests (a load
    step took two upscale rounds where the proxy, which counts its queue, took one:
    docs/reliability.md). Raised so that the minimum replicas can report enough to
    justify the maximum in one decision, with the same admitted total per replica (the
    excess comes off the queue), so overload still answers 503 at the same depth.
    """
    scale = dep.autoscaling
    written = dep.max_ongoing_requests, dep.max_queued_requests
    if scale is None:
        return written
    needed = math.ceil(
        scale.target_ongoing_requests * scale.max_replicas / max(scale.min_replicas, 1)
    )
    ongoing = max(dep.max_ongoing_requests, needed)
    queued = max(1, dep.max_queued_requests - (ongoing - dep.max_ongoing_requests))
    return ongoing, queued


def deployment_config(dep: Deployment, ingress: ServeIngress | None = None) -> dict[str, Any]:
    """One deployment's config; `ingress` is given for an app's ingress deployment."""
    options = dep.ray_actor_options
    actor_options: dict[str, Any] = {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus}
    if options.memory is not None:
        actor_options["memory"] = int(quantity_value(options.memory))
    if options.placement:  # pinned to the worker groups advertising these (manifest)
        actor_options["resources"] = options.placement
    config: dict[str, Any] = {
        "name": dep.name,
        "max_ongoing_requests": dep.max_ongoing_requests,
        "max_queued_requests": dep.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": dep.retry_after_s},
        "ray_actor_options": actor_options,
        "user_config": dict(dep.user_config),
        "max_surge_percent": dep.max_surge_percent,
        "graceful_shutdown_timeout_s": dep.graceful_shutdown_timeout_s,
        "health_check_period_s": dep.health_check_period_s,
        "health_check_timeout_s": dep.health_check_timeout_s,
    }
    if dep.autoscaling is not None:
        scale = dep.autoscaling
        config["autoscaling_config"] = {
            "min_replicas": scale.min_replicas,
            "max_replicas": scale.max_replicas,
            "target_ongoing_requests": scale.target_ongoing_requests,
            "upscale_delay_s": scale.upscale_delay_s,
            "downscale_delay_s": scale.downscale_delay_s,
        }
        if scale.initial_replicas is not None:
            config["autoscaling_config"]["initial_replicas"] = scale.initial_replicas
        if ingress == "haproxy":
            ongoing, queued = direct_ingress_concurrency(dep)
            config["max_ongoing_requests"], config["max_queued_requests"] = ongoing, queued
            config["autoscaling_config"]["aggregation_function"] = DIRECT_INGRESS_AGGREGATION
    else:
        config["num_replicas"] = dep.num_replicas if dep.num_replicas is not None else 1
    return config


def application_config(app: App, ingress: ServeIngress | None = None) -> dict[str, Any]:
    """One app's config; with `ingress`, a single deployment is tuned as the ingress one."""
    single = ingress if len(app.deployments) == 1 else None
    return {
        "name": app.name,
        "route_prefix": normalize_route_prefix(app.route_prefix),
        "import_path": app.import_path,
        "args": dict(app.args),
        "deployments": [deployment_config(d, single) for d in app.deployments],
    }


def serve_config(stack: StackConfig, service: Service) -> dict[str, Any]:
    """The Serve config a RayService of this service runs (its `serveConfigV2`)."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {
            "host": "0.0.0.0",  # noqa: S104 - the proxy serves the pod's Service
            "port": SERVE_PORT,
            "request_timeout_s": stack.request_timeout_s,
            "keep_alive_timeout_s": KEEP_ALIVE_TIMEOUT_S,
        },
        "logging_config": {
            "encoding": "JSON",
            "log_level": stack.log_level,
            "enable_access_log": True,
        },
        "applications": [application_config(app, stack.serve_ingress) for app in service.apps],
    }


def stack_serve_config(stack: StackConfig) -> dict[str, Any]:
    """All of a stack's apps on one Serve instance: what `make run` deploys locally."""
    configs = [serve_config(stack, service) for service in stack.services]
    merged = dict(configs[0])
    merged["applications"] = [app for config in configs for app in config["applications"]]
    return merged
