"""`make bench`: one run, every system, the same corpus and machine; a table and a plot.

python -m bench                      # the full run (about 15 minutes on 2 cores)
python -m bench --smoke --out DIR    # every system end to end, tiny windows
python -m bench --device cuda        # the GPU variant (skipped without a GPU)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

from bench import report
from bench.authcost import auth_cost_us
from bench.corpus import corpus
from bench.systems import (
    LoadPlan,
    RayServeBench,
    Row,
    bentoml_server,
    fastapi_server,
    in_process,
    measure,
    our_serve_config,
    serve_default_config,
)
from infra.config import PROJECT_ROOT, ServeIngress
from infra.config.sources import load_stack_file
from localrun.artifacts import prepare_artifacts

SYSTEMS = ("inprocess", "bentoml", "fastapi", "ours", "serve-default")
DOCS = PROJECT_ROOT / "docs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--device", choices=("cpu", "cuda"), default="cpu")
    add(
        "--runtime",
        choices=("onnx", "torch"),
        default=None,
        help="runtime of the served model, ours and peers alike (default: the app's pick)",
    )
    add("--concurrency", default="1,8,32,64", help="comma-separated")
    add("--warmup-s", type=float, default=6)
    add("--window-s", type=float, default=15)
    add("--corpus-size", type=int, default=4096)
    add("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}")
    add("--stack", default="dev", help="the stack whose generated config is ours")
    add(
        "--set",
        dest="overrides",
        default="{}",
        help='JSON overrides of our config (experiments): {"args": {}, "deployment": {}, '
        '"logging_config": {}}',
    )
    add(
        "--ingress",
        choices=get_args(ServeIngress),
        default=None,
        help="Serve's data plane for ours (default: the stack's serveIngress)",
    )
    add("--ray-env", action="append", default=[], metavar="KEY=VALUE", help="experiments")
    add("--label", default="", help="a name for this run in the report")
    add("--out", type=Path, default=None, help="where benchmarks.md/.png/.json go (docs/)")
    add("--smoke", action="store_true", help="tiny windows, c=1,8: proves the harness runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.concurrency, args.warmup_s, args.window_s, args.corpus_size = "1,8", 1.0, 1.5, 256
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        parser.error(f"--systems: unknown {sorted(unknown)}; allowed: {', '.join(SYSTEMS)}")
    return args


def cuda_available() -> bool:
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def limit_batch_size(device: str) -> int:
    """The in-process batch that stands for the model's limit on `device`."""
    return 32 if device == "cpu" else 256


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not cuda_available():
        print("--device cuda: this machine has no CUDA device; skipping the GPU benchmark.")
        return 0
    runtime = args.runtime or ("onnx" if args.device == "cpu" else "torch")
    limit_batch = limit_batch_size(args.device)
    systems = args.systems.split(",")
    plan = LoadPlan(
        concurrencies=[int(c) for c in args.concurrency.split(",")],
        warmup_s=args.warmup_s,
        window_s=args.window_s,
        corpus=corpus(args.corpus_size),
    )
    out_dir = args.out or DOCS
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.overrides)
    if args.device == "cuda":
        overrides.setdefault("args", {})["device"] = "cuda"
    started = time.monotonic()
    prepare_artifacts(load_stack_file(args.stack))  # the ONNX export, as `make run` does
    rows = measure_all(args, systems, plan, runtime, overrides)
    auth = auth_cost_us()
    elapsed = time.monotonic() - started
    lines = report.table(rows, limit_batch)
    found = report.targets(rows, runtime, auth)
    print()
    print(report.render_text(lines))
    print()
    for t in found:
        print(f"{'MET ' if t.met else 'MISS'} {t.name}: {t.reached} (wanted {t.wanted})")
    write_outputs(args, out_dir, rows, lines, found, auth, runtime, elapsed)
    print(f"\nwrote {out_dir / 'benchmarks.md'}, .png and .json ({elapsed:.0f} s)")
    return 0 if all(r.errors == 0 for r in rows if r.system == report.OURS) else 1


