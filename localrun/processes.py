"""Processes and ports of a local cluster: pick free ports, wait for them, stop sessions.

Every process is started in a session of its own and stopped by session id, so
teardown leaves nothing behind and never touches another Ray cluster on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psutil

from localrun.polling import poll_until

LOCALHOST = "127.0.0.1"


class LocalRunError(RuntimeError):
    """Something the user must act on; printed without a traceback."""


# Ports Ray binds on every node whatever it is told (autoscaler and dashboard metrics):
# inside the OS's ephemeral range, so a "free" pick can meet them once Ray starts.
RAY_FIXED_PORTS = frozenset({44217, 44227})


def free_port() -> int:
    """A free TCP port from the OS's ephemeral range (clear of Ray's worker ports)."""
    return free_ports(1)[0]


def free_ports(count: int, exclude: frozenset[int] = frozenset()) -> list[int]:
    """`count` distinct free ports, none of Ray's fixed ones nor `exclude` (ports already
    handed out): every socket stays bound until all are picked (one pick after another
    may get the same port twice)."""
    with contextlib.ExitStack() as stack:
        picked: list[int] = []
        while len(picked) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind((LOCALHOST, 0))
            port = int(sock.getsockname()[1])
            if port not in RAY_FIXED_PORTS and port not in exclude:
                picked.append(port)
        return picked


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def wait_for_port(
    port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Until something listens on the port; LocalRunError if `process` exits first."""

    def listening() -> bool:
        if process is not None and process.poll() is not None:
            raise LocalRunError(f"{process.args!r} exited with code {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((LOCALHOST, port)) == 0

    poll_until(
        listening,
        timeout_s=timeout_s,
        interval_s=0.1,
        on_timeout=lambda: LocalRunError(
            f"nothing listening on {LOCALHOST}:{port} after {timeout_s:.0f}s"
        ),
    )


def kill_session(sid: int, grace_s: float = 10.0) -> int:
    """SIGTERM every process of a session, SIGKILL what is left after `grace_s`.

    Ray gives workers process groups of their own, but they stay in the session that
    `ray start` was launched in, so the session id finds all of them. Returns how many
    processes were signalled.
    """
    return kill_sessions([sid], grace_s)


def kill_sessions(sids: Iterable[int], grace_s: float = 10.0) -> int:
    """`kill_session` for several sessions at once: one grace period for all of them."""
    wanted = set(sids)

    def members() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) in wanted and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return found

    procs = members()
    for proc in procs:  # grace 0 is a crash: SIGKILL only, no SIGTERM handler runs
        _signal(proc, signal.SIGTERM if grace_s > 0 else signal.SIGKILL)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive + members():
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def session_alive(sid: int) -> bool:
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (keys, passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
