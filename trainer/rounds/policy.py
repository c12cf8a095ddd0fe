"""When ``edge-trainer serve`` starts a learning round by itself (``rounds.policy``).

:func:`due` is the decision, pure. :class:`RoundPolicy` is the service's ``round-policy`` thread: every
``check_interval_s`` it counts the samples labelled since the last round and, when one is due, runs
``edge-trainer round`` as a child process (training must never share the ingest process: it would take its
cores and its memory), one at a time, and logs how it ended.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence

import structlog

from trainer.rounds.config import PolicyConfig, RoundsConfig
from trainer.rounds.history import last_started

log = structlog.get_logger("trainer.rounds.policy")


def due(new_labelled: int, last_round_at: float, now: float, policy: PolicyConfig) -> Optional[str]:
    """Why a round should start now, or None."""
    if not policy.enabled or new_labelled <= 0:
        return None
    if new_labelled >= policy.min_new_labelled:
        return f"{new_labelled} samples labelled since the last round (threshold {policy.min_new_labelled})"
    if policy.every_hours is not None and now - last_round_at >= policy.every_hours * 3600:
        return f"schedule: {policy.every_hours:g} h since the last round, {new_labelled} newly labelled"
    return None


def count_labelled_since(index: Path, sources: Sequence[str], since: float) -> int:
    """Samples whose ground-truth label is newer than ``since``."""
    if not index.is_file():
        return 0
    db = sqlite3.connect(str(index), timeout=10)
    try:
        marks = ",".join("?" for _ in sources)
        row = db.execute(
            f"SELECT count(DISTINCT sid) FROM labels WHERE source IN ({marks}) AND created_at > ?", [*sources, since]
        ).fetchone()
        return int(row[0])
    finally:
        db.close()


class RoundPolicy:
    """The ``round-policy`` thread (see the module docstring)."""

    def __init__(self, rounds: RoundsConfig, index: Path, config_path: Path, stop: threading.Event) -> None:
        self.rounds = rounds
        self.index = index
        self.config_path = config_path
        self.stop = stop
        self.child: Optional[subprocess.Popen[bytes]] = None
        self.started: List[float] = []
        self.last_reason = ""

    def check(self, now: float) -> Optional[str]:
        if self.child is not None:
            code = self.child.poll()
            if code is None:
                return None
            log.info(
                "round_finished",
                exit_code=code,
                outcome={0: "published", 1: "rejected or failed", 2: "refused"}.get(code, "error"),
            )
            self.child = None
        last = max([last_started(self.rounds.workdir), *self.started], default=0.0)
        reason = due(count_labelled_since(self.index, self.rounds.label_sources, last), last, now, self.rounds.policy)
        if reason is None:
            return None
        log.info("round_starting", reason=reason)
        self.last_reason = reason
        self.started.append(now)
        self.child = subprocess.Popen(
            [sys.executable, "-m", "trainer.cli", "round", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return reason

    def run(self) -> None:
        """Thread target."""
        while not self.stop.wait(self.rounds.policy.check_interval_s):
            self.check(time.time())
        if self.child is not None and self.child.poll() is None:
            log.info("round_left_running", pid=self.child.pid, detail="it finishes on its own")
