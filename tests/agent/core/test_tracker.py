"""IoU tracker: matching, ids, and the temporal-inconsistency events triage uses."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.detections import Detections
from agent.core.tracker import IouTracker, TrackerParams, TrackEventKind

Box = Tuple[float, float, float, float]


def dets(*items: Tuple[Box, float, int]) -> Detections:
    if not items:
        return Detections.empty()
    return Detections.from_arrays([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])


A: Box = (10, 10, 50, 50)
A_MOVED: Box = (14, 12, 54, 52)  # IoU with A ~0.75
B: Box = (200, 200, 260, 280)


def run(tracker: IouTracker, frames: Sequence[Detections]) -> List[Tuple[np.ndarray, list]]:
    out = []
    for t, frame in enumerate(frames):
        update = tracker.update(frame, now=float(t))
        out.append((update.track_ids, list(update.events)))
    return out


def test_same_object_keeps_its_id_and_new_objects_get_new_ones() -> None:
    tracker = IouTracker()
    (ids0, _), (ids1, _), (ids2, _) = run(
        tracker,
        [dets((A, 0.9, 0)), dets((A_MOVED, 0.9, 0), (B, 0.8, 1)), dets((B, 0.8, 1), (A_MOVED, 0.9, 0))],
    )
    assert ids0.tolist() == [1]
    assert ids1.tolist() == [1, 2]
    assert ids2.tolist() == [2, 1]


def test_greedy_matching_gives_the_best_overlap_to_the_right_track() -> None:
    tracker = IouTracker(TrackerParams(iou_threshold=0.1))
    tracker.update(dets(((0, 0, 100, 100), 0.9, 0), ((90, 0, 190, 100), 0.9, 0)), now=0.0)
    # Both new boxes overlap both tracks; each must go to the track it overlaps most.
    update = tracker.update(dets(((85, 0, 185, 100), 0.9, 0), ((5, 0, 105, 100), 0.9, 0)), now=1.0)
    assert update.track_ids.tolist() == [2, 1]


@pytest.mark.parametrize(
    ("params", "pattern", "expected_kinds"),
    [
        # confirmed (3 hits), missing 2 frames, back: flicker with gap 2
        (TrackerParams(), "AAA..A", [(5, TrackEventKind.FLICKER, 2)]),
        # missing 4 frames is beyond flicker_max_gap=3: an occlusion, not a flicker
        (TrackerParams(), "AAA....A", []),
        # not confirmed yet (2 hits < 3): no flicker
        (TrackerParams(), "AA.A", []),
        # confident (0.9 >= 0.5), 2 hits, then gone for max_misses+1 frames: died young at frame 2+6
        (TrackerParams(), "AA......", [(7, TrackEventKind.DIED_YOUNG, 6)]),
        # confirmed tracks do not die young
        (TrackerParams(), "AAA......", []),
        (TrackerParams(max_misses=1, flicker_max_gap=1), "AAA.A", [(4, TrackEventKind.FLICKER, 1)]),
        (
            TrackerParams(max_misses=1, flicker_max_gap=1, confirm_hits=5),
            "A..",
            [(2, TrackEventKind.DIED_YOUNG, 2)],
        ),
    ],
)
def test_flicker_and_died_young(params: TrackerParams, pattern: str, expected_kinds: list) -> None:
    tracker = IouTracker(params)
    frames = [dets((A, 0.9, 0)) if c == "A" else Detections.empty() for c in pattern]
    events = [e for _, evs in run(tracker, frames) for e in evs]
    assert [(e.frame_index, e.kind, e.gap_frames) for e in events] == expected_kinds
    assert all(e.track_id == 1 for e in events)


def test_low_confidence_track_dying_young_is_not_reported() -> None:
    tracker = IouTracker()
    frames = [dets((A, 0.3, 0))] + [Detections.empty()] * 7
    assert [e for _, evs in run(tracker, frames) for e in evs] == []


def test_class_flip_is_reported_once_per_change_and_majority_class_kept() -> None:
    tracker = IouTracker()
    classes = [0, 0, 0, 1, 1, 0]
    frames = [dets((A, 0.8, c)) for c in classes]
    results = run(tracker, frames)
    flips = [(e.frame_index, e.previous_class_id, e.class_id) for _, evs in results for e in evs]
    assert flips == [(3, 0, 1), (5, 1, 0)]
    assert {int(ids[0]) for ids, _ in results} == {1}
    assert tracker.tracks[0].class_id == 0  # 4 votes of 0 against 2 of 1


def test_per_class_mode_splits_tracks_instead_of_flipping() -> None:
    tracker = IouTracker(TrackerParams(class_agnostic=False))
    results = run(tracker, [dets((A, 0.8, 0)), dets((A, 0.8, 1))])
    assert results[1][0].tolist() == [2]
    assert results[1][1] == []


def test_reset_forgets_tracks_but_ids_stay_unique() -> None:
    tracker = IouTracker()
    tracker.update(dets((A, 0.9, 0)), now=0.0)
    tracker.reset()
    assert tracker.update(dets((A, 0.9, 0)), now=1.0).track_ids.tolist() == [2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"iou_threshold": 0.0},
        {"max_misses": -1},
        {"confirm_hits": 0},
        {"flicker_max_gap": 9},
        {"class_history": 0},
    ],
)
def test_invalid_params_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrackerParams(**kwargs)


coords = st.floats(0, 500, allow_nan=False, width=32)


@st.composite
def frames_of_boxes(draw: st.DrawFn) -> List[Detections]:
    frames = []
    for _ in range(draw(st.integers(1, 12))):
        n = draw(st.integers(0, 6))
        boxes = []
        for _ in range(n):
            x1, y1 = draw(coords), draw(coords)
            w, h = draw(st.floats(0, 80, width=32)), draw(st.floats(0, 80, width=32))  # degenerate allowed
            boxes.append((x1, y1, x1 + w, y1 + h))
        conf = draw(st.lists(st.floats(0, 1, width=32), min_size=n, max_size=n))
        cls = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
        frames.append(Detections.from_arrays(np.reshape(boxes, (-1, 4)), conf, cls))
    return frames


@settings(max_examples=60, deadline=None)
@given(frames_of_boxes(), st.booleans())
def test_random_boxes_never_crash_and_ids_are_unique_per_frame(frames: List[Detections], agnostic: bool) -> None:
    tracker = IouTracker(TrackerParams(class_agnostic=agnostic, max_misses=2, flicker_max_gap=1))
    seen_ids = set()
    for t, frame in enumerate(frames):
        update = tracker.update(frame, now=float(t))
        ids = update.track_ids.tolist()
        assert len(ids) == len(frame)
        assert all(i >= 1 for i in ids)
        assert len(set(ids)) == len(ids)  # no two detections of a frame share a track
        live = [t.track_id for t in tracker.tracks]
        assert len(set(live)) == len(live)
        seen_ids.update(ids)
        for event in update.events:
            assert event.track_id in seen_ids
    assert max(seen_ids, default=0) <= sum(len(f) for f in frames)
