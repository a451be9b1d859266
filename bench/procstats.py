"""CPU and peak RSS of a server's whole process tree while the load runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import psutil


def _tree(roots: Iterable[int]) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def _cpu_seconds(procs: Iterable[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
    return seconds


class TreeSampler:
    """Samples every process under `roots` (children included) from start to stop.

    CPU is in cores (1.0 = one core busy for the whole window); RSS sums the tree, so
    shared pages count once per process: an upper bound, the same way for every system.
    """

    def __init__(self, roots: Iterable[int], interval_s: float = 0.25) -> None:
        self.roots = list(roots)
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.cpu_cores = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        start_time = time.perf_counter()
        first = _cpu_seconds(_tree(self.roots))
        last = dict(first)
        while not self._stop.wait(self.interval_s):
            procs = _tree(self.roots)
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
            last.update(_cpu_seconds(procs))
        used = sum(last[pid] - first.get(pid, 0.0) for pid in last)
        self.cpu_cores = used / (time.perf_counter() - start_time)
