"""Start each system under test, wait until it answers, and measure it under load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import run_load
from bench.procstats import TreeSampler
from infra.config import PROJECT_ROOT, ServeIngress
from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import stack_serve_config
from localrun.artifacts import LOCAL_MODEL_DIR
from localrun.cluster import LocalCluster
from localrun.localize import local_gpu_count, localize
from localrun.polling import poll_until
from localrun.processes import free_port, kill_session
from localrun.serve_client import deploy, wait_until_running
from serve_apps.common.artifacts import MODEL_DIR_ENV

EMBED_APP = "embeddings"


@dataclass
class Row:
    """One measurement: a system at one concurrency and request size."""

    system: str
    runtime: str
    texts_per_request: int
    concurrency: int  # 0: in-process, no HTTP
    texts_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_cores: float
    peak_rss_mb: float
    error_samples: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Endpoint:
    url: str
    headers: dict[str, str]
    pids: list[int]


@dataclass
class LoadPlan:
    concurrencies: Sequence[int]
    warmup_s: float
    window_s: float
    corpus: Sequence[str]


def bodies(corpus: Sequence[str], texts_per_request: int) -> list[bytes]:
    chunks = [
        list(corpus[i : i + texts_per_request])
        for i in range(0, len(corpus) - texts_per_request + 1, texts_per_request)
    ]
    return [json.dumps({"texts": chunk}).encode() for chunk in chunks]


def measure(
    system: str, runtime: str, endpoint: Endpoint, plan: LoadPlan, texts_per_request: int
) -> list[Row]:
    rows = []
    payloads = bodies(plan.corpus, texts_per_request)
    for concurrency in plan.concurrencies:
        with TreeSampler(endpoint.pids) as sampler:
            result = run_load(
                endpoint.url,
                payloads,
                headers=endpoint.headers,
                concurrency=concurrency,
                warmup_s=plan.warmup_s,
                window_s=plan.window_s,
                texts_per_request=texts_per_request,
            )
        row = Row(
            system=system,
            runtime=runtime,
            texts_per_request=texts_per_request,
            concurrency=concurrency,
            texts_per_s=result.texts_per_s,
            p50_ms=result.percentile_ms(50),
            p90_ms=result.percentile_ms(90),
            p99_ms=result.percentile_ms(99),
            requests=result.requests,
            errors=result.errors,
            cpu_cores=sampler.cpu_cores,
            peak_rss_mb=sampler.peak_rss_bytes / 2**20,
            error_samples=result.error_samples,
        )
        print(_progress(row), flush=True)
        rows.append(row)
    return rows


def _progress(row: Row) -> str:
    where = f"c={row.concurrency}" if row.concurrency else "in-process"
    return (
        f"    {row.system} [{row.runtime}, {row.texts_per_request} text(s)] {where}: "
        f"{row.texts_per_s:.1f} texts/s, p50 {row.p50_ms:.0f} ms, p99 {row.p99_ms:.0f} ms, "
        f"errors {row.errors}, cpu {row.cpu_cores:.2f}, rss {row.peak_rss_mb:.0f} MB"
    )


# -- the model in-process: the limit ---------------------------------------------------


def in_process(runtime: str, device: str, batch: int, plan: LoadPlan) -> Row:
    """`bench.inprocess` in its own process, so its CPU and memory are its own."""
    command = [
        sys.executable, "-m", "bench.inprocess",
        "--runtime", runtime, "--device", device, "--batch", str(batch),
        "--warmup-s", str(plan.warmup_s), "--window-s", str(plan.window_s),
        "--corpus-size", str(len(plan.corpus)),
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=PROJECT_ROOT, env=_env())
    with TreeSampler([proc.pid]) as sampler:
        out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}")
    data = json.loads(out.decode().strip().splitlines()[-1])
    row = Row(
        system=f"in-process batch {batch}",
        runtime=runtime,
        texts_per_request=batch,
        concurrency=0,
        requests=data["batches"],
        errors=0,
        cpu_cores=sampler.cpu_cores,
        peak_rss_mb=sampler.peak_rss_bytes / 2**20,
        error_samples=[],
        **{k: data[k] for k in ("texts_per_s", "p50_ms", "p90_ms", "p99_ms")},
    )
    print(_progress(row), flush=True)
    return row


# -- servers in a subprocess: FastAPI, BentoML ------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            MODEL_DIR_ENV: str(LOCAL_MODEL_DIR),  # where `make run` keeps the ONNX export
            **extra,
        }
    )
    return env


def wait_until_serving(
    url: str, headers: dict[str, str], timeout_s: float, proc: Any = None
) -> None:
    def serving() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before serving")
        response = httpx.post(url, json={"texts": ["ready?"]}, headers=headers, timeout=30)
        return response.status_code == 200

    poll_until(serving, timeout_s=timeout_s, ignore=(httpx.HTTPError,), what=f"{url} -> 200")


@contextmanager
def subprocess_server(
    command: list[str], url: str, log_file: Path, env: dict[str, str]
) -> Iterator[Endpoint]:
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_serving(url, {}, 180, proc)
        yield Endpoint(url=url, headers={}, pids=[proc.pid])
    finally:
        kill_session(proc.pid, 10)
        proc.wait(timeout=15)


def fastapi_server(runtime: str, device: str, log_dir: Path) -> Any:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bench.peers.fastapi_app:app",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = _env(BENCH_RUNTIME=runtime, BENCH_DEVICE=device)
    return subprocess_server(
        command, f"http://127.0.0.1:{port}/embed", log_dir / "fastapi.log", env
    )


def bentoml_server(runtime: str, device: str, log_dir: Path) -> Any:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("bentoml")), "serve",
        "bench.peers.bento_service:BentoEmbedder",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = _env(
        BENCH_RUNTIME=runtime,
        BENCH_DEVICE=device,
        BENTOML_HOME=str(log_dir / "bentoml-home"),
        BENTOML_DO_NOT_TRACK="true",
    )
    return subprocess_server(
        command, f"http://127.0.0.1:{port}/embed", log_dir / "bentoml.log", env
    )


# -- Ray Serve: our generated config, and Serve's defaults ----------------------------


def our_serve_config(
    stack: str, http_port: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What `make run` deploys for STACK, the embeddings app only, plus any overrides.

    `overrides` (for experiments) may hold `args`, `deployment` (merged into the
    Embedder's options) and `logging_config`.
    """
    config, _ = localize(
        stack_serve_config(load_stack_file(stack)), http_port=http_port, gpus=local_gpu_count()
    )
    config["applications"] = [a for a in config["applications"] if a["name"] == EMBED_APP]
    overrides = overrides or {}
    app = config["applications"][0]
    app["args"].update(overrides.get("args", {}))
    app["deployments"][0].update(overrides.get("deployment", {}))
    config["logging_config"].update(overrides.get("logging_config", {}))
    return config


