"""The one retry backoff: capped exponential with jitter (pure; the random source is injectable for tests).

Every retry of the agent uses it: the MQTT link's reconnects, the camera sources' reopens, the model-update
service's download retries (the last used a backoff of its own without jitter, so a fleet that failed a
download together retried in lockstep).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["Backoff", "RetryCounter"]


@dataclass(frozen=True)
class Backoff:
    """The delay before retry ``n`` (0-based) is ``min(max_s, initial_s * multiplier**n)``, scaled by a random
    factor in ``[1 - jitter, 1]``: never above the cap, and boxes or cameras that failed in the same instant do
    not all retry in the same instant."""

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {self.initial_s}, {self.max_s}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")

    def delay(self, attempt: int, rng: Optional[random.Random] = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        return self.delay_for(attempt, (rng or random).random())

    def delay_for(self, attempt: int, u: float) -> float:
        """The delay for ``attempt`` with the random draw ``u`` in [0, 1] given."""
        exponent = min(max(attempt, 0), 64)  # 2**64 * anything is past any cap; avoids float overflow
        base = min(self.max_s, self.initial_s * self.multiplier**exponent)
        return base * (1.0 - self.jitter * u)


class RetryCounter:
    """Consecutive failures of one thing, and the :class:`Backoff` delay before its next try."""

    def __init__(self, policy: Backoff, rand: Optional[Callable[[], float]] = None) -> None:
        self.policy = policy
        self._rand = rand or random.random
        self.failures = 0

    def next_delay(self) -> float:
        """Delay for the next retry (and count one more failure)."""
        delay = self.policy.delay_for(self.failures, self._rand())
        self.failures += 1
        return delay

    def reset(self) -> None:
        """It worked: start again from ``initial_s``."""
        self.failures = 0
