"""Fixtures the Serve app tests share."""

from __future__ import annotations

import types
from collections.abc import Iterator

import pytest
from ray import serve


@pytest.fixture(scope="module")
def replica_context() -> Iterator[None]:
    """What `@serve.batch` asks of `serve.get_replica_context()` outside a replica."""
    context = types.SimpleNamespace(
        _deployment_config=types.SimpleNamespace(max_ongoing_requests=1000)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "get_replica_context", lambda: context)
        yield
