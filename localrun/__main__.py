"""`python -m localrun up|down|status`: what `make run`, `make stop`, `make status` call."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil

from infra.config import PROJECT_ROOT, App, ConfigError, StackConfig
from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import stack_serve_config
from localrun.artifacts import prepare_artifacts
from localrun.cluster import LocalCluster, worker_name
from localrun.localize import local_gpu_count, localize, logical_cpus_needed
from localrun.processes import LocalRunError, kill_session, port_is_free, session_alive
from localrun.serve_client import app_summary, applications, deploy, wait_until_running
from localrun.state import ClusterState
from serve_apps.logship import COMPONENTS, LogFollower

DEFAULT_STATE_DIR = PROJECT_ROOT / ".run"


def say(message: str) -> None:
    print(message, flush=True)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def write_examples(stack: StackConfig, state_dir: Path) -> dict[str, Path]:
    examples_dir = state_dir / "examples"
    examples_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for _, app in stack.all_apps():
        module = importlib.import_module(app.import_path.split(":")[0])
        example = getattr(module, "example_request", None)
        if example is not None:
            path = examples_dir / f"{app.name}.json"
            path.write_text(json.dumps(example()) + "\n", encoding="utf-8")
            paths[app.name] = path
    return paths


def smoke_test(url: str, key: str, example: Path) -> tuple[int, float]:
    start = time.monotonic()
    response = httpx.post(
        url,
        content=example.read_bytes(),
        timeout=60,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    return response.status_code, time.monotonic() - start


def curl_line(url: str, key: str, example: Path | None) -> str:
    parts = ["curl", "-sS", "-H", f"Authorization: Bearer {key}"]
    if example is not None:
        parts += ["-H", "Content-Type: application/json", "-d", f"@{example}"]
    return shlex.join([*parts, url])


def _preflight(args: argparse.Namespace) -> None:
    state_file = args.state_dir / "state.json"
    if state_file.is_file():
        old = ClusterState.load(state_file)
        if old.ray_sid and session_alive(old.ray_sid):
            raise LocalRunError(
                f"a local cluster is already running ({state_file}); `make stop` first"
            )
    if not port_is_free(args.http_port):
        raise LocalRunError(
            f"port {args.http_port} is in use; pass --http-port (HTTP_PORT=... make run)"
        )


def _start_and_deploy(
    cluster: LocalCluster, config: dict[str, Any], apps: list[App], args: argparse.Namespace
) -> str:
    """Redis, Ray, deploy, wait for RUNNING; returns this run's API key."""
    key = cluster.create_api_key()
    if cluster.start_redis():
        port = cluster.state.redis_port
        say(f"==> GCS Redis (Valkey, from the venv) on 127.0.0.1:{port} with AUTH")
        say("==> GCS fault tolerance ON")
    elif args.no_redis:
        say("==> --no-redis: GCS fault tolerance OFF")
    cluster.start_ray()
    say(f"==> ray head up; dashboard {cluster.state.dashboard_url}")
    if cluster.state.workers:
        say(f"==> {len(cluster.state.workers)} worker nodes up (no replica on the head, as on GKE)")
    deploy(cluster.state.dashboard_url, config)
    say("==> deploying " + ", ".join(a.name for a in apps))
    wait_until_running(
        cluster.state.dashboard_url,
        [a.name for a in apps],
        args.timeout,
        on_change=lambda name, summary: say(f"    [{_elapsed(args):6.1f}s] {name}: {summary}"),
    )
    say(f"==> all apps RUNNING after {_elapsed(args):.1f}s")
    return key


def _elapsed(args: argparse.Namespace) -> float:
    return time.monotonic() - float(args.started)


