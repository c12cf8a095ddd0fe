"""Long-lived threads whose death is noticed: each runs its target under a guard that records how it ended,
and the service's main loop checks them every second (a dead worker ends the service with status 1, so
systemd restarts it: nothing is lost, since nothing unstored was acknowledged)."""

from __future__ import annotations

import threading
import traceback
from typing import Callable, Optional

import structlog

log = structlog.get_logger("trainer.ingest.supervisor")


class SupervisedThread:
    """A named thread; :attr:`error` holds the exception text and traceback if its target raised."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name = name
        self._target = target
        self.error: Optional[str] = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # the point: a thread must never die unseen
            self.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            log.critical("thread_died", thread=self.name, error=f"{type(exc).__name__}: {exc}")
        finally:
            self.finished.set()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def died(self) -> bool:
        """Ended with an exception."""
        return self.finished.is_set() and self.error is not None

    def join(self, timeout: Optional[float] = None) -> bool:
        """True when the thread has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
