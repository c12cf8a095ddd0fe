"""Probation rules (pure: no I/O, no clock of their own): how a run ended, how much probation is served.

A trial is judged by the daemon runs that serve its model, not by the process that installed it: ``edge-agent
ota install`` (by hand or from the USB unit) switches while the daemon runs, and only the daemon's hot swap
starts the model. So a trial records when the running daemon began serving it (``serving_since``), and the
crash mark (``running``) together with the kernel boot it was set on (``boot_id``).

How the previous run ended, seen at the next start:

* ``running`` clear: it stopped cleanly (or never served the trial);
* set, same boot: the process died on a machine that kept running: a crash, an abort, a watchdog kill (the
  model may be why: it counts towards ``max_crashes``);
* set, another boot: the machine itself went down (power cut, hard reset): not the model's crash. It is
  counted apart (``power_losses``) and reported; only a run of them (``max_power_losses``) ends the trial,
  without blaming the release, because a model that brings the whole box down looks the same from here.
* set, boot unknown on either side: a crash, as before boot ids were recorded.

Probation served is the running time of the release: the runs that ended cleanly plus the current one. A run
that ended uncleanly gives no credit (how long it lasted is unknown, and a release that keeps taking the box
down must not commit by the calendar).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Optional

from agent.ota.state import Trial


class RunEnd(str, enum.Enum):
    """How the last run that served a trial ended."""

    CLEAN = "clean"
    CRASH = "crash"
    POWER_LOSS = "power_loss"


def previous_run_end(trial: Trial, boot_id: Optional[str]) -> RunEnd:
    """Judge the previous run at a start, from the crash mark and the boot it was set on."""
    if not trial.running:
        return RunEnd.CLEAN
    if trial.boot_id is not None and boot_id is not None and trial.boot_id != boot_id:
        return RunEnd.POWER_LOSS
    return RunEnd.CRASH


def served_s(trial: Trial, now: dt.datetime) -> float:
    """Seconds of probation served: earlier clean runs plus the current run (clock steps back count as 0)."""
    current = 0.0
    if trial.serving_since is not None:
        current = max(0.0, (now - dt.datetime.fromisoformat(trial.serving_since)).total_seconds())
    return trial.served_s + current


def commit_due(trial: Trial, now: dt.datetime, period_s: float) -> bool:
    """Whether the trial has served its probation.

    A trial that no daemon has served yet (no start, not serving) is measured from its switch: that is the
    installer used on its own, without a daemon (the daemon asks only for trials it serves).
    """
    if trial.starts == 0 and trial.serving_since is None:
        return (now - dt.datetime.fromisoformat(trial.since)).total_seconds() >= period_s
    return served_s(trial, now) >= period_s


__all__ = ["RunEnd", "commit_due", "previous_run_end", "served_s"]