def _show_endpoints(
    cluster: LocalCluster,
    key: str,
    apps: list[App],
    examples: dict[str, Path],
    args: argparse.Namespace,
) -> None:
    base = cluster.state.http_url
    for app in apps:
        if app.name in examples:
            status, latency = smoke_test(base + app.route_prefix, key, examples[app.name])
            say(
                f"    {app.name}: POST {app.route_prefix} -> {status} "
                f"in {latency * 1000:.0f} ms ({_elapsed(args):.1f}s after start)"
            )
    say(f"\nAPI key for this run (its hash is in {cluster.state.api_key_file}):\n  {key}\n")
    for app in apps:
        say(f"{app.name}: {base}{app.route_prefix}")
        say(f"  {curl_line(base + app.route_prefix, key, examples.get(app.name))}")
    for index, worker in enumerate(cluster.state.workers):
        say(f"{worker_name(index)}'s ingress (a GKE worker pod's port 8000): {worker.http_url}")
    say(f"\nRay dashboard: {cluster.state.dashboard_url}")
    say("status: make status   stop: Ctrl-C here, or make stop")


def up(args: argparse.Namespace) -> int:
    args.started = time.monotonic()
    _preflight(args)
    stack = load_stack_file(args.stack)
    apps = [app for _, app in stack.all_apps()]
    say(f"==> stack {args.stack}: " + ", ".join(f"{a.name} {a.route_prefix}" for a in apps))
    prepare_artifacts(stack, say=say)
    examples = write_examples(stack, args.state_dir)
    config, notes = localize(
        stack_serve_config(stack), http_port=args.http_port, gpus=local_gpu_count()
    )
    cluster = LocalCluster(
        PROJECT_ROOT,
        args.state_dir,
        namespace=f"rayserve-gke-{args.stack}",
        use_redis=not args.no_redis,
        num_cpus=max(math.ceil(logical_cpus_needed(config)), 4),
        ingress=stack.serve_ingress,
        worker_nodes=args.nodes - 1,
        request_timeout_s=stack.request_timeout_s,
    )
    for note in [*notes, *filter(None, [cluster.ingress_note])]:
        say(f"==> note: {note}")
    cluster.state.ports.http = args.http_port
    cluster.state.runner_pid = os.getpid()
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        key = _start_and_deploy(cluster, config, apps, args)
        _show_endpoints(cluster, key, apps, examples, args)
        signal.signal(signal.SIGINT, _raise_stop)
        return _serve_until_stopped(cluster)
    except (_Stop, KeyboardInterrupt):
        say("\n==> stopping")
        return 0
    finally:
        cluster.stop()
        say("==> stopped: Ray and Redis are down")


def _serve_until_stopped(cluster: LocalCluster) -> int:
    """Keep the cluster up as Kubernetes would: a node that exits is started again (the
    head on the same Redis, so the apps come back from the GCS store); without Redis a
    head restart would lose every app, so the run stops instead."""
    while True:
        time.sleep(1)
        for index in cluster.exited_workers():
            say(f"==> {worker_name(index)} exited; starting it again (as KubeRay would)")
            cluster.kill_worker(index)
            cluster.start_worker(index)
        if cluster.ray_running():
            continue
        if not cluster.use_redis:
            say("==> the Ray head exited; stopping (no GCS fault tolerance without Redis)")
            return 1
        say("==> the Ray head exited; starting it again on the same Redis (as the kubelet would)")
        cluster.kill_head(grace_s=0)
        cluster.start_head()
        say(f"==> ray head up again; dashboard {cluster.state.dashboard_url}")


def _running_state(args: argparse.Namespace) -> ClusterState | None:
    state_file = args.state_dir / "state.json"
    if not state_file.is_file():
        say("no local cluster is running (make run starts one)")
        return None
    return ClusterState.load(state_file)


