"""Ship Ray's log files to stdout as JSON lines: the log-shipping sidecar of every Ray pod.

`python -m serve_apps.logship /tmp/ray/session_latest/logs` follows every `*.log` under
`serve/` (new replicas' files are picked up as they appear, rotated files from the
start), and writes one JSON object per line to stdout, where GKE's logging agent sends
it to Cloud Logging. Serve's JSON records keep their fields (`deployment`, `replica`,
`message`, ...); each gains `application`, `severity` and `log_file`, so one query on
`jsonPayload.application` returns the lines of every replica of an app.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PATTERN = "serve/*.log"
POLL_S = 0.5


def parse_line(line: str, source: str) -> dict[str, Any]:
    """One log line as a record; non-JSON lines become `{"message": ...}`."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        record = {"message": line}
    record.setdefault("severity", record.get("levelname", "INFO"))
    actor = str(record.get("actor_name", ""))
    if actor.startswith("SERVE_REPLICA::") and "application" not in record:
        record["application"] = actor.removeprefix("SERVE_REPLICA::").split("#", 1)[0]
    record["log_file"] = source
    return record


@dataclass
class LogFollower:
    """Remembers how far each file was read; survives rotation and truncation."""

    directory: Path
    pattern: str = PATTERN
    _positions: dict[Path, tuple[int, int]] = field(default_factory=dict)  # inode, offset
    _partial: dict[Path, str] = field(default_factory=dict)

    def poll(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.directory.glob(self.pattern)):
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
            for line in lines:
                if line.strip():
                    yield parse_line(line, path.name)


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
