"""Closed-loop HTTP load: `concurrency` clients, each sends its next request on a reply.

A warm-up runs first and is thrown away; then every request that finishes inside the
fixed window counts (throughput = completions in the window / its length, the usual
closed-loop measure; a request slower than the window still counts where it ends).
Bodies are encoded before the clock starts so the client spends its CPU on HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import numpy as np
import uvloop


@dataclass
class LoadResult:
    window_s: float
    texts_per_request: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def texts_per_s(self) -> float:
        return self.requests * self.texts_per_request / self.window_s

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        return float(np.percentile(self.latencies_s, q)) * 1000


async def _run(
    url: str,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    texts_per_request: int,
    request_timeout_s: float,
) -> LoadResult:
    result = LoadResult(window_s=window_s, texts_per_request=texts_per_request)
    cycle = itertools.cycle(bodies)
    headers = {"Content-Type": "application/json", **headers}
    start = time.perf_counter()
    window_start, window_end = start + warmup_s, start + warmup_s + window_s
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)

    async def client(session: aiohttp.ClientSession) -> None:
        while (sent := time.perf_counter()) < window_end:
            ok, reason = True, ""
            try:
                async with session.post(url, data=next(cycle), headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        ok, reason = False, f"{response.status} {payload[:200]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            done = time.perf_counter()
            if window_start <= done <= window_end:
                if ok:
                    result.latencies_s.append(done - sent)
                else:
                    result.errors += 1
                    if len(result.error_samples) < 3:
                        result.error_samples.append(reason)
            elif not ok and done < window_start:
                await asyncio.sleep(0.05)  # a warm-up error: don't spin

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(concurrency)]
        # Requests still running at the end of the window do not count; don't wait long.
        _, pending = await asyncio.wait(tasks, timeout=warmup_s + window_s + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return result


def run_load(
    url: str,
    bodies: Sequence[bytes],
    *,
    headers: dict[str, str],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    texts_per_request: int,
    request_timeout_s: float = 60,
) -> LoadResult:
    # uvloop (uvicorn's): a cheaper client loop leaves more of the CPU to the servers.
    return uvloop.run(
        _run(
            url, bodies, headers, concurrency, warmup_s, window_s, texts_per_request,
            request_timeout_s,
        )
    )  # fmt: skip
