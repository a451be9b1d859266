"""Shared test set-up: fast tests first, and an event loop for Pulumi's runtime."""

import asyncio

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Unit tests first (seconds), then the ones that start Ray clusters (minutes).
    items.sort(key=lambda item: "tests/integration/" in str(item.path))


@pytest.fixture(autouse=True)
def _current_event_loop() -> None:
    """Pulumi's runtime needs the thread's current loop; asyncio.run() leaves none behind."""
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
