"""Ship Ray's log files to stdout as JSON lines: the log-shipping sidecar of every Ray pod.

`python -m serve_apps.logship /tmp/ray/session_latest/logs` follows the files of every
component in Ray's logs directory (new files are picked up as they appear, rotated ones
from the start) and writes one JSON object per line to stdout, where GKE's logging agent
sends it to Cloud Logging:

| component | files | what shows there |
| --- | --- | --- |
| `serve` | `serve/*.log` | Serve's JSON records: replicas, proxies, controller |
| `raylet` | `raylet.out`, `raylet.err` | scheduling, workers killed for memory (OOM) |
| `gcs` | `gcs_server.out`, `gcs_server.err` | the head's GCS: Redis, node deaths |
| `dashboard` | `dashboard.log`, `.out`, `.err` | the head's dashboard and job API |
| `dashboard_agent` | `dashboard_agent.log`, `.out`, `.err` | each node's agent (metrics, health) |
| `worker` | `worker-*.out`, `worker-*.err` | actors' and tasks' stdout/stderr: crashes |

Every record has `component`, `node` (the pod, i.e. the Ray node), `stream` (`out`, `err`
or `log`), `log_file` and `severity`; a worker's lines also name its `actor_name` and
`job_id`. Serve's JSON records keep their fields and gain `application`, so one query on
`jsonPayload.application` returns every replica's lines (the copies Serve also writes to
the workers' stderr are not shipped twice).
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TextIO

# (pattern relative to the logs directory, component); the first match names a file.
COMPONENT_FILES = (
    ("serve/*.log", "serve"),
    ("raylet.out", "raylet"),
    ("raylet.err", "raylet"),
    ("gcs_server.out", "gcs"),
    ("gcs_server.err", "gcs"),
    ("dashboard.log", "dashboard"),
    ("dashboard.out", "dashboard"),
    ("dashboard.err", "dashboard"),
    ("dashboard_agent.log", "dashboard_agent"),
    ("dashboard_agent.out", "dashboard_agent"),
    ("dashboard_agent.err", "dashboard_agent"),
    ("worker-*.out", "worker"),
    ("worker-*.err", "worker"),
)
COMPONENTS = tuple(dict.fromkeys(component for _, component in COMPONENT_FILES))
PATTERNS = tuple(pattern for pattern, _ in COMPONENT_FILES)
POLL_S = 0.5
# Ray's C++ logs: `[2026-11-22 01:00:00,123 W 17 42] (raylet) node_manager.cc:1: ...`;
# Python's: `2026-11-22 01:00:00,123\tINFO head.py:1 -- ...`.
_GLOG = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ([IWEF]) ")
_PYLOG = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b"
)
_LEVELS = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_ROTATED = re.compile(r"\.\d+\.(out|err|log)$")
# Serve's logger also writes each record to the worker's stderr (`LEVEL time component
# id ... -- message`): shipped from serve/*.log already, with its fields.
_SERVE_STDERR = re.compile(
    r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \S+ \S+ .*-- "
)
# Ray tags a worker's files with what runs in it (`:actor_name:ServeReplica:app:Dep`).
_WORKER_TAG = re.compile(r"^:(job_id|actor_name|task_name):(.*)$")
_GLOG_SEVERITY = {"I": "INFO", "W": "WARNING", "E": "ERROR", "F": "CRITICAL"}


def component_of(relative: str) -> str | None:
    """The Ray component a file (path relative to the logs directory) belongs to; None
    for other files and for rotated copies (`raylet.1.out`), read before they rotated."""
    if _ROTATED.search(relative):
        return None
    return next((c for pattern, c in COMPONENT_FILES if fnmatch(relative, pattern)), None)


def _stream(relative: str) -> str:
    suffix = relative.rsplit(".", 1)[-1]
    return suffix if suffix in {"out", "err"} else "log"


def _iso(stamp: str) -> str:
    """Ray's local timestamps (UTC in the pods) as RFC 3339, which Cloud Logging reads."""
    parsed = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
    return parsed.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(line: str, stream: str) -> dict[str, Any]:
    """A non-JSON line: its level and time where Ray's log formats carry them."""
    record: dict[str, Any] = {"message": line}
    if match := _GLOG.match(line):
        record["severity"] = _GLOG_SEVERITY[match.group(2)]
        record["time"] = _iso(match.group(1))
    elif match := _PYLOG.match(line):
        record["severity"] = match.group(2)
        record["time"] = _iso(match.group(1))
    elif match := _LEVELS.match(line):
        record["severity"] = match.group(1)
    else:  # stderr without a level: tracebacks, crash reports
        record["severity"] = "ERROR" if stream == "err" else "INFO"
    return record


