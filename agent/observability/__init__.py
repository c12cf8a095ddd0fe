"""Logs, metrics and systemd notifications of the daemon (adapters; stdlib and structlog only).

Public surface::

    setup_logging(level, fmt)                     # structlog JSON (or console) on stderr
    Metrics / MetricsServer                        # Prometheus text format over stdlib http.server
    SdNotifier, WatchdogGate                       # sd_notify over $NOTIFY_SOCKET; progress-gated pings
"""

from __future__ import annotations

from agent.observability.logs import set_level, setup_logging
from agent.observability.metrics import Metrics, MetricsServer, render_metrics
from agent.observability.sdnotify import SdNotifier, WatchdogGate

__all__ = [
    "Metrics",
    "MetricsServer",
    "SdNotifier",
    "WatchdogGate",
    "render_metrics",
    "set_level",
    "setup_logging",
]
