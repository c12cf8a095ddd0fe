"""Misdetection triage: which frames go back to the trainer, and why.

Strategies (each configurable, each rate-limited by its own token bucket per camera):

- ``uncertain``     a detection with ``lo <= confidence < hi``: the model is unsure.
- ``inconsistent``  a tracker event (flicker, confident track dying young, class flip; see
                    :mod:`agent.core.tracker`): the model contradicts itself over time.
- ``flagged``       the frame falls in an operator/PLC flag window ``[start, end)`` of this camera (added by
                    a command); frames inside a window are sampled at most once per ``sample_interval_s``.
- ``random``        probability ``p`` per frame from a seeded generator: an unbiased monitoring sample.

A frame can trigger several strategies; all are reported as its reasons (lineage), and the frame is sent when
at least one of them has a token. Only one token is spent, from the first strategy with one in the order
flagged, inconsistent, uncertain, random (``TriageDecision.sent_for``), so a frame never pays twice.

Near-duplicate suppression runs before the buckets: the caller passes a small grayscale thumbnail of the
frame (``cv2.resize(gray, thumbnail_size(hash_size), interpolation=cv2.INTER_AREA)``), it is reduced to a
difference hash, and a frame whose hash is within ``max_distance`` bits of a frame sent in the last
``memory_s`` seconds is not sent (a static scene with a steady misdetection is sent once, not once per
rate-limit period). Frames inside a flag window are exempt by default: an operator asked for them.

Pure: numpy and the standard library; times are passed in (``now``: monotonic seconds for rates and memory;
``wall_time``: epoch seconds, the clock flag windows are given in). One :class:`CameraTriage` per camera.
"""

from __future__ import annotations

import math
import zlib
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Deque, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import numpy as np
import numpy.typing as npt

from agent.core.detections import Detections
from agent.core.tracker import TrackEvent, TrackEventKind

# ---------------------------------------------------------------------------------------------- rate limits


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_minute`` on average, with bursts of up to ``burst``."""

    per_minute: float = 6.0
    burst: int = 3

    def __post_init__(self) -> None:
        if not (self.per_minute >= 0 and math.isfinite(self.per_minute)):
            raise ValueError(f"per_minute must be a finite number >= 0, got {self.per_minute}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")


class TokenBucket:
    """A token bucket with time passed in; starts full."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._last: Optional[float] = None

    def available(self, now: float) -> float:
        """Tokens available at ``now`` (refills first); a clock going backwards refills nothing."""
        if self._last is not None and now > self._last:
            self._tokens = min(
                float(self.limit.burst), self._tokens + (now - self._last) * self.limit.per_minute / 60.0
            )
        if self._last is None or now > self._last:
            self._last = now
        return self._tokens

    def try_take(self, now: float) -> bool:
        """Take one token if there is one."""
        if self.available(now) >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# --------------------------------------------------------------------------------------- near duplicates


def thumbnail_size(hash_size: int = 8) -> Tuple[int, int]:
    """The ``(width, height)`` to pass to ``cv2.resize`` for :func:`difference_hash` (OpenCV order)."""
    return hash_size + 1, hash_size


def difference_hash(thumbnail: npt.NDArray[Any], tolerance: float = 2.0) -> int:
    """Difference hash (dHash) of a ``(H, H + 1)`` grayscale thumbnail: ``H * H`` bits as an int.

    Bit ``(r, c)`` is set when pixel ``(r, c + 1)`` is brighter than ``(r, c)`` by more than ``tolerance``
    grey levels. The tolerance keeps sensor noise in flat areas from flipping bits (plain dHash compares with
    ``>`` and turns noise on a grey wall into random bits).
    """
    thumb = np.asarray(thumbnail, np.float32)
    if thumb.ndim != 2 or thumb.shape[1] != thumb.shape[0] + 1 or thumb.shape[0] < 1:
        raise ValueError(f"thumbnail must be a 2-D (H, H + 1) grayscale array, got shape {thumb.shape}")
    bits = (thumb[:, 1:] - thumb[:, :-1]) > tolerance
    value = 0
    for bit in bits.reshape(-1).tolist():
        value = (value << 1) | int(bit)
    return value


