"""A small IoU tracker, and the temporal-inconsistency events that triage feeds on.

One tracker per camera. Each frame's detections are matched to the live tracks greedily by IoU (the best
pair first; no Hungarian step — at the handful of objects an industrial camera sees, greedy IoU matching is
what SORT-style trackers do in practice without a motion model). Matching is class-agnostic by default so a
box that changes class keeps its track and the change becomes visible; ``class_agnostic=False`` only matches
boxes of the same class.

Events (what makes a frame interesting for retraining):

- ``FLICKER``     a confirmed track (at least ``confirm_hits`` hits) was missing for 1..``flicker_max_gap``
                  frames and is found again: the model lost an object that was there all along.
- ``DIED_YOUNG``  a track that reached ``confident`` confidence once died (``max_misses`` frames unseen)
                  before it was confirmed: likely a confident false positive.
- ``CLASS_FLIP``  a track's detection changed class from one frame to the next (class-agnostic mode only).

Pure numpy; time is passed in. Not thread-safe: one owner per tracker.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

from agent.core.detections import Detections
from agent.core.nms import box_iou


@dataclass(frozen=True)
class TrackerParams:
    """Tracker thresholds; see the module docstring for the events they drive."""

    iou_threshold: float = 0.3
    max_misses: int = 5
    confirm_hits: int = 3
    flicker_max_gap: int = 3
    confident: float = 0.5
    class_agnostic: bool = True
    class_history: int = 8

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_misses < 0:
            raise ValueError(f"max_misses must be >= 0, got {self.max_misses}")
        if self.confirm_hits < 1:
            raise ValueError(f"confirm_hits must be >= 1, got {self.confirm_hits}")
        if not 0 <= self.flicker_max_gap <= self.max_misses:
            raise ValueError(
                f"flicker_max_gap must be in [0, max_misses={self.max_misses}], got {self.flicker_max_gap}"
            )
        if self.class_history < 1:
            raise ValueError(f"class_history must be >= 1, got {self.class_history}")


class TrackEventKind(str, Enum):
    FLICKER = "flicker"
    DIED_YOUNG = "died_young"
    CLASS_FLIP = "class_flip"


@dataclass(frozen=True)
class TrackEvent:
    """Something temporally inconsistent about one track.

    Attributes:
        kind: what happened.
        track_id: the track.
        frame_index: the tracker's frame counter when it was noticed (0 for the first ``update``).
        time: the time passed to that ``update``.
        class_id: the track's class now (for ``CLASS_FLIP``: the new class).
        previous_class_id: for ``CLASS_FLIP`` the class before the flip, else ``None``.
        gap_frames: for ``FLICKER`` how many frames the track was missing; for ``DIED_YOUNG`` the misses
            that killed it; else 0.
        hits: frames the track was matched in, including this one.
        max_confidence: the highest confidence the track ever had.
        box: the track's last matched box, ``(4,)`` xyxy float32.
    """

    kind: TrackEventKind
    track_id: int
    frame_index: int
    time: float
    class_id: int
    previous_class_id: Optional[int]
    gap_frames: int
    hits: int
    max_confidence: float
    box: Tuple[float, float, float, float]


@dataclass
class Track:
    """A live track. Read it; only the tracker changes it."""

    track_id: int
    box: npt.NDArray[Any]
    confidence: float
    last_class_id: int
    first_seen: float
    last_seen: float
    hits: int = 1
    misses: int = 0
    age: int = 1
    max_confidence: float = 0.0
    confirmed: bool = False
    class_votes: Deque[int] = field(default_factory=deque)

    @property
    def class_id(self) -> int:
        """The majority class over the recent history; ties go to the most recent of the tied classes."""
        counts = Counter(self.class_votes)
        best = max(counts.values())
        for cls in reversed(self.class_votes):
            if counts[cls] == best:
                return cls
        return self.last_class_id  # pragma: no cover - class_votes is never empty


@dataclass(frozen=True)
class TrackerUpdate:
    """Result of one ``update``.

    Attributes:
        track_ids: ``(N,)`` int64, the track id of each input detection (every detection gets one).
        events: events noticed in this frame, in the order they happened.
    """

    track_ids: npt.NDArray[Any]
    events: Tuple[TrackEvent, ...]


class IouTracker:
    """Greedy IoU tracker; see the module docstring."""

    def __init__(self, config: Optional[TrackerParams] = None) -> None:
        self.config = config or TrackerParams()
        self._tracks: List[Track] = []
        self._next_id = 1
        self._frame_index = -1

    @property
    def tracks(self) -> Tuple[Track, ...]:
        """Live tracks (matched this frame or missing for at most ``max_misses`` frames)."""
        return tuple(self._tracks)

    @property
    def frame_index(self) -> int:
        """Index of the last frame passed to ``update`` (-1 before the first)."""
        return self._frame_index

    def reset(self) -> None:
        """Forget every track (e.g. after the camera reconnected or the model changed); ids keep counting."""
        self._tracks = []

    def update(self, detections: Detections, now: float) -> TrackerUpdate:
        """Match one frame's detections to the tracks; ``now`` is the frame's capture time in seconds."""
        cfg = self.config
        self._frame_index += 1
        events: List[TrackEvent] = []
        n = len(detections)
        track_ids = np.full((n,), -1, np.int64)
        boxes = np.asarray(detections.xyxy, np.float32).reshape(-1, 4)
        confs = np.asarray(detections.confidence, np.float32).reshape(-1)
        classes = np.asarray(detections.class_id, np.int64).reshape(-1)

        for track in self._tracks:
            track.age += 1

        matched_tracks = set()
        if self._tracks and n:
            track_boxes = np.stack([t.box for t in self._tracks])
            iou = box_iou(track_boxes, boxes)  # (T, N)
            if not cfg.class_agnostic:
                track_classes = np.asarray([t.last_class_id for t in self._tracks], np.int64)
                iou = np.where(track_classes[:, None] == classes[None, :], iou, 0.0)
            rows, cols = np.nonzero(iou >= cfg.iou_threshold)
            order = np.argsort(-iou[rows, cols], kind="stable")
            for t_index, d_index in zip(rows[order].tolist(), cols[order].tolist()):
                if t_index in matched_tracks or track_ids[d_index] >= 0:
                    continue
                matched_tracks.add(t_index)
                track = self._tracks[t_index]
                track_ids[d_index] = track.track_id
                self._match(
                    track,
                    box=boxes[d_index],
                    confidence=float(confs[d_index]),
                    class_id=int(classes[d_index]),
                    now=now,
                    events=events,
                )

        survivors: List[Track] = []
        for t_index, track in enumerate(self._tracks):
            if t_index in matched_tracks:
                survivors.append(track)
                continue
            track.misses += 1
            if track.misses <= cfg.max_misses:
                survivors.append(track)
                continue
            if not track.confirmed and track.max_confidence >= cfg.confident:
                events.append(self._event(TrackEventKind.DIED_YOUNG, track, now, gap=track.misses))
        self._tracks = survivors

        for d_index in np.flatnonzero(track_ids < 0).tolist():
            track = Track(
                track_id=self._next_id,
                box=boxes[d_index].copy(),
                confidence=float(confs[d_index]),
                last_class_id=int(classes[d_index]),
                first_seen=now,
                last_seen=now,
                max_confidence=float(confs[d_index]),
                confirmed=cfg.confirm_hits <= 1,
                class_votes=deque([int(classes[d_index])], maxlen=cfg.class_history),
            )
            self._next_id += 1
            self._tracks.append(track)
            track_ids[d_index] = track.track_id
        return TrackerUpdate(track_ids, tuple(events))

    def _match(
        self,
        track: Track,
        *,
        box: npt.NDArray[Any],
        confidence: float,
        class_id: int,
        now: float,
        events: List[TrackEvent],
    ) -> None:
        cfg = self.config
        gap = track.misses
        previous_class = track.last_class_id
        track.box = box.copy()
        track.confidence = confidence
        track.max_confidence = max(track.max_confidence, confidence)
        track.hits += 1
        track.misses = 0
        track.last_seen = now
        track.last_class_id = class_id
        track.class_votes.append(class_id)
        if 0 < gap <= cfg.flicker_max_gap and track.confirmed:
            events.append(self._event(TrackEventKind.FLICKER, track, now, gap=gap))
        if class_id != previous_class:
            events.append(self._event(TrackEventKind.CLASS_FLIP, track, now, previous_class=previous_class))
        if track.hits >= cfg.confirm_hits:
            track.confirmed = True

    def _event(
        self,
        kind: TrackEventKind,
        track: Track,
        now: float,
        gap: int = 0,
        previous_class: Optional[int] = None,
    ) -> TrackEvent:
        x1, y1, x2, y2 = (float(v) for v in track.box)
        return TrackEvent(
            kind=kind,
            track_id=track.track_id,
            frame_index=self._frame_index,
            time=now,
            class_id=track.last_class_id,
            previous_class_id=previous_class,
            gap_frames=gap,
            hits=track.hits,
            max_confidence=track.max_confidence,
            box=(x1, y1, x2, y2),
        )


def events_by_track(events: Tuple[TrackEvent, ...]) -> Dict[int, List[TrackEvent]]:
    """Group events by track id (insertion order kept)."""
    out: Dict[int, List[TrackEvent]] = {}
    for event in events:
        out.setdefault(event.track_id, []).append(event)
    return out
