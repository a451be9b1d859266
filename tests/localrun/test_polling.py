"""`poll_until`: the first answer, never a hidden failure, a timeout that says what."""

from __future__ import annotations

import pytest

from localrun.polling import PollTimeout, poll_until
from localrun.processes import LocalRunError


def test_poll_until_returns_the_first_answer_and_never_hides_a_failure() -> None:
    answers = iter([None, ConnectionError("not up"), 0, "ready"])

    def check() -> str | None:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    assert poll_until(check, timeout_s=5, interval_s=0, ignore=(ConnectionError,)) == "ready"
    with pytest.raises(ValueError, match="died"):
        poll_until(lambda: (_ for _ in ()).throw(ValueError("died")), timeout_s=5)
    with pytest.raises(PollTimeout, match="the port did not happen within 0s"):
        poll_until(lambda: False, timeout_s=0, what="the port")
    with pytest.raises(LocalRunError, match="said why"):
        poll_until(lambda: False, timeout_s=0, on_timeout=lambda: LocalRunError("said why"))
