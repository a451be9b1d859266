"""One way to wait for something: `poll_until` (localrun, bench and the tests use it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class PollTimeout(TimeoutError):
    """What was awaited did not happen in time; the message says what and for how long."""


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    what: str = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
    on_timeout: Callable[[], BaseException] | None = None,
) -> T:
    """Call `check` every `interval_s` until it returns something truthy (returned) or
    `timeout_s` passes: then raise what `on_timeout` makes (it may say what was last
    seen), else PollTimeout naming `what`. Exceptions in `ignore` count as "not yet";
    any other exception from `check` propagates at once (a process that died, a failed
    deploy), so a poll never hides a failure behind its timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except ignore:
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            if on_timeout is not None:
                raise on_timeout()
            raise PollTimeout(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(interval_s)
