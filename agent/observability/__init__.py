"""Logs, metrics and systemd notifications of the daemon (adapters).

Public surface::

    setup_logging(level, fmt)                     # structlog JSON (or console) on stderr
    SnapshotCollector / Sample / MetricsServer    # prometheus-client, read from snapshots at scrape time
    SdNotifier, WatchdogGate                       # sd_notify over $NOTIFY_SOCKET; progress-gated pings
"""

from __future__ import annotations

from agent.observability.logs import set_level, setup_logging
from agent.observability.metrics import MetricsServer, Sample, SnapshotCollector, counter, gauge, registry_of
from agent.observability.sdnotify import SdNotifier, WatchdogGate

__all__ = [
    "MetricsServer",
    "Sample",
    "SdNotifier",
    "SnapshotCollector",
    "WatchdogGate",
    "counter",
    "gauge",
    "registry_of",
    "set_level",
    "setup_logging",
]
