"""Ray head + Serve behind HAProxy, as in a Ray pod, run inside a read-only root.

Run by tests/infra/rayservice/test_pod_security.py inside a user + mount + network
namespace where `/` is read-only and only the Ray container's emptyDirs are writable.
Prints one JSON object: what the requests answered, every log line that reports a
read-only filesystem, and which writable mounts Ray used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

SERVE_URL = "http://127.0.0.1:8000"
ROUTE = "/hello"
READ_ONLY_MARKERS = ("Read-only file system", "EROFS")


def _ray(*args: str) -> subprocess.CompletedProcess[str]:
    ray = str(Path(sys.executable).with_name("ray"))
    return subprocess.run([ray, *args], capture_output=True, text=True, timeout=180, check=False)


def _serve_hello() -> None:
    import ray
    from ray import serve

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.5})
    class Hello:
        def __call__(self, request: Any) -> str:
            del request
            return "hello"

    ray.init(address="auto")
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    app = Hello.bind()  # type: ignore[attr-defined]  # @serve.deployment adds bind
    serve.run(app, name="hello", route_prefix=ROUTE)


def _answers(key: str, deadline_s: float = 120) -> dict[str, int]:
    """Status codes once HAProxy routes to the replica (it starts after the app)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            keyed = httpx.get(SERVE_URL + ROUTE, headers={"Authorization": f"Bearer {key}"})
            if keyed.status_code == 200 or time.monotonic() > end:
                return {
                    "keyed": keyed.status_code,
                    "unkeyed": httpx.get(SERVE_URL + ROUTE).status_code,
                    "healthz": httpx.get(SERVE_URL + "/-/healthz").status_code,
                }
        except httpx.TransportError:
            if time.monotonic() > end:
                return {}
        time.sleep(1)


def _read_only_errors(roots: list[str]) -> list[str]:
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if not path.is_file() or path.is_symlink() or path.stat().st_size > 50_000_000:
                continue
            with path.open(errors="replace") as handle:
                try:
                    lines = list(handle)
                except OSError:
                    continue
            found += [
                f"{path}: {line.strip()}"
                for line in lines
                if any(marker in line for marker in READ_ONLY_MARKERS)
            ]
    return found


def main() -> int:
    writable = json.loads(os.environ["WRITABLE_MOUNTS"])
    key = os.environ["TEST_API_KEY"]
    result: dict[str, Any] = {}
    started = _ray(
        "start", "--head", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
        "--disable-usage-stats", "--metrics-export-port", "8080",
    )  # fmt: skip
    result["ray_start"] = started.returncode
    result["ray_start_output"] = (started.stdout + started.stderr)[-3000:]
    if started.returncode != 0:  # the logs that say why, for the test's message
        logs = Path("/tmp/ray/session_latest/logs")
        for name in ("gcs_server.out", "gcs_server.err", "raylet.err"):
            if (logs / name).is_file():
                result["ray_start_output"] += f"\n{name}: " + (logs / name).read_text()[-1500:]
    try:
        if started.returncode == 0:
            _serve_hello()
            result["answers"] = _answers(key)
    except Exception as exc:  # reported to the test, with the logs
        result["error"] = repr(exc)
    finally:
        result["read_only_errors"] = _read_only_errors(writable)[:20]
        result["used"] = {m: sorted(p.name for p in Path(m).iterdir())[:10] for m in writable}
        _ray("stop", "--force")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
