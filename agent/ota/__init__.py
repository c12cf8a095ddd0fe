"""Signed over-the-air model updates: TUF trust, transports, A/B slots, health check, probation, rollback.

Public surface::

    from agent.ota import Installer, OtaConfig, OtaEvent
    installer = Installer(config, on_event=publish)
    model_path = installer.on_start()            # at every daemon start (counts probation starts / crashes)
    installer.install_url(url) | installer.install_path(path) | installer.install_bundle(path)
    installer.maybe_commit(); installer.report_unhealthy(reason); installer.mark_clean_shutdown()

Modules: :mod:`~agent.ota.trust` (ngclient + time floor), :mod:`~agent.ota.fetchers` (HTTP, directory,
memory, the seam for MQTT), :mod:`~agent.ota.bundle` (archive vetting), :mod:`~agent.ota.state` (the
persisted journal), :mod:`~agent.ota.health`, :mod:`~agent.ota.installer`, :mod:`~agent.ota.cli`.
Errors: see :mod:`agent.ota.errors`.
"""

from __future__ import annotations

from agent.ota.config import DeviceConfig, HealthCheckConfig, OtaConfig, OtaLimits, ProbationConfig
from agent.ota.errors import (
    BundleError,
    HealthCheckFailed,
    OtaError,
    ReleaseRejected,
    StateError,
    TransportError,
    VerificationError,
)
from agent.ota.fetchers import (
    DirectoryFetcher,
    Fetcher,
    HttpFetcher,
    MemoryFetcher,
    StagedFile,
    TooSlowError,
    TransferPace,
)
from agent.ota.installer import FAULT_POINTS, Installer, OtaEvent, ServingContext, channel_target

__all__ = [
    "FAULT_POINTS",
    "BundleError",
    "DeviceConfig",
    "DirectoryFetcher",
    "Fetcher",
    "HealthCheckConfig",
    "HealthCheckFailed",
    "HttpFetcher",
    "Installer",
    "MemoryFetcher",
    "OtaConfig",
    "OtaError",
    "OtaEvent",
    "OtaLimits",
    "ProbationConfig",
    "ReleaseRejected",
    "ServingContext",
    "StagedFile",
    "StateError",
    "TooSlowError",
    "TransferPace",
    "TransportError",
    "VerificationError",
    "channel_target",
]
