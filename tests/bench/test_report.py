"""The benchmark report's arithmetic: the limit, the ratios, the targets (no timing)."""

from __future__ import annotations

from bench import report
from bench.systems import Row


def _row(system: str, texts: int, concurrency: int, texts_per_s: float, p50: float = 10) -> Row:
    return Row(
        system=system, runtime="onnx", texts_per_request=texts, concurrency=concurrency,
        texts_per_s=texts_per_s, p50_ms=p50, p90_ms=p50 * 1.2, p99_ms=p50 * 1.5, requests=100,
        errors=0, cpu_cores=1.9, peak_rss_mb=300, error_samples=[],
    )  # fmt: skip


ROWS = [
    _row("in-process batch 32", 32, 0, 400),
    _row("in-process batch 1", 1, 0, 250),
    _row(report.BENTOML, 1, 32, 220),
    _row(report.OURS, 1, 8, 280),
    _row(report.OURS, 1, 32, 320),
    _row(report.OURS, 32, 8, 420),
    _row(report.OURS, 32, 32, 430),
    _row("in-process batch 32" + report.LIMIT_AGAIN, 32, 0, 500),
]
AUTH = {"auth_us": 1.8, "with_auth_us": 2.1, "bare_us": 0.3}


def test_the_limit_is_the_mean_of_both_measurements() -> None:
    limit = report.limit_row(ROWS, "onnx", 32)
    assert limit is not None and limit.texts_per_s == 450
    assert report.limit_row(ROWS, "torch", 32) is None
    table = report.table(ROWS, 32)
    ours_c32 = next(line for line in table if line[0] == report.OURS and line[3] == "32")
    assert ours_c32[-2:] == ["0.71", "1.45"]  # of the limit (320 / 450), of BentoML (320 / 220)


def test_targets_are_checked_against_the_mean_limit() -> None:
    found = {t.name: t for t in report.targets(ROWS, "onnx", AUTH)}
    assert found["one text/request, c=32, vs in-process batch 32"].met is True  # 0.71
    assert found["one text/request, c=32, vs BentoML"].reached.startswith("1.45")
    assert found["32 texts/request, c=32, vs in-process batch 32"].met is True  # 0.96
    slower = [r for r in ROWS if r.system != report.OURS or r.concurrency != 32]
    slower.append(_row(report.OURS, 1, 32, 300))
    found = {t.name: t for t in report.targets(slower, "onnx", AUTH)}
    assert found["one text/request, c=32, vs in-process batch 32"].met is False  # 0.67
