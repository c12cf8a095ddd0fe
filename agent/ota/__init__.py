"""Signed over-the-air model updates: TUF trust, transports, A/B slots, health check, probation, rollback.

Public surface::

    from agent.ota import Installer, OtaConfig, OtaEvent
    installer = Installer(config, on_event=publish)
    model_path = installer.on_start()            # at every daemon start (counts probation starts / crashes)
    installer.install_url(url) | installer.install_path(path) | installer.install_bundle(path)
    installer.install_or_queue(path)             # `ota install PATH`: queued while a release is on probation
    installer.mark_serving(slot)                 # the daemon runs a trial's model now: its probation counts
    installer.install_queued()                   # once the trial has ended
    installer.maybe_commit(); installer.report_unhealthy(reason); installer.mark_clean_shutdown()

Modules: :mod:`~agent.ota.trust` (ngclient + time floor), :mod:`~agent.ota.fetchers` (HTTP, directory,
memory, the seam for MQTT), :mod:`~agent.ota.bundle` (archive vetting), :mod:`~agent.ota.state` (the
persisted journal), :mod:`~agent.ota.probation` (crash / power-loss / served-time rules, pure),
:mod:`~agent.ota.health`, :mod:`~agent.ota.installer`, :mod:`~agent.ota.cli`.
Errors: see :mod:`agent.ota.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agent.ota.config import DeviceConfig, HealthCheckConfig, ModelUpdatesConfig, OtaConfig, OtaLimits, ProbationConfig
from agent.ota.errors import (
    BundleError,
    HealthCheckFailed,
    InProbation,
    OtaError,
    ReleaseRejected,
    StateError,
    TransportError,
    VerificationError,
)

if TYPE_CHECKING:  # the real types for mypy and readers; at run time they load on first use (below)
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

# fetchers pull in requests, the installer pulls in tuf: loading the agent's configuration (which holds
# OtaConfig) must not import them, so they load when first named.
_LAZY = {
    "DirectoryFetcher": "agent.ota.fetchers",
    "Fetcher": "agent.ota.fetchers",
    "HttpFetcher": "agent.ota.fetchers",
    "MemoryFetcher": "agent.ota.fetchers",
    "StagedFile": "agent.ota.fetchers",
    "TooSlowError": "agent.ota.fetchers",
    "TransferPace": "agent.ota.fetchers",
    "FAULT_POINTS": "agent.ota.installer",
    "Installer": "agent.ota.installer",
    "OtaEvent": "agent.ota.installer",
    "ServingContext": "agent.ota.installer",
    "channel_target": "agent.ota.installer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent.ota' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "FAULT_POINTS",
    "BundleError",
    "DeviceConfig",
    "DirectoryFetcher",
    "Fetcher",
    "HealthCheckConfig",
    "HealthCheckFailed",
    "HttpFetcher",
    "InProbation",
    "Installer",
    "MemoryFetcher",
    "ModelUpdatesConfig",
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