def serve_default_config(base: dict[str, Any], runtime: str, device: str) -> dict[str, Any]:
    """Serve's own HTTP path; the app takes every deployment option at its default."""
    return {
        "proxy_location": base["proxy_location"],
        "http_options": base["http_options"],
        "applications": [
            {
                "name": "serve-default",
                "route_prefix": "/embed",
                "import_path": "bench.peers.serve_default:build_app",
                "args": {"runtime": runtime, "device": device},
            }
        ],
    }


class RayServeBench:
    """One local cluster as `make run` starts it: Redis, a Ray head, API-key auth."""

    def __init__(
        self, state_dir: Path, ingress: ServeIngress, extra_env: dict[str, str] | None = None
    ) -> None:
        self.http_port = free_port()
        self.cluster = LocalCluster(
            PROJECT_ROOT,
            state_dir,
            namespace="rayserve-gke-bench",
            ingress=ingress,
            extra_env=extra_env,
            log=lambda line: print(f"    {line}"),
        )
        self.cluster.state.ports.http = self.http_port
        if self.cluster.ingress_note:
            print(f"==> note: {self.cluster.ingress_note}")
        self.key = ""

    def __enter__(self) -> RayServeBench:
        self.key = self.cluster.create_api_key("bench")
        self.cluster.start_redis()
        self.cluster.start_ray()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cluster.stop()

    def serve(self, config: dict[str, Any]) -> Endpoint:
        names = [a["name"] for a in config["applications"]]
        deploy(self.cluster.state.dashboard_url, config)
        wait_until_running(self.cluster.state.dashboard_url, names, 300)
        url = f"{self.cluster.state.http_url}/embed"
        headers = {"Authorization": f"Bearer {self.key}"}
        wait_until_serving(url, headers, 60)
        # Whatever ingress an experiment picks (--ray-env), auth must still hold.
        refused = httpx.post(url, json={"texts": ["no key"]}, timeout=30)
        if refused.status_code != 401:
            raise RuntimeError(f"{url} answered {refused.status_code} without an API key")
        pids = [p for p in (self.cluster.state.ray_sid, self.cluster.state.redis_sid) if p]
        return Endpoint(url=url, headers=headers, pids=pids)