def hamming_distance(a: int, b: int) -> int:
    """Number of differing bits (``int.bit_count`` is Python 3.10+)."""
    return bin(a ^ b).count("1")


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class UncertaintyPolicy:
    enabled: bool = True
    lo: float = 0.25
    hi: float = 0.5
    rate: RateLimit = RateLimit(6.0, 3)

    def __post_init__(self) -> None:
        if not 0.0 <= self.lo < self.hi <= 1.0:
            raise ValueError(f"uncertainty band needs 0 <= lo < hi <= 1, got lo={self.lo} hi={self.hi}")


@dataclass(frozen=True)
class InconsistencyPolicy:
    enabled: bool = True
    kinds: FrozenSet[TrackEventKind] = frozenset(TrackEventKind)
    rate: RateLimit = RateLimit(6.0, 3)


@dataclass(frozen=True)
class FlagPolicy:
    enabled: bool = True
    sample_interval_s: float = 1.0
    max_windows: int = 64
    rate: RateLimit = RateLimit(60.0, 10)

    def __post_init__(self) -> None:
        if self.sample_interval_s < 0:
            raise ValueError(f"sample_interval_s must be >= 0, got {self.sample_interval_s}")
        if self.max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {self.max_windows}")


@dataclass(frozen=True)
class RandomSamplePolicy:
    enabled: bool = True
    probability: float = 0.001
    seed: int = 0
    rate: RateLimit = RateLimit(1.0, 1)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")


@dataclass(frozen=True)
class NearDuplicatePolicy:
    enabled: bool = True
    hash_size: int = 8
    tolerance: float = 2.0
    max_distance: int = 4
    memory: int = 32
    memory_s: float = 600.0
    exempt_flagged: bool = True

    def __post_init__(self) -> None:
        if self.hash_size < 2:
            raise ValueError(f"hash_size must be >= 2, got {self.hash_size}")
        if self.max_distance < 0 or self.memory < 1 or self.memory_s < 0:
            raise ValueError("max_distance and memory_s must be >= 0 and memory >= 1")


@dataclass(frozen=True)
class TriagePolicy:
    """All strategies of one camera (built from ``agent.rules_config.TriageConfig``)."""

    uncertainty: UncertaintyPolicy = UncertaintyPolicy()
    inconsistency: InconsistencyPolicy = InconsistencyPolicy()
    flagged: FlagPolicy = FlagPolicy()
    random: RandomSamplePolicy = RandomSamplePolicy()
    near_duplicate: NearDuplicatePolicy = NearDuplicatePolicy()

    def thresholds(self) -> Dict[str, float]:
        """The numbers in force, flat, for lineage (only enabled strategies)."""
        out: Dict[str, float] = {}
        if self.uncertainty.enabled:
            out["uncertainty.lo"] = self.uncertainty.lo
            out["uncertainty.hi"] = self.uncertainty.hi
        if self.random.enabled:
            out["random.probability"] = self.random.probability
        if self.flagged.enabled:
            out["flagged.sample_interval_s"] = self.flagged.sample_interval_s
        if self.near_duplicate.enabled:
            out["near_duplicate.max_distance"] = float(self.near_duplicate.max_distance)
            out["near_duplicate.hash_bits"] = float(self.near_duplicate.hash_size**2)
        return out


# ------------------------------------------------------------------------------------------------ output


class TriageReason(str, Enum):
    FLAGGED = "flagged"
    INCONSISTENT = "inconsistent"
    UNCERTAIN = "uncertain"
    RANDOM = "random"


_PRIORITY = (TriageReason.FLAGGED, TriageReason.INCONSISTENT, TriageReason.UNCERTAIN, TriageReason.RANDOM)


@dataclass(frozen=True)
class FlagWindow:
    """An operator/PLC request: send frames of ``camera`` captured in ``[start, end)`` (epoch seconds)."""

    camera: str
    start: float
    end: float
    note: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end)) or self.end <= self.start:
            raise ValueError(f"flag window needs finite start < end, got [{self.start}, {self.end})")