def measure_all(
    args: argparse.Namespace,
    systems: list[str],
    plan: LoadPlan,
    runtime: str,
    overrides: dict[str, Any],
) -> list[Row]:
    limit_runtimes = ["onnx", "torch"] if args.device == "cpu" else ["torch"]
    limit_batch = limit_batch_size(args.device)
    log_dir = Path(tempfile.mkdtemp(prefix="rayserve-bench-"))
    rows: list[Row] = []
    if "inprocess" in systems:
        print("==> the model in-process (the limit)")
        for name in limit_runtimes:
            for batch in (limit_batch, 1):
                rows.append(in_process(name, args.device, batch, plan))
    if "bentoml" in systems:
        print("==> BentoML")
        with bentoml_server(runtime, args.device, log_dir) as endpoint:
            rows += measure(report.BENTOML, runtime, endpoint, plan, 1)
    if "fastapi" in systems:
        print("==> FastAPI + uvicorn")
        with fastapi_server(runtime, args.device, log_dir) as endpoint:
            rows += measure("FastAPI, no batching", runtime, endpoint, plan, 1)
    if "ours" in systems:
        ray_env = dict(item.split("=", 1) for item in args.ray_env)
        ingress = args.ingress or load_stack_file(args.stack).serve_ingress
        with RayServeBench(log_dir / "ours", ingress, ray_env) as ray_bench:
            config = our_serve_config(args.stack, ray_bench.http_port, overrides)
            ran = ray_bench.cluster.ingress
            print(f"==> ours: the {args.stack} stack's generated config ({ran} ingress)")
            endpoint = ray_bench.serve(config)
            rows += measure(report.OURS, runtime, endpoint, plan, 1)
            rows += measure(report.OURS, runtime, endpoint, plan, 32)
    if "serve-default" in systems:
        # Serve's stock HTTP path (its Python proxy); API-key auth on, as for ours.
        with RayServeBench(log_dir / "serve-default", "proxy") as ray_bench:
            print("==> Ray Serve, default deployment options, Serve's proxy")
            base = our_serve_config(args.stack, ray_bench.http_port)
            endpoint = ray_bench.serve(serve_default_config(base, runtime, args.device))
            rows += measure("Ray Serve defaults", runtime, endpoint, plan, 1)
    if "inprocess" in systems and len(systems) > 1:
        print("==> the limit again, after the served systems")
        again = in_process(runtime, args.device, limit_batch, plan)
        rows.append(replace(again, system=again.system + report.LIMIT_AGAIN))
    return rows


def write_outputs(
    args: argparse.Namespace,
    out_dir: Path,
    rows: list[Row],
    lines: list[list[str]],
    found: list[report.Target],
    auth: dict[str, float],
    runtime: str,
    elapsed: float,
) -> None:
    info, versions = report.machine(), report.versions()
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    limit_batch = limit_batch_size(args.device)
    generated = "\n".join(
        [
            f"## Results{': ' + args.label if args.label else ''}",
            "",
            f"Generated by `{command.strip()}` in {elapsed / 60:.1f} min on "
            f"{time.strftime('%Y-%m-%d')}.",
            "",
            f"- Machine: {info['cpu']}, {info['cores']} logical CPUs, {info['memory_gb']} GB, "
            f"{info['os']}, Python {info['python']}.",
            "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
            f"- Load: closed-loop async clients (aiohttp); warm-up {args.warmup_s:g} s, then a "
            f"{args.window_s:g} s window; {args.corpus_size} generated English sentences "
            "(10–30 words). Served runtime: "
            f"{runtime}; the limit is the same model in-process at batch {limit_batch}, "
            "measured before and again after the served systems; ratios use the mean of "
            "the two (a shared VM's speed drifts over a run).",
            "- CPU cores and peak RSS: the server's whole process tree (Ray: every Ray "
            "process and Redis) during the window; RSS sums processes, so shared pages "
            "count more than once.",
            f"- API-key middleware on its own: {auth['with_auth_us']:.1f} µs per request "
            f"against {auth['bare_us']:.1f} µs without it.",
            "",
            report.render_markdown(lines),
            "",
            "### Targets",
            "",
            report.render_targets_markdown(found),
            "",
            f"![throughput and p99 vs concurrency]({'benchmarks.png'})",
        ]
    )
    report.write_markdown(out_dir / "benchmarks.md", generated)
    report.plot(
        rows, out_dir / "benchmarks.png", f"all-MiniLM-L6-v2 on {info['cores']} CPUs", limit_batch
    )
    data: dict[str, Any] = {
        "command": command,
        "machine": info,
        "versions": versions,
        "auth": auth,
        "rows": [r.as_dict() for r in rows],
        "targets": [t.__dict__ for t in found],
    }
    (out_dir / "benchmarks.json").write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
