"""Pieces every stage shares: timing constants, the model in force (:class:`ModelInfo`), the quality
figures the rules thread publishes, thumbnails for near-duplicate checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt
import structlog

from agent.core.triage import thumbnail_size
from agent.engine.detector import Detector
from agent.protocol.models import (
    ModelRef,
    SyntheticFrameRef,
)
from agent.sources.frame import SyntheticOrigin

log = structlog.get_logger(__name__)


STEP_BUDGET_S = 0.05
"""Longest run of batches in one :meth:`Pipeline.step` call before control returns to the caller."""
FRAME_WAIT_S = 0.02
"""How long one :meth:`Pipeline.step` call waits for a new frame when no camera has one."""

LATENCY_WINDOW = 2048
"""Per-camera latencies kept for p50/p99 (the most recent ones)."""


def _synthetic_ref(origin: Optional[SyntheticOrigin]) -> Optional[SyntheticFrameRef]:
    """The sample's render identity (synthetic camera only), so the cloud's oracle can re-render the frame."""
    if origin is None:
        return None
    return SyntheticFrameRef(
        domain=origin.domain, seed=origin.seed, index=origin.index, width=origin.width, height=origin.height
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """``q``-th percentile (0..100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


THUMBNAIL_OVERSAMPLING = 16
"""Source pixels per thumbnail pixel (each way) averaged by :func:`near_duplicate_thumbnail`."""


def near_duplicate_thumbnail(image: npt.NDArray[Any], hash_size: int) -> npt.NDArray[Any]:
    """The ``(hash_size, hash_size + 1)`` grayscale thumbnail of a BGR ``(H, W, 3)`` or grey ``(H, W)`` frame
    for the triage's difference hash.

    Converting a whole 1080p frame to grey and area-averaging it down to 9 x 8 pixels costs about 5 ms, as
    much as the INT8 demo model itself; a dHash needs far fewer samples. So the frame is first sampled on a
    regular grid of ``THUMBNAIL_OVERSAMPLING`` points per thumbnail pixel each way (about 20 k pixels of a
    1080p frame are read), and only that grid is converted and averaged (about 0.2 ms).
    Fewer points alias the belt's texture and noise: at 4 per pixel, consecutive frames of one scene
    already differ by up to 8 of 64 bits, past the triage's ``max_distance`` of 4; at 16 they differ by
    at most 2, as with the whole-frame average.
    """
    import cv2

    size = thumbnail_size(hash_size)  # (width, height), OpenCV order
    height, width = int(image.shape[0]), int(image.shape[1])
    step = max(1, min(height // (size[1] * THUMBNAIL_OVERSAMPLING), width // (size[0] * THUMBNAIL_OVERSAMPLING)))
    # The grid is image[::step, ::step] without its last partial row/column. Nearest-neighbour resizing by
    # an exact integer factor picks exactly those pixels, in C and without the GIL: twice as fast as numpy's
    # strided copy of 3-byte pixels, and the rules thread holds the GIL for less (see _RulesStage).
    rows, cols = max(1, height // step), max(1, width // step)
    cropped = image[: rows * step, : cols * step]
    grid = cv2.resize(cropped, (cols, rows), interpolation=cv2.INTER_NEAREST) if step > 1 else cropped
    gray = cv2.cvtColor(grid, cv2.COLOR_BGR2GRAY) if grid.ndim == 3 else grid
    return np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA))


@dataclass(frozen=True)
class ModelInfo:
    """Lineage of the model in use: release name and version (OTA, or the file's metadata) and file hash."""

    name: str
    version: str
    sha256: str

    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, sha256=self.sha256)

    @classmethod
    def of(cls, detector: Detector, name: Optional[str] = None, version: Optional[str] = None) -> ModelInfo:
        described = detector.describe()
        return cls(
            name=(name or detector.model.path.stem or "model")[:128],
            version=(version or str(described.get("version") or "unversioned"))[:64],
            sha256=detector.model.sha256,
        )


@dataclass(frozen=True)
class QualitySnapshot:
    """What the active model did since it started serving (all cameras): published after every batch by the
    thread that runs the rules, read by the status task. Frozen: readers never see it change."""

    model_sha256: str
    since_wall: float
    frames: int = 0
    detections: int = 0
    confidence_sum: float = 0.0
    alerts: int = 0
    uncertain_frames: int = 0

    def add(self, detections: int, confidence_sum: float, alerts: int, uncertain: int) -> QualitySnapshot:
        return dataclasses.replace(
            self,
            frames=self.frames + 1,
            detections=self.detections + detections,
            confidence_sum=self.confidence_sum + confidence_sum,
            alerts=self.alerts + alerts,
            uncertain_frames=self.uncertain_frames + uncertain,
        )
