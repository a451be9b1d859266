"""`python -m bench --smoke`: every system of `make bench` runs end to end (no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT
from localrun.toolchain import haproxy_binary

SYSTEMS = {
    "in-process batch 32",
    "in-process batch 1",
    "in-process batch 32 (again, after the served systems)",
    "BentoML adaptive batching",
    "FastAPI, no batching",
    "ours (generated config)",
    "Ray Serve defaults",
}


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return done, out


def test_the_harness_runs_every_system_and_writes_its_report(
    smoke: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = smoke
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ingress = "haproxy" if haproxy_binary() is not None else "proxy"
    assert f"ours: the dev stack's generated config ({ingress} ingress)" in done.stdout
    data = json.loads((out / "benchmarks.json").read_text())
    rows = data["rows"]
    assert {r["system"] for r in rows} == SYSTEMS
    # Both runtimes' limits, and ours at both request sizes and both concurrencies.
    assert {(r["runtime"], r["texts_per_request"]) for r in rows if r["concurrency"] == 0} == {
        ("onnx", 32), ("onnx", 1), ("torch", 32), ("torch", 1),
    }  # fmt: skip
    ours = {
        (r["texts_per_request"], r["concurrency"]) for r in rows if r["system"].startswith("ours")
    }
    assert ours == {(1, 1), (1, 8), (32, 1), (32, 8)}
    # Every HTTP system answered within the window, and ours (behind auth) never failed.
    assert all(r["requests"] > 0 for r in rows), [r for r in rows if not r["requests"]]
    assert all(r["errors"] == 0 for r in rows if r["system"].startswith("ours"))
    assert all(r["cpu_cores"] > 0 and r["peak_rss_mb"] > 0 for r in rows)

    report = (out / "benchmarks.md").read_text()
    assert "| ours (generated config) | onnx | 1 | 8 |" in report
    assert "### Targets" in report and "× BentoML" in report
    png = (out / "benchmarks.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
