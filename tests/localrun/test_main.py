"""`python -m localrun`: the curl line it prints, and commands that start nothing."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from localrun.__main__ import curl_line, main


def test_curl_line_is_a_valid_shell_command() -> None:
    line = curl_line("http://127.0.0.1:8000/embed", "rsk_a'b", Path("/tmp/x y.json"))
    assert shlex.split(line) == [
        "curl", "-sS", "-H", "Authorization: Bearer rsk_a'b", "-H",
        "Content-Type: application/json", "-d", "@/tmp/x y.json", "http://127.0.0.1:8000/embed",
    ]  # fmt: skip


def test_invalid_stack_is_reported_without_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(tmp_path), "up", "--stack", "staging"]) == 2
    out = capsys.readouterr().out
    assert "allowed stacks: dev, prod" in out
    assert not (tmp_path / "state.json").exists()


def test_status_and_stop_without_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(tmp_path), "status"]) == 1
    assert main(["--state-dir", str(tmp_path), "down"]) == 0
    assert capsys.readouterr().out.count("no local cluster is running") == 2
