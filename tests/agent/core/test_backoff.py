"""The one backoff (agent.core.backoff): capped exponential, jitter within [1 - jitter, 1] of the step."""

from __future__ import annotations

import pytest

from agent.core.backoff import Backoff, RetryCounter


@pytest.mark.parametrize(
    "policy, attempt, u, expected",
    [
        (Backoff(1.0, 8.0, 2.0, 0.5), 0, 0.0, 1.0),
        (Backoff(1.0, 8.0, 2.0, 0.5), 2, 0.0, 4.0),
        (Backoff(1.0, 8.0, 2.0, 0.5), 10, 0.0, 8.0),  # capped
        (Backoff(1.0, 8.0, 2.0, 0.5), 10, 1.0, 4.0),  # at most half taken off
        (Backoff(1.0, 8.0, 2.0, 1.0), 3, 1.0, 0.0),  # full jitter
        (Backoff(1.0, 8.0, 1.0, 0.0), 5, 0.7, 1.0),  # constant
        (Backoff(1.0, 1e9, 2.0, 0.0), 10_000, 0.0, 1e9),  # no overflow
    ],
)
def test_delay(policy: Backoff, attempt: int, u: float, expected: float) -> None:
    assert policy.delay_for(attempt, u) == pytest.approx(expected)


@pytest.mark.parametrize(
    "args",
    [(0.0, 1.0, 2.0, 0.1), (2.0, 1.0, 2.0, 0.1), (1.0, 2.0, 0.5, 0.1), (1.0, 2.0, 2.0, -0.1), (1.0, 2.0, 2.0, 1.5)],
)
def test_invalid_policies_are_refused(args: tuple) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)


def test_retry_counter_counts_and_resets() -> None:
    counter = RetryCounter(Backoff(1.0, 8.0, 2.0, 0.5), rand=lambda: 0.0)
    assert [counter.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert counter.failures == 5
    counter.reset()
    assert counter.next_delay() == 1.0
