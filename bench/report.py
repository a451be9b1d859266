"""The table, the targets, `docs/benchmarks.md` and the plot from one run's rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.systems import Row

OURS = "ours (generated config)"
BENTOML = "BentoML adaptive batching"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


LIMIT_AGAIN = " (again, after the served systems)"


def limit_row(rows: Sequence[Row], runtime: str, batch: int) -> Row | None:
    """The in-process limit; measured twice (before and after the served systems), the
    mean of both, since a shared VM's speed drifts over a run."""
    found = [
        r
        for r in rows
        if r.concurrency == 0 and r.runtime == runtime and r.texts_per_request == batch
    ]
    if not found:
        return None
    return replace(found[0], texts_per_s=sum(r.texts_per_s for r in found) / len(found))


def find(rows: Sequence[Row], system: str, texts: int, concurrency: int) -> Row | None:
    return next(
        (
            r
            for r in rows
            if r.system == system and r.texts_per_request == texts and r.concurrency == concurrency
        ),
        None,
    )


def _ratio(value: float, reference: Row | None) -> str:
    if reference is None or not reference.texts_per_s:
        return "–"
    return f"{value / reference.texts_per_s:.2f}"


def table(rows: Sequence[Row], limit_batch: int) -> list[list[str]]:
    header = [
        "system", "runtime", "texts/req", "c", "texts/s", "p50 ms", "p90 ms", "p99 ms",
        "errors", "CPU cores", "peak RSS MB", "× limit", "× BentoML",
    ]  # fmt: skip
    lines = [header]
    for r in rows:
        bento = find(rows, BENTOML, 1, r.concurrency) if r.texts_per_request == 1 else None
        lines.append(
            [
                r.system,
                r.runtime,
                str(r.texts_per_request),
                str(r.concurrency) if r.concurrency else "–",
                f"{r.texts_per_s:.1f}",
                _ms(r.p50_ms),
                _ms(r.p90_ms),
                _ms(r.p99_ms),
                str(r.errors),
                f"{r.cpu_cores:.2f}",
                f"{r.peak_rss_mb:.0f}",
                _ratio(r.texts_per_s, limit_row(rows, r.runtime, limit_batch)),
                _ratio(r.texts_per_s, bento) if r.system != BENTOML and r.concurrency else "–",
            ]
        )
    return lines


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def render_text(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def render_markdown(lines: list[list[str]]) -> str:
    out = [
        "| " + " | ".join(lines[0]) + " |",
        "|" + "|".join(["---"] * 2 + ["--:"] * (len(lines[0]) - 2)) + "|",
    ]
    out += ["| " + " | ".join(line) + " |" for line in lines[1:]]
    return "\n".join(out)


@dataclass
class Target:
    name: str
    wanted: str
    reached: str
    met: bool | None  # None: not measured in this run


def targets(rows: Sequence[Row], runtime: str, auth: dict[str, float], c: int = 32) -> list[Target]:
    """The issue's targets, checked on this run's numbers."""
    found: list[Target] = []
    limit = limit_row(rows, runtime, 32)
    ours, bento, many = find(rows, OURS, 1, c), find(rows, BENTOML, 1, c), find(rows, OURS, 32, c)

    def throughput_at_least(
        name: str, row: Row | None, reference: Row | None, at_least: float
    ) -> None:
        if row and reference:
            ratio = row.texts_per_s / reference.texts_per_s
            found.append(Target(name, f"≥ {at_least}×", f"{ratio:.2f}×", ratio >= at_least))

    throughput_at_least(f"one text/request, c={c}, vs BentoML", ours, bento, 1.0)
    throughput_at_least(f"one text/request, c={c}, vs in-process batch 32", ours, limit, 0.7)
    if ours:
        ratio = ours.p99_ms / ours.p50_ms
        found.append(
            Target(f"one text/request, c={c}, p99 / p50", "≤ 2.0", f"{ratio:.2f}", ratio <= 2.0)
        )
    throughput_at_least(f"32 texts/request, c={c}, vs in-process batch 32", many, limit, 0.9)
    for texts in (1, 32):
        series = sorted(
            (r for r in rows if r.system == OURS and r.texts_per_request == texts),
            key=lambda r: r.concurrency,
        )
        base = find(rows, OURS, texts, 8)
        later = [r for r in series if r.concurrency >= 8]
        if base and len(later) > 1:
            worst = min(later, key=lambda r: r.texts_per_s)
            ratio = worst.texts_per_s / base.texts_per_s
            found.append(
                Target(
                    f"{texts} text(s)/request: lowest throughput c≥8 vs c=8",
                    "≥ 0.5×",
                    f"{ratio:.2f}× (c={worst.concurrency})",
                    ratio >= 0.5,
                )
            )
    if ours:
        share = auth["auth_us"] / 1000 / ours.p50_ms
        found.append(
            Target(
                "API-key middleware cost vs p50",
                "≤ 3 %",
                f"{auth['auth_us']:.1f} µs = {share * 100:.3f} %",
                share <= 0.03,
            )
        )
    return found


def render_targets_markdown(found: Sequence[Target]) -> str:
    out = ["| target | wanted | reached | met |", "|---|---|---|---|"]
    for t in found:
        met = "yes" if t.met else "no" if t.met is False else "–"
        out.append(f"| {t.name} | {t.wanted} | {t.reached} | {met} |")
    return "\n".join(out)


def write_markdown(path: Path, generated: str) -> None:
    """Replace the generated block of `path`, keeping the hand-written notes around it."""
    block = f"{START}\n{generated.strip()}\n{END}"
    if path.is_file() and START in (text := path.read_text()) and END in text:
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        path.write_text(head + block + tail)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Benchmarks\n\n{block}\n")


def plot(rows: Sequence[Row], path: Path, title: str, limit_batch: int) -> None:
    import matplotlib  # noqa: PLC0415 - only `make bench` draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    series: dict[tuple[str, str, int], list[Row]] = {}
    for r in rows:
        if r.concurrency:
            series.setdefault((r.system, r.runtime, r.texts_per_request), []).append(r)
    for (system, runtime, texts), points in series.items():
        points.sort(key=lambda r: r.concurrency)
        label = f"{system} [{runtime}, {texts} text{'s' if texts > 1 else ''}/req]"
        xs = [r.concurrency for r in points]
        left.plot(xs, [r.texts_per_s for r in points], marker="o", label=label)
        right.plot(xs, [r.p99_ms for r in points], marker="o", label=label)
    for runtime in sorted({r.runtime for r in rows if r.concurrency == 0}):
        limit = limit_row(rows, runtime, limit_batch)
        if limit is not None:
            left.axhline(limit.texts_per_s, linestyle="--", linewidth=1, color="grey")
            left.annotate(
                f"in-process batch {limit_batch} [{runtime}]",
                (1, limit.texts_per_s),
                fontsize=7,
                va="bottom",
            )
    for axis, ylabel in ((left, "texts/s"), (right, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    found = {}
    for name in (
        "ray",
        "torch",
        "onnxruntime",
        "sentence-transformers",
        "bentoml",
        "fastapi",
        "uvicorn",
        "aiohttp",
    ):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, Any]:
    import os  # noqa: PLC0415
    import platform  # noqa: PLC0415

    import psutil  # noqa: PLC0415

    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }
