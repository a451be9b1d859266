"""The log shipper: every replica file and Ray's system logs, whole lines only, through
rotation, each line named by its component and node."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from pathlib import Path

from serve_apps.logship import COMPONENTS, LogFollower, component_of, parse_line, ship

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


RAYLET = "[2026-11-22 01:00:00,123 W 17 42] (raylet) memory_monitor.cc:1: Killing worker 7 (OOM)"
AGENT = "2026-11-22 01:00:01,500\tINFO agent.py:177 -- Dashboard agent grpc address: 10.0.0.1:1"
WORKER = "worker-5f1e-01000000-99"


def _ray_logs(root: Path) -> Path:
    """A Ray node's logs directory as Ray 2.60 writes it (names and line formats)."""
    (root / "serve").mkdir(parents=True)
    (root / "serve" / "replica_embeddings_Embedder_a.log").write_text(_record("hi", "a") + "\n")
    (root / "raylet.out").write_text(RAYLET + "\n")
    (root / "raylet.1.out").write_text(RAYLET + "\n")  # rotated: already shipped
    (root / "gcs_server.err").write_text("Check failed: redis reply\n")
    (root / "dashboard_agent.log").write_text(AGENT + "\n")
    (root / f"{WORKER}.err").write_text(
        ":job_id:01000000\n:actor_name:ServeReplica:embeddings:Embedder\n"
        # Serve's own copy of a record it writes to serve/*.log: not shipped twice
        "INFO 2026-11-22 01:00:02,000 embeddings_Embedder a -- hi\n"
        "Traceback (most recent call last):\n"
    )
    (root / f"{WORKER}.out").write_text("loaded the model\n")
    (root / "debug_state.txt").write_text("not a log\n")
    return root


def test_component_of_names_every_shipped_file_and_skips_rotated_copies() -> None:
    assert component_of("serve/replica_a_D_x.log") == "serve"
    assert component_of("raylet.err") == "raylet"
    assert component_of("gcs_server.out") == "gcs"
    assert component_of("dashboard.log") == "dashboard"
    assert component_of("dashboard_agent.log") == "dashboard_agent"
    assert component_of(f"{WORKER}.err") == "worker"
    assert component_of("raylet.1.out") is None
    assert component_of(f"{WORKER}.1.err") is None
    assert component_of("python-core-worker-x_1.log") is None
    assert set(COMPONENTS) == {"serve", "raylet", "gcs", "dashboard", "dashboard_agent", "worker"}


def test_every_components_lines_carry_component_node_stream_and_severity(tmp_path: Path) -> None:
    follower = LogFollower(_ray_logs(tmp_path / "logs"), node="serving-head-abcde")
    shipped = list(follower.poll())
    records = {(r["component"], r["log_file"]): r for r in shipped}
    assert len(records) == len(shipped)  # one line per file here: nothing shipped twice
    assert set(records) == {
        ("serve", "replica_embeddings_Embedder_a.log"), ("raylet", "raylet.out"),
        ("gcs", "gcs_server.err"), ("dashboard_agent", "dashboard_agent.log"),
        ("worker", f"{WORKER}.err"), ("worker", f"{WORKER}.out"),
    }  # fmt: skip
    assert {r["node"] for r in records.values()} == {"serving-head-abcde"}
    raylet = records["raylet", "raylet.out"]
    assert (raylet["severity"], raylet["stream"], raylet["time"]) == (
        "WARNING", "out", "2026-11-22T01:00:00.123Z")  # fmt: skip
    agent = records["dashboard_agent", "dashboard_agent.log"]
    assert (agent["severity"], agent["time"]) == ("INFO", "2026-11-22T01:00:01.500Z")
    # stderr without a level (a traceback, a failed check) is an error; stdout is not
    crash = records["worker", f"{WORKER}.err"]
    assert crash["message"].startswith("Traceback")
    assert crash["severity"] == "ERROR"
    assert (crash["actor_name"], crash["job_id"]) == (
        "ServeReplica:embeddings:Embedder",
        "01000000",
    )
    assert records["gcs", "gcs_server.err"]["severity"] == "ERROR"
    assert records["worker", f"{WORKER}.out"]["severity"] == "INFO"
    assert records["serve", "replica_embeddings_Embedder_a.log"]["application"] == "embeddings"


def test_the_sidecar_ships_system_logs_named_by_its_pod(tmp_path: Path) -> None:
    out = io.StringIO()
    thread = threading.Thread(target=ship, args=(_ray_logs(tmp_path / "logs"), out, 0.05),
                              daemon=True)  # fmt: skip
    thread.start()
    thread.join(timeout=0.5)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {r["component"] for r in lines} == {
        "serve", "raylet", "gcs", "dashboard_agent", "worker"}  # fmt: skip
    # The pod's hostname is the Ray node the sidecar runs beside.
    assert {r["node"] for r in lines} == {socket.gethostname()}