def down(args: argparse.Namespace) -> int:
    state = _running_state(args)
    if state is None:
        return 0
    if state.runner_pid and psutil.pid_exists(state.runner_pid):
        # Ask `make run` to stop: it tears down in order and prints that it did.
        os.kill(state.runner_pid, signal.SIGTERM)
        with contextlib.suppress(psutil.Error):
            psutil.Process(state.runner_pid).wait(timeout=60)
    for sid in state.sessions():  # whatever is left if it could not
        if session_alive(sid):
            kill_session(sid)
    if state.temp_dir:
        shutil.rmtree(state.temp_dir, ignore_errors=True)
    (args.state_dir / "state.json").unlink(missing_ok=True)
    say("stopped: Ray and Redis are down")
    return 0


def status(args: argparse.Namespace) -> int:
    state = _running_state(args)
    if state is None:
        return 1
    try:
        apps: dict[str, Any] = applications(state.dashboard_url)
    except httpx.HTTPError as exc:
        raise LocalRunError(
            f"the Ray dashboard at {state.dashboard_url} does not answer: {exc}"
        ) from None
    say(
        f"Ray dashboard {state.dashboard_url}; Serve {state.http_url}; "
        f"GCS fault tolerance {'ON' if state.redis_port else 'OFF'}"
    )
    for name, app in apps.items():
        say(f"  {name:<14} {app.get('route_prefix') or '':<12} {app_summary(app)}")
    return 0


def logs(args: argparse.Namespace) -> int:
    """Every replica's log lines of one app, or every line of one Ray component (raylet,
    gcs, worker, ...: the files the cluster's log shipper follows), merged in time order."""
    state = _running_state(args)
    if state is None:
        return 1
    logs_dir = Path(state.temp_dir) / "session_latest" / "logs"
    if args.component:
        follower = LogFollower(logs_dir, node="local")
        records = [r for r in follower.poll() if r["component"] == args.component]
        if args.app:
            records = [r for r in records if r.get("application") == args.app]
        if not records:
            raise LocalRunError(f"no {args.component} log lines under {logs_dir}")
        # Stable: lines without a time keep their file order.
        records.sort(key=lambda r: r.get("time", ""))
        for record in records:
            say(f"{record['log_file']} {record['severity']} {record['message']}")
        return 0
    records = list(LogFollower(logs_dir, f"serve/replica_{args.app}_*.log").poll())
    if not records:
        raise LocalRunError(f"no replica logs of app '{args.app}' under {logs_dir / 'serve'}")
    records.sort(key=lambda r: int(r.get("timestamp_ns", 0)))
    for record in records:
        say(
            f"{record.get('asctime', '')} {record.get('deployment', '')} "
            f"{record.get('replica', '')} {record.get('levelname', '')} {record.get('message', '')}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start Redis and Ray, deploy the stack's apps, serve")
    start.add_argument("--stack", default="dev", help="which Pulumi.<stack>.yaml to serve")
    start.add_argument("--http-port", type=int, default=8000)
    start.add_argument("--timeout", type=float, default=600, help="seconds to wait for RUNNING")
    start.add_argument("--no-redis", action="store_true", help="run without GCS fault tolerance")
    start.add_argument(
        "--nodes",
        type=int,
        default=1,
        choices=range(1, 9),
        metavar="N",
        help="Ray nodes: the head, plus N-1 worker nodes with an ingress each (as on GKE)",
    )
    commands.add_parser("down", help="stop the local cluster")
    commands.add_parser("status", help="show apps and replicas")
    show_logs = commands.add_parser(
        "logs", help="all replicas' logs of one app, or one Ray component's, merged"
    )
    show_logs.add_argument("--app", help="the app's name in the stack config")
    show_logs.add_argument(
        "--component",
        choices=COMPONENTS,
        help="a Ray component's lines instead (with --app: only that app's)",
    )
    args = parser.parse_args(argv)
    if args.command == "logs" and not (args.app or args.component):
        parser.error("logs needs --app or --component")
    try:
        return {"up": up, "down": down, "status": status, "logs": logs}[args.command](args)
    except ConfigError as exc:
        say(str(exc))
        return 2
    except LocalRunError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