def parse_line(
    line: str, source: str, *, component: str = "serve", node: str = ""
) -> dict[str, Any]:
    """One log line as a record; non-JSON lines become `{"message": ...}`."""
    stream = _stream(source)
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        record = _plain(line, stream)
    record.setdefault("severity", record.get("levelname", "INFO"))
    actor = str(record.get("actor_name", ""))
    if actor.startswith("SERVE_REPLICA::") and "application" not in record:
        record["application"] = actor.removeprefix("SERVE_REPLICA::").split("#", 1)[0]
    record["log_file"] = Path(source).name
    record["component"] = component
    record["stream"] = stream
    record["node"] = node
    return record


@dataclass
class LogFollower:
    """Remembers how far each file was read; survives rotation and truncation."""

    directory: Path
    patterns: tuple[str, ...] | str = PATTERNS
    node: str = field(default_factory=socket.gethostname)
    _positions: dict[Path, tuple[int, int]] = field(default_factory=dict)  # inode, offset
    _partial: dict[Path, str] = field(default_factory=dict)
    _tags: dict[Path, dict[str, str]] = field(default_factory=dict)

    def _files(self) -> list[tuple[Path, str]]:
        patterns = (self.patterns,) if isinstance(self.patterns, str) else self.patterns
        found: dict[Path, str] = {}
        for pattern in patterns:
            for path in self.directory.glob(pattern):
                relative = path.relative_to(self.directory).as_posix()
                component = component_of(relative)
                if component is not None:
                    found.setdefault(path, component)
        return sorted(found.items())

    def poll(self) -> Iterator[dict[str, Any]]:
        for path, component in self._files():
            try:
                stat = path.stat()
            except OSError:
                continue
            inode, offset = self._positions.get(path, (stat.st_ino, 0))
            if inode != stat.st_ino or stat.st_size < offset:
                offset = 0  # rotated or truncated: the file starts over
                self._partial.pop(path, None)
            self._positions[path] = (stat.st_ino, offset)
            if stat.st_size == offset:
                continue
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            self._positions[path] = (stat.st_ino, offset + len(chunk))
            text = self._partial.pop(path, "") + chunk.decode("utf-8", errors="replace")
            *lines, rest = text.split("\n")
            if rest:
                self._partial[path] = rest  # a line still being written
            relative = path.relative_to(self.directory).as_posix()
            tags = self._tags.setdefault(path, {})
            for line in lines:
                if not line.strip():
                    continue
                if component == "worker":
                    if tag := _WORKER_TAG.match(line):
                        tags[tag.group(1)] = tag.group(2)
                        continue
                    if _SERVE_STDERR.match(line):
                        continue
                record = parse_line(line, relative, component=component, node=self.node)
                yield {**tags, **record}


def ship(directory: Path, out: TextIO = sys.stdout, poll_s: float = POLL_S) -> None:
    follower = LogFollower(directory)
    while True:
        for record in follower.poll():
            out.write(json.dumps(record) + "\n")
        out.flush()
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ship(Path(args[0] if args else "/tmp/ray/session_latest/logs"))  # noqa: S108 - Ray's dir
    return 0


if __name__ == "__main__":
    sys.exit(main())