@dataclass(frozen=True)
class TriageDecision:
    """A frame to send to the trainer, with its lineage.

    Attributes:
        camera, frame_index, time, wall_time: which frame (``time`` monotonic, ``wall_time`` epoch seconds).
        reasons: every strategy the frame triggered, in priority order.
        sent_for: the strategy whose rate-limit token was spent.
        track_ids: tracks involved (uncertain detections' and inconsistent tracks'), sorted.
        detection_indices: indices into the frame's detections of the boxes that made it interesting.
        event_kinds: the tracker event kinds involved (``"flicker"``, ...), sorted.
        flag_window: the window the frame fell in, if any.
        frame_hash: the thumbnail's difference hash, when a thumbnail was given.
        thresholds: the thresholds in force (see ``TriagePolicy.thresholds``).
    """

    camera: str
    frame_index: int
    time: float
    wall_time: float
    reasons: Tuple[TriageReason, ...]
    sent_for: TriageReason
    track_ids: Tuple[int, ...]
    detection_indices: Tuple[int, ...]
    event_kinds: Tuple[str, ...]
    flag_window: Optional[FlagWindow]
    frame_hash: Optional[int]
    thresholds: Dict[str, float] = field(default_factory=dict)


@dataclass
class TriageCounters:
    """What triage did, for metrics: per reason how often it triggered / was sent / was rate-limited."""

    frames: int = 0
    triggered: Dict[str, int] = field(default_factory=dict)
    sent: Dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    near_duplicates: int = 0
    windows_dropped: int = 0


# --------------------------------------------------------------------------------------------- the policy


