"""Capped exponential backoff with jitter (pure; the random source is injectable for tests)."""

from __future__ import annotations

import random
from typing import Callable, Optional

from agent.link.config import BackoffConfig


class Backoff:
    """Delay before the n-th consecutive retry: ``min(max_s, initial_s * multiplier**n)``, of which a
    ``jitter`` fraction is random, so a fleet that lost its broker together does not reconnect together.
    """

    def __init__(self, config: BackoffConfig, rand: Optional[Callable[[], float]] = None) -> None:
        self.config = config
        self._rand = rand or random.random
        self.failures = 0

    def next_delay(self) -> float:
        """Delay for the next retry (and count one more failure)."""
        cfg = self.config
        ceiling = min(cfg.max_s, cfg.initial_s * (cfg.multiplier ** min(self.failures, 64)))
        self.failures += 1
        return ceiling * (1.0 - cfg.jitter * self._rand())

    def reset(self) -> None:
        """A connection succeeded: start again from ``initial_s``."""
        self.failures = 0
