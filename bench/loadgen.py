"""Closed-loop HTTP load: `concurrency` clients, each sends its next request on a reply.

A warm-up runs first and is thrown away; then every request that finishes inside the
fixed window counts (throughput = completions in the window / its length, the usual
closed-loop measure; a request slower than the window still counts where it ends).
Bodies are encoded before the clock starts so the client spends its CPU on HTTP.
Clients spread over several URLs (one node's ingress each) when given a list, or ask a
function for each request's URL (a load balancer that drops unready nodes), and
every counted request's send time, end time and outcome is kept (`events`, also while
the load runs when the caller passes its own list): the drills read when failures
started and stopped, and end the load with `stop` once they know.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Sequence
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
    window_start: float = 0.0  # time.perf_counter() at the window's start
    events: list[tuple[float, float, str]] = field(default_factory=list)
    """(sent, done, outcome) per counted request: perf_counter times; "200", another
    status, or the exception's name."""

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
    url: str | Sequence[str] | Callable[[], str],
    bodies: Sequence[bytes],
    headers: dict[str, str],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    texts_per_request: int,
    request_timeout_s: float,
    stop: threading.Event | None,
    events: list[tuple[float, float, str]] | None,
) -> LoadResult:
    result = LoadResult(window_s=window_s, texts_per_request=texts_per_request)
    if events is not None:
        result.events = events
    cycle = itertools.cycle(bodies)
    urls = [url] if isinstance(url, str) else [] if callable(url) else list(url)
    pick = url if callable(url) else None
    headers = {"Content-Type": "application/json", **headers}
    start = time.perf_counter()
    window_start, window_end = start + warmup_s, start + warmup_s + window_s
    result.window_start = window_start
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)

    async def client(session: aiohttp.ClientSession, target: str) -> None:
        while (sent := time.perf_counter()) < window_end and not (stop and stop.is_set()):
            ok, reason, outcome = True, "", "200"
            if pick is not None:
                target = pick()
            try:
                async with session.post(target, data=next(cycle), headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        ok, reason = False, f"{response.status} {payload[:200]!r}"
                        outcome = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, reason, outcome = False, f"{type(exc).__name__}: {exc}", type(exc).__name__
            done = time.perf_counter()
            if window_start <= done <= window_end:
                result.events.append((sent, done, outcome))
                if ok:
                    result.latencies_s.append(done - sent)
                else:
                    result.errors += 1
                    if len(result.error_samples) < 3:
                        result.error_samples.append(reason)
            if not ok:
                await asyncio.sleep(0.05)  # a refused connection fails at once: don't spin

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.create_task(client(session, urls[n % len(urls)] if urls else ""))
            for n in range(concurrency)
        ]
        # Requests still running at the end of the window do not count; don't wait long.
        _, pending = await asyncio.wait(tasks, timeout=warmup_s + window_s + 5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return result


def run_load(
    url: str | Sequence[str] | Callable[[], str],
    bodies: Sequence[bytes],
    *,
    headers: dict[str, str],
    concurrency: int,
    warmup_s: float,
    window_s: float,
    texts_per_request: int,
    request_timeout_s: float = 60,
    stop: threading.Event | None = None,
    events: list[tuple[float, float, str]] | None = None,
) -> LoadResult:
    # uvloop (uvicorn's): a cheaper client loop leaves more of the CPU to the servers.
    return uvloop.run(
        _run(
            url, bodies, headers, concurrency, warmup_s, window_s, texts_per_request,
            request_timeout_s, stop, events,
        )
    )  # fmt: skip