class CameraTriage:
    """Triage state of one camera: call :meth:`decide` once per processed frame, in order."""

    def __init__(self, camera: str, config: Optional[TriagePolicy] = None) -> None:
        self.camera = camera
        self.config = config or TriagePolicy()
        cfg = self.config
        self._buckets: Dict[TriageReason, TokenBucket] = {
            TriageReason.FLAGGED: TokenBucket(cfg.flagged.rate),
            TriageReason.INCONSISTENT: TokenBucket(cfg.inconsistency.rate),
            TriageReason.UNCERTAIN: TokenBucket(cfg.uncertainty.rate),
            TriageReason.RANDOM: TokenBucket(cfg.random.rate),
        }
        # One generator per camera, seeded from the configured seed and the camera's name, so cameras sample
        # independently and a run is reproducible.
        self._rng = np.random.default_rng([cfg.random.seed, zlib.crc32(camera.encode("utf-8"))])
        self._windows: List[FlagWindow] = []
        self._last_flag_sample: Optional[float] = None
        self._recent: Deque[Tuple[float, int]] = deque(maxlen=cfg.near_duplicate.memory)
        self.counters = TriageCounters()
        self._thresholds = cfg.thresholds()

    # -- flag windows

    @property
    def flag_windows(self) -> Tuple[FlagWindow, ...]:
        return tuple(self._windows)

    def add_flag_window(self, window: FlagWindow) -> None:
        """Add a window; past ``max_windows`` open windows the one ending first is dropped (counted)."""
        if window.camera != self.camera:
            raise ValueError(f"flag window for camera {window.camera!r} given to camera {self.camera!r}")
        self._windows.append(window)
        self._windows.sort(key=lambda w: (w.end, w.start))
        while len(self._windows) > self.config.flagged.max_windows:
            self._windows.pop(0)
            self.counters.windows_dropped += 1

    def _window_at(self, wall_time: float) -> Optional[FlagWindow]:
        self._windows = [w for w in self._windows if w.end > wall_time]  # expired windows go
        for window in self._windows:
            if window.start <= wall_time < window.end:
                return window
        return None

    # -- the decision

    def decide(
        self,
        detections: Detections,
        *,
        now: float,
        wall_time: float,
        frame_index: int,
        track_ids: Optional[npt.NDArray[Any]] = None,
        events: Sequence[TrackEvent] = (),
        thumbnail: Optional[npt.NDArray[Any]] = None,
    ) -> Optional[TriageDecision]:
        """Decide whether this frame goes to the trainer.

        Args:
            detections: the frame's detections.
            now: monotonic seconds (rate limits, duplicate memory, flag sampling interval).
            wall_time: epoch seconds of the capture (flag windows).
            frame_index: the frame's index (copied into the decision).
            track_ids: ``(N,)`` track id per detection, from the tracker's update of this frame.
            events: the tracker's events of this frame.
            thumbnail: ``(H, H + 1)`` grayscale thumbnail for near-duplicate suppression, or ``None``.
        """
        cfg = self.config
        self.counters.frames += 1
        n = len(detections)
        ids = None if track_ids is None else np.asarray(track_ids, np.int64).reshape(-1)
        if ids is not None and ids.shape != (n,):
            raise ValueError(f"track_ids has shape {ids.shape}, expected ({n},)")
        reasons: List[TriageReason] = []
        indices: Set[int] = set()
        involved_tracks: Set[int] = set()
        kinds: Set[str] = set()

        if cfg.uncertainty.enabled and n:
            conf = np.asarray(detections.confidence, np.float32)
            band = np.flatnonzero((conf >= np.float32(cfg.uncertainty.lo)) & (conf < np.float32(cfg.uncertainty.hi)))
            if band.size:
                reasons.append(TriageReason.UNCERTAIN)
                indices.update(band.tolist())
                if ids is not None:
                    involved_tracks.update(ids[band].tolist())

        if cfg.inconsistency.enabled:
            relevant = [e for e in events if e.kind in cfg.inconsistency.kinds]
            if relevant:
                reasons.append(TriageReason.INCONSISTENT)
                kinds.update(e.kind.value for e in relevant)
                event_tracks = {e.track_id for e in relevant}
                involved_tracks.update(event_tracks)
                if ids is not None:
                    indices.update(np.flatnonzero(np.isin(ids, list(event_tracks))).tolist())

        window = self._window_at(wall_time) if cfg.flagged.enabled else None
        if window is not None and (
            self._last_flag_sample is None or now - self._last_flag_sample >= cfg.flagged.sample_interval_s
        ):
            reasons.append(TriageReason.FLAGGED)

        # Drawn on every frame, whatever else happens, so the sample does not depend on the other strategies.
        draw = float(self._rng.random())
        if cfg.random.enabled and draw < cfg.random.probability:
            reasons.append(TriageReason.RANDOM)

        if not reasons:
            return None
        ordered = tuple(r for r in _PRIORITY if r in reasons)
        for reason in ordered:
            self.counters.triggered[reason.value] = self.counters.triggered.get(reason.value, 0) + 1

        frame_hash: Optional[int] = None
        dup_cfg = cfg.near_duplicate
        if dup_cfg.enabled and thumbnail is not None:
            frame_hash = difference_hash(thumbnail, dup_cfg.tolerance)
            exempt = dup_cfg.exempt_flagged and TriageReason.FLAGGED in ordered
            if not exempt and self._is_near_duplicate(frame_hash, now):
                self.counters.near_duplicates += 1
                return None

        sent_for = next((r for r in ordered if self._buckets[r].try_take(now)), None)
        if sent_for is None:
            self.counters.rate_limited += 1
            return None

        self.counters.sent[sent_for.value] = self.counters.sent.get(sent_for.value, 0) + 1
        if TriageReason.FLAGGED in ordered:
            self._last_flag_sample = now
        if frame_hash is not None:
            self._recent.append((now, frame_hash))
        return TriageDecision(
            camera=self.camera,
            frame_index=frame_index,
            time=now,
            wall_time=wall_time,
            reasons=ordered,
            sent_for=sent_for,
            track_ids=tuple(sorted(int(t) for t in involved_tracks if t >= 0)),
            detection_indices=tuple(sorted(indices)),
            event_kinds=tuple(sorted(kinds)),
            flag_window=window if TriageReason.FLAGGED in ordered else None,
            frame_hash=frame_hash,
            thresholds=dict(self._thresholds),
        )

    def _is_near_duplicate(self, frame_hash: int, now: float) -> bool:
        horizon = now - self.config.near_duplicate.memory_s
        limit = self.config.near_duplicate.max_distance
        return any(t >= horizon and hamming_distance(frame_hash, h) <= limit for t, h in self._recent)
