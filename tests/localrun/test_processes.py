"""Process sessions: stopping a session stops every process in it."""

from __future__ import annotations

import os
import subprocess
import sys

from localrun.polling import poll_until
from localrun.processes import kill_session, session_alive


def _process_tree_in_new_session() -> subprocess.Popen[bytes]:
    # A parent with a child in its own process group, as Ray starts workers.
    script = (
        "import os, subprocess, time\n"
        "subprocess.Popen(['sleep', '300'], preexec_fn=os.setpgrp)\n"
        "time.sleep(300)\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True)


def test_kill_session_stops_every_process_of_the_session() -> None:
    parent = _process_tree_in_new_session()

    def members() -> list[int]:
        return [
            pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if _sid(pid) == parent.pid
        ]  # fmt: skip

    poll_until(lambda: len(members()) >= 2, timeout_s=10, interval_s=0.1, what="the child")
    assert session_alive(parent.pid)
    assert kill_session(parent.pid, grace_s=2) >= 2
    parent.wait(timeout=5)
    assert not session_alive(parent.pid)


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
