"""A camera inside the pipeline: its source, tracker, alert and triage state (:class:`CameraRuntime`), and the
counters the rules thread writes and publishes as frozen snapshots (:class:`CameraStats`)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Tuple

import structlog

from agent.app.pipeline.common import LATENCY_WINDOW
from agent.core.alerts import AlertEvaluator
from agent.core.detections import Detections
from agent.core.tracker import IouTracker
from agent.core.triage import CameraTriage
from agent.rules_config import CameraRulesConfig
from agent.sources.camera import CameraSource
from agent.sources.config import CameraConfig
from agent.sources.frame import Frame

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CameraStatsSnapshot:
    """One camera's counters at one instant: immutable, so any thread may read it while the next is made."""

    processed: int = 0
    alerts: int = 0
    samples: int = 0
    snapshots: int = 0
    last_processed_wall: Optional[float] = None
    latencies_ms: Tuple[float, ...] = ()
    frame_times: Tuple[float, ...] = ()  # monotonic completion times of the last frames

    def fps(self, now: float, horizon_s: float = 5.0) -> float:
        recent = [t for t in self.frame_times if now - t <= horizon_s]
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1] - recent[0], 1e-6)
        return (len(recent) - 1) / span


ZonePolygon = Tuple[str, Tuple[Tuple[float, float], ...]]


@dataclass(frozen=True)
class PreviewFrame:
    """The newest frame of a camera with what the model saw in it, for the box page's preview.

    The rules thread replaces it after every frame (a reference swap: no copy, no encoding there); the
    console's thread draws and encodes it at its own capped rate. ``zones`` are the alert rules' polygons.
    """

    frame: Frame
    detections: Detections
    names: Dict[int, str]
    zones: Tuple[ZonePolygon, ...]


def zone_polygons(rules: CameraRulesConfig) -> Tuple[ZonePolygon, ...]:
    """Every zone named by the camera's alert rules, once each."""
    seen: Dict[str, ZonePolygon] = {}
    for rule in rules.alerts:
        for zone in rule.zones:
            seen.setdefault(zone.name, (zone.name, tuple((float(x), float(y)) for x, y in zone.points)))
    return tuple(seen.values())


@dataclass
class CameraStats:
    """Counters of one camera as the pipeline sees it, written by the rules thread only.

    Other threads (status task, MQTT link, OTA worker, metrics) read :attr:`snapshot`, a frozen copy the
    writer replaces after every frame: they never iterate a deque the writer is appending to (which raised
    "deque mutated during iteration", killed the status task and made a healthy release look like a crash).
    """

    processed: int = 0
    alerts: int = 0
    samples: int = 0
    snapshots: int = 0
    last_processed_wall: Optional[float] = None
    latencies_ms: Deque[float] = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    fps_window: Deque[float] = field(default_factory=lambda: collections.deque(maxlen=256))
    snapshot: CameraStatsSnapshot = field(default_factory=CameraStatsSnapshot)

    def publish(self) -> None:
        """Writer thread: make the current counters visible to readers (one reference swap)."""
        self.snapshot = CameraStatsSnapshot(
            self.processed,
            self.alerts,
            self.samples,
            self.snapshots,
            self.last_processed_wall,
            tuple(self.latencies_ms),
            tuple(self.fps_window),
        )


class CameraRuntime:
    """A camera's source and its per-camera state (tracker, alert streaks, triage). Owned by the inference
    thread once registered."""

    def __init__(self, config: CameraConfig, source: CameraSource, class_names: List[str]) -> None:
        self.config = config
        self.source = source
        self.rules: CameraRulesConfig = config.rules
        self.tracker = IouTracker(self.rules.tracker.to_core())
        self.alerts = AlertEvaluator(config.name, self.rules.alert_rules(class_names))
        self.triage = CameraTriage(config.name, self.rules.triage.to_core())
        self.last_index = -1
        self.stale_frames = 0  # written by the inference thread only; frames older than the stall limit
        self.stats = CameraStats()
        self.snapshot_requests: List[str] = []
        self.zones = zone_polygons(self.rules)
        self.preview: Optional[PreviewFrame] = None  # written by the rules thread, read by the console

    @property
    def name(self) -> str:
        return self.config.name

    def apply_rules(self, rules: CameraRulesConfig, class_names: List[str]) -> None:
        """New rules (reload, set_thresholds, a model with other class names). Raises before changing
        anything when a rule names an unknown class. Flag windows survive."""
        alert_rules = rules.alert_rules(class_names)
        windows = self.triage.flag_windows
        if rules.tracker != self.rules.tracker:
            self.tracker = IouTracker(rules.tracker.to_core())
        self.alerts = AlertEvaluator(self.name, alert_rules)
        if rules.triage != self.rules.triage:
            self.triage = CameraTriage(self.name, rules.triage.to_core())
            for window in windows:
                self.triage.add_flag_window(window)
        self.rules = rules
        self.zones = zone_polygons(rules)
