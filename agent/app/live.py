"""What changes while the daemon runs: the one mutable record the services below the daemon read.

The event loop is the only writer of :class:`LiveState` (a reload replaces ``config``, the first model or a
swap replaces ``pipeline``, the camera listeners update ``camera_status``), with one exception named below:
the OTA worker records its latest event. Other threads read attributes: each is a reference replaced
whole, never changed in place, so a reader sees the old value or the new one.

The parts that do not change once started (spool, link, writer, OTA service, servers) are the daemon's
frozen record (``agent.daemon.assemble.Parts``); services take the parts they use as arguments and this
record for the rest, never the daemon itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import structlog

from agent.config import AgentConfig
from agent.ota.installer import OtaEvent, ServingContext
from agent.rules_config import class_needs
from agent.sources.camera import CameraSource
from agent.sources.frame import SourceStatus

if TYPE_CHECKING:
    from agent.app.pipeline import Pipeline

__all__ = ["LiveState"]

log = structlog.get_logger("agent.daemon")


@dataclass
class LiveState:
    """The running daemon's changing state (see the module docstring)."""

    config: AgentConfig  # replaced by a reload (restart-only sections keep their running values)
    phase: str = "starting"  # starting | running | stopping | stopped
    started_wall: float = field(default_factory=time.time)
    pipeline: Optional[Pipeline] = None  # None until a model runs (a start without one waits for OTA)
    model_path: Optional[Path] = None
    model_error: Optional[str] = None  # why no model runs
    # written at every state change (the cameras' listeners) and every status interval, from each source's
    # own snapshot, so the counters in status.json, MQTT and the metrics are the camera's now
    camera_status: Dict[str, SourceStatus] = field(default_factory=dict)
    sources: Dict[str, CameraSource] = field(default_factory=dict)  # add / remove camera
    errors: List[str] = field(default_factory=list)
    reloads: int = 0
    ota_last: Optional[Dict[str, Any]] = None  # the OTA worker's latest event (written by that thread)

    @property
    def state_dir(self) -> Path:
        return self.config.daemon.state_dir

    @property
    def status_path(self) -> Path:
        return self.state_dir / "status.json"

    def enabled_cameras(self) -> List[str]:
        return [c.name for c in self.config.cameras if c.enabled]

    def serving_context(self) -> ServingContext:
        """For the OTA worker: the factory model and what the alert rules name (read from the current config)."""
        cfg = self.config
        return ServingContext(cfg.model.path, class_needs({c.name: c.rules for c in cfg.cameras if c.enabled}))

    def record_ota_event(self, event: OtaEvent) -> None:
        """(OTA worker) Keep the latest event for the status document (the service publishes the MQTT report)."""
        self.ota_last = {
            "kind": event.kind,
            "release": event.release,
            "reason": event.reason,
            "detail": event.detail,
            "ts": datetime.now(timezone.utc).isoformat(),
        }
        log.info("ota_event", **{k: v for k, v in self.ota_last.items() if v is not None})
