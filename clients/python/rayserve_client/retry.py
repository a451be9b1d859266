"""When to try a request again, and how long to wait first.

Every route of the rayserve-gke apps is a pure function of its request body (an
embedding or a prediction; nothing is stored), so repeating a POST is safe: the
client retries POSTs like GETs.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Overload (Serve's backpressure answers 503, or 429 when configured so), a gateway or
# HAProxy that found no healthy replica (502, 504), and 500: the apps answer every bad
# request with a 4xx and its reason, so a 500 is Serve failing mid-request (seen while a
# restarted head recovers its replicas). A persistent 500 still surfaces after the
# policy's attempts.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and by a total deadline.

    The wait before retry n (n = 1, 2, ...) is `min(cap_s, base_s * 2**(n-1))`, less a
    random share of up to `jitter` of it (0: none; 1: "full jitter", anywhere in
    [0, d]). A `Retry-After` header on the answer is a floor: never retry sooner.
    `deadline_s` bounds the whole call, waits included; the last attempt's timeout is
    cut to what remains.
    """

    max_attempts: int = 6
    base_s: float = 0.25
    cap_s: float = 8.0
    jitter: float = 0.5
    deadline_s: float = 60.0
    retry_statuses: frozenset[int] = RETRY_STATUSES
    # Connection refused or reset, timeouts, a server that closed without answering.
    retry_transport_errors: bool = True
    # A 404 from a path that has answered this client before: Serve's route table is
    # being rebuilt (a head restart, a redeploy), not a wrong URL (that fails at once).
    retry_lost_routes: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")
        if self.base_s < 0 or self.cap_s < 0 or self.deadline_s <= 0:
            raise ValueError("base_s and cap_s must be >= 0, deadline_s > 0")

    @classmethod
    def none(cls, deadline_s: float = 60.0) -> RetryPolicy:
        """One attempt: every failure reaches the caller at once."""
        return cls(max_attempts=1, deadline_s=deadline_s)

    def backoff_s(self, retry: int, rand: float) -> float:
        """The wait before retry number `retry` (from 1), for a `rand` in [0, 1)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (retry - 1))
        return ceiling * (1 - self.jitter * rand)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait: delay-seconds or an HTTP-date
    (RFC 9110 10.2.3); None when absent or unreadable. A date in the past is 0."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    # An HTTP-date is always GMT: no zone given means offset 0, not local time.
    when = email.utils.mktime_tz((*parsed[:9], parsed[9] or 0))
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryEvent:
    """One retry about to happen, as `on_retry` callbacks see it."""

    attempt: int  # the attempt that failed (from 1)
    delay_s: float  # the wait before the next one
    status: int | None  # the failed attempt's HTTP status; None for a transport error
    error: str  # what went wrong, in words
    retry_after_s: float | None = None


@dataclass
class Attempts:
    """The bookkeeping of one call: attempts made, time left, the next wait."""

    policy: RetryPolicy
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random  # jitter, not secrecy
    made: int = 0
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def start(self, timeout_s: float) -> float:
        """Count an attempt; its timeout (no longer than the time left)."""
        self.made += 1
        return max(0.001, min(timeout_s, self.remaining_s()))

    def remaining_s(self) -> float:
        return self.policy.deadline_s - (self.clock() - self.started)

    def delay_s(self, retry_after_s: float | None = None) -> float | None:
        """The wait before the next attempt, or None: stop (out of attempts, or the
        wait would end past the deadline)."""
        if self.made >= self.policy.max_attempts:
            return None
        delay = self.policy.backoff_s(self.made, self.rand())
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        if delay >= self.remaining_s():
            return None
        return delay
