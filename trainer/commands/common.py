"""What several commands share: the stop event that SIGTERM / SIGINT set (``serve``, ``console``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import structlog

log = structlog.get_logger("trainer.commands")

__all__ = ["install_signal_handlers"]


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (the long-running commands drain and return)."""

    def handle(signum: int, frame: Any) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
