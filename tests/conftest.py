"""Shared set-up: fast tests first, Pulumi's event loop, fixtures used across directories."""

import asyncio
from pathlib import Path

import pytest

from infra.program.runner import ProgramRun, run_program

# What provisioning supplies (localrun.toolchain): hidden from `bare_path`.
PROVISIONED = {"redis-server", "valkey-server", "promtool", "amtool", "curl"}


# Fixtures that load the embedding model, export its ONNX graph or run an external tool:
# their tests are `slow`, and `make unit` leaves them (and the integration tests) out.
SLOW_FIXTURES = frozenset({"embedding_model", "onnx_model_dir", "embedder", "promtool"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # Unit tests first (seconds), then the ones that start Ray clusters (minutes).
    items.sort(key=lambda item: "tests/integration/" in str(item.path))


@pytest.fixture(autouse=True)
def _current_event_loop() -> None:
    """Pulumi's runtime needs the thread's current loop; asyncio.run() leaves none behind."""
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


@pytest.fixture
def bare_path(tmp_path: Path) -> str:
    """A PATH with the system's programs but none of those provisioning supplies, as on
    a fresh machine."""
    bin_dir = tmp_path / "system-bin"
    bin_dir.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if not Path(folder).is_dir():
            continue
        for program in Path(folder).iterdir():
            link = bin_dir / program.name
            if program.name not in PROVISIONED and not link.exists():
                link.symlink_to(program)
    return str(bin_dir)


@pytest.fixture(scope="session", params=["dev", "prod"])
def program(request: pytest.FixtureRequest) -> tuple[str, ProgramRun]:
    """The real `__main__.py` run once per stack under Pulumi's mocks: the stack's name
    and what it declared (read it, never change it)."""
    return request.param, run_program(request.param)
