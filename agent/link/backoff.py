"""The link's reconnect backoff: :class:`agent.core.backoff.RetryCounter` over its :class:`BackoffConfig`."""

from __future__ import annotations

from typing import Callable, Optional

from agent.core.backoff import Backoff as BackoffPolicy
from agent.core.backoff import RetryCounter
from agent.link.config import BackoffConfig


class Backoff(RetryCounter):
    """Delay before the n-th consecutive reconnect (see :class:`agent.core.backoff.Backoff`)."""

    def __init__(self, config: BackoffConfig, rand: Optional[Callable[[], float]] = None) -> None:
        self.config = config
        policy = BackoffPolicy(config.initial_s, max(config.max_s, config.initial_s), config.multiplier, config.jitter)
        super().__init__(policy, rand)
