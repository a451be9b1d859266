"""The log shipper: every replica file, whole lines only, through rotation."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

from serve_apps.logship import LogFollower, parse_line, ship

REPLICA = "SERVE_REPLICA::embeddings#Embedder#abc123"


def _record(message: str, replica: str = "abc123") -> str:
    return json.dumps({
        "asctime": "2026-11-22 01:00:00,000", "levelname": "INFO", "message": message,
        "actor_name": REPLICA.replace("abc123", replica), "deployment": "embeddings_Embedder",
        "replica": replica, "timestamp_ns": 1,
    })  # fmt: skip


def test_serve_json_records_keep_their_fields_and_gain_application_and_severity() -> None:
    record = parse_line(_record("hello"), "replica_embeddings_Embedder_abc123.log")
    assert record["message"] == "hello"
    assert record["application"] == "embeddings"
    assert record["deployment"] == "embeddings_Embedder"
    assert record["severity"] == "INFO"
    assert record["log_file"] == "replica_embeddings_Embedder_abc123.log"


def test_plain_lines_become_messages() -> None:
    assert parse_line("Traceback (most recent call last):", "x.log")["message"].startswith(
        "Traceback"
    )
    assert parse_line("[1, 2]", "x.log")["message"] == "[1, 2]"


def test_follower_reads_new_lines_new_files_and_waits_for_whole_lines(tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    serve.mkdir()
    first = serve / "replica_embeddings_Embedder_a.log"
    first.write_text(_record("one", "a") + "\n" + _record("two", "a")[:20])
    follower = LogFollower(tmp_path)
    assert [r["message"] for r in follower.poll()] == ["one"]
    with first.open("a") as handle:
        handle.write(_record("two", "a")[20:] + "\n")
    (serve / "replica_embeddings_Embedder_b.log").write_text(_record("three", "b") + "\n")
    records = list(follower.poll())
    assert [(r["message"], r["replica"]) for r in records] == [("two", "a"), ("three", "b")]
    assert list(follower.poll()) == []
    (serve / "not-a-log.txt").write_text("ignored\n")
    assert list(follower.poll()) == []


def test_follower_starts_over_after_rotation_and_truncation(tmp_path: Path) -> None:
    serve = tmp_path / "serve"
    serve.mkdir()
    log = serve / "replica_x_D_a.log"
    log.write_text(_record("old", "a") + "\n")
    follower = LogFollower(tmp_path)
    assert len(list(follower.poll())) == 1
    os.replace(log, serve / "replica_x_D_a.log.1")  # Ray's rotation: rename, start anew
    log.write_text(_record("new", "a") + "\n")
    assert [r["message"] for r in follower.poll()] == ["new"]
    log.write_text("")  # truncated (copytruncate): seen as a smaller file
    assert list(follower.poll()) == []
    with log.open("a") as handle:
        handle.write(_record("after", "a") + "\n")
    assert [r["message"] for r in follower.poll()] == ["after"]


def test_ship_writes_json_lines_to_stdout(tmp_path: Path) -> None:
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "replica_embeddings_Embedder_a.log").write_text(_record("hi") + "\n")
    out = io.StringIO()
    thread = threading.Thread(target=ship, args=(tmp_path, out, 0.05), daemon=True)
    thread.start()
    thread.join(timeout=0.5)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["application"] == "embeddings"
