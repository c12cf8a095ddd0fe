"""Misdetection triage: strategies, rate limits, near-duplicate suppression, lineage."""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

import cv2
import numpy as np
import pytest

from agent.core.detections import Detections
from agent.core.tracker import IouTracker, TrackEventKind
from agent.core.triage import (
    CameraTriage,
    FlagPolicy,
    FlagWindow,
    InconsistencyPolicy,
    NearDuplicatePolicy,
    RandomSamplePolicy,
    RateLimit,
    TokenBucket,
    TriagePolicy,
    TriageReason,
    UncertaintyPolicy,
    difference_hash,
    hamming_distance,
    thumbnail_size,
)
from agent.rules_config import TriageConfig

OFF = TriagePolicy(
    uncertainty=UncertaintyPolicy(enabled=False),
    inconsistency=InconsistencyPolicy(enabled=False),
    flagged=FlagPolicy(enabled=False),
    random=RandomSamplePolicy(enabled=False),
    near_duplicate=NearDuplicatePolicy(enabled=False),
)
UNLIMITED = RateLimit(per_minute=60000, burst=1000)


def dets(*confs: float) -> Detections:
    n = len(confs)
    boxes = [(10.0 + 100 * i, 10.0, 60.0 + 100 * i, 60.0) for i in range(n)]
    return Detections.from_arrays(np.reshape(boxes, (-1, 4)), list(confs), [0] * n)


def decide(triage: CameraTriage, detections: Detections, t: float, **kwargs: object):  # type: ignore[no-untyped-def]
    return triage.decide(detections, now=t, wall_time=1_700_000_000.0 + t, frame_index=int(t), **kwargs)


# --------------------------------------------------------------------------------------------- rate limits


@pytest.mark.parametrize(
    ("limit", "times", "expected"),
    [
        (RateLimit(60, 3), [0, 0, 0, 0], [True, True, True, False]),  # burst of 3
        (RateLimit(60, 1), [0, 0.5, 1.0, 1.5, 2.0], [True, False, True, False, True]),  # 1 per s
        (RateLimit(0, 2), [0, 10, 1000], [True, True, False]),  # burst only, never refills
        (RateLimit(60, 1), [5, 4, 4.5, 6], [True, False, False, True]),  # clock going back refills nothing
    ],
)
def test_token_bucket(limit: RateLimit, times: List[float], expected: List[bool]) -> None:
    bucket = TokenBucket(limit)
    assert [bucket.try_take(t) for t in times] == expected


# --------------------------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    ("confs", "expected_indices"),
    [((0.9, 0.1), None), ((0.25,), (0,)), ((0.5,), None), ((0.49, 0.9, 0.3), (0, 2)), ((), None)],
)
def test_uncertainty_band_is_half_open(confs: tuple, expected_indices: Optional[tuple]) -> None:
    policy = replace(OFF, uncertainty=UncertaintyPolicy(True, 0.25, 0.5, UNLIMITED))
    decision = decide(CameraTriage("cam", policy), dets(*confs), 0.0, track_ids=np.arange(1, len(confs) + 1))
    if expected_indices is None:
        assert decision is None
    else:
        assert decision is not None
        assert decision.reasons == (TriageReason.UNCERTAIN,)
        assert decision.detection_indices == expected_indices
        assert decision.track_ids == tuple(i + 1 for i in expected_indices)
        assert decision.thresholds == {"uncertainty.lo": 0.25, "uncertainty.hi": 0.5}


def test_uncertainty_rate_limit_counts_what_it_refused() -> None:
    policy = replace(OFF, uncertainty=UncertaintyPolicy(True, 0.25, 0.5, RateLimit(per_minute=6, burst=2)))
    triage = CameraTriage("cam", policy)
    sent = [decide(triage, dets(0.3), t * 1.0) is not None for t in range(12)]
    # burst 2 at t=0,1; one token per 10 s: the next at t=10
    assert sent == [True, True] + [False] * 8 + [True, False]
    assert triage.counters.rate_limited == 9
    assert triage.counters.sent == {"uncertain": 3}
    assert triage.counters.triggered == {"uncertain": 12}


def test_inconsistency_from_a_real_tracker_flicker() -> None:
    policy = replace(OFF, inconsistency=InconsistencyPolicy(True, frozenset(TrackEventKind), UNLIMITED))
    triage = CameraTriage("cam", policy)
    tracker = IouTracker()
    frames = [dets(0.9), dets(0.9), dets(0.9), Detections.empty(), dets(0.9)]
    decisions = []
    for t, frame in enumerate(frames):
        update = tracker.update(frame, now=float(t))
        decisions.append(decide(triage, frame, float(t), track_ids=update.track_ids, events=update.events))
    assert decisions[:4] == [None] * 4
    last = decisions[4]
    assert last is not None
    assert last.reasons == (TriageReason.INCONSISTENT,)
    assert last.event_kinds == ("flicker",)
    assert last.track_ids == (1,)
    assert last.detection_indices == (0,)


def test_inconsistency_kinds_filter() -> None:
    policy = replace(OFF, inconsistency=InconsistencyPolicy(True, frozenset({TrackEventKind.CLASS_FLIP}), UNLIMITED))
    triage = CameraTriage("cam", policy)
    tracker = IouTracker()
    frames = [dets(0.9), dets(0.9), dets(0.9), Detections.empty(), dets(0.9)]
    for t, frame in enumerate(frames):
        update = tracker.update(frame, now=float(t))
        assert decide(triage, frame, float(t), track_ids=update.track_ids, events=update.events) is None


def test_flag_windows_sample_frames_inside_only() -> None:
    policy = replace(OFF, flagged=FlagPolicy(True, sample_interval_s=2.0, max_windows=4, rate=UNLIMITED))
    triage = CameraTriage("cam", policy)
    base = 1_700_000_000.0
    triage.add_flag_window(FlagWindow("cam", base + 3, base + 8, note="operator: missed scratch"))
    taken = [t for t in range(12) if decide(triage, Detections.empty(), float(t)) is not None]
    assert taken == [3, 5, 7]  # inside [3, 8), one frame per 2 s
    assert triage.flag_windows == ()  # expired windows are forgotten
    with pytest.raises(ValueError, match="camera 'other'"):
        triage.add_flag_window(FlagWindow("other", base, base + 1))
    with pytest.raises(ValueError, match="start < end"):
        FlagWindow("cam", base + 1, base)


def test_flag_windows_are_bounded_and_drops_counted() -> None:
    triage = CameraTriage("cam", replace(OFF, flagged=FlagPolicy(True, 0.0, max_windows=2, rate=UNLIMITED)))
    for i in range(5):
        triage.add_flag_window(FlagWindow("cam", 10.0 * i, 10.0 * i + 5))
    assert [w.start for w in triage.flag_windows] == [30.0, 40.0]
    assert triage.counters.windows_dropped == 3


def test_random_sample_is_seeded_and_near_its_probability() -> None:
    policy = replace(OFF, random=RandomSamplePolicy(True, probability=0.1, seed=42, rate=UNLIMITED))

    def picks(camera: str) -> List[int]:
        triage = CameraTriage(camera, policy)
        return [t for t in range(2000) if decide(triage, Detections.empty(), float(t)) is not None]

    first = picks("cam")
    assert first == picks("cam")  # reproducible
    assert first != picks("cam2")  # cameras sample independently
    assert 150 <= len(first) <= 250


def test_priority_and_single_token() -> None:
    policy = replace(
        OFF,
        uncertainty=UncertaintyPolicy(True, 0.25, 0.5, RateLimit(60, 1)),
        flagged=FlagPolicy(True, 0.0, 8, RateLimit(60, 1)),
    )
    triage = CameraTriage("cam", policy)
    triage.add_flag_window(FlagWindow("cam", 0.0, 2e9))
    first = decide(triage, dets(0.3), 0.0)
    assert first is not None
    assert first.reasons == (TriageReason.FLAGGED, TriageReason.UNCERTAIN)
    assert first.sent_for is TriageReason.FLAGGED
    assert first.flag_window is not None
    # The flagged bucket is empty now, the uncertainty bucket still full: the next frame goes for it.
    second = decide(triage, dets(0.3), 0.1)
    assert second is not None
    assert second.sent_for is TriageReason.UNCERTAIN
    assert decide(triage, dets(0.3), 0.2) is None


# ----------------------------------------------------------------------------------------- near duplicates


def thumb(image: np.ndarray, hash_size: int = 8) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, thumbnail_size(hash_size), interpolation=cv2.INTER_AREA)


def scene(seed: int, noise: float = 0.0, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((240, 320, 3), 90, np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, 280), rng.integers(0, 200)
        cv2.rectangle(
            image,
            (int(x) + shift, int(y)),
            (int(x) + 40 + shift, int(y) + 40),
            rng.integers(0, 255, 3).tolist(),
            -1,
        )
    if noise:
        image = np.clip(image + np.random.default_rng(seed + 99).normal(0, noise, image.shape), 0, 255).astype(np.uint8)
    return image


def test_difference_hash_is_stable_under_noise_and_differs_between_scenes() -> None:
    base = difference_hash(thumb(scene(1)))
    assert hamming_distance(base, difference_hash(thumb(scene(1, noise=6.0)))) <= 4
    assert hamming_distance(base, difference_hash(thumb(scene(2)))) > 10


def test_flat_image_hash_ignores_noise_thanks_to_tolerance() -> None:
    flat = np.full((8, 9), 128.0)
    noisy = flat + np.random.default_rng(0).uniform(-0.9, 0.9, flat.shape)
    assert difference_hash(noisy, tolerance=2.0) == difference_hash(flat, tolerance=2.0) == 0
    assert difference_hash(noisy, tolerance=0.0) != 0  # plain dHash: noise becomes bits


@pytest.mark.parametrize("shape", [(8, 8), (8, 10), (3, 8, 9), (0, 1)])
def test_difference_hash_rejects_wrong_shapes(shape: tuple) -> None:
    with pytest.raises(ValueError, match="thumbnail"):
        difference_hash(np.zeros(shape))


def test_static_scene_is_sent_once_and_a_changed_scene_again() -> None:
    policy = replace(
        OFF,
        uncertainty=UncertaintyPolicy(True, 0.25, 0.5, UNLIMITED),
        near_duplicate=NearDuplicatePolicy(True, memory=8, memory_s=60.0),
    )
    triage = CameraTriage("cam", policy)
    static = [thumb(scene(1, noise=4.0 + i % 3)) for i in range(5)]
    results = [decide(triage, dets(0.3), float(t), thumbnail=static[t]) for t in range(5)]
    assert [r is not None for r in results] == [True, False, False, False, False]
    assert triage.counters.near_duplicates == 4
    assert decide(triage, dets(0.3), 5.0, thumbnail=thumb(scene(7))) is not None  # new scene
    # the memory expires: the first scene may be sent again after memory_s
    assert decide(triage, dets(0.3), 100.0, thumbnail=static[0]) is not None


def test_flagged_frames_are_exempt_from_duplicate_suppression_by_default() -> None:
    policy = replace(
        OFF,
        flagged=FlagPolicy(True, 0.0, 8, UNLIMITED),
        near_duplicate=NearDuplicatePolicy(True, memory_s=60),
    )
    triage = CameraTriage("cam", policy)
    triage.add_flag_window(FlagWindow("cam", 0.0, 2e9))
    image = thumb(scene(3))
    assert all(decide(triage, Detections.empty(), float(t), thumbnail=image) is not None for t in range(3))
    strict = CameraTriage(
        "cam",
        replace(policy, near_duplicate=NearDuplicatePolicy(True, memory_s=60, exempt_flagged=False)),
    )
    strict.add_flag_window(FlagWindow("cam", 0.0, 2e9))
    assert [decide(strict, Detections.empty(), float(t), thumbnail=image) is not None for t in range(3)] == [
        True,
        False,
        False,
    ]


# ------------------------------------------------------------------------------------------------- config


def test_default_config_builds_and_reports_thresholds() -> None:
    policy = TriageConfig().to_core()
    triage = CameraTriage("cam", policy)
    decision = decide(triage, dets(0.3), 0.0, thumbnail=thumb(scene(1)))
    assert decision is not None
    assert decision.thresholds["uncertainty.lo"] == 0.25
    assert decision.thresholds["near_duplicate.hash_bits"] == 64.0
    assert decision.frame_hash is not None


def test_config_disables_strategies() -> None:
    policy = TriageConfig.model_validate(
        {
            "uncertainty": {"enabled": False},
            "random": {"probability": 1.0, "rate": {"per_minute": 60, "burst": 1}},
        }
    ).to_core()
    triage = CameraTriage("cam", policy)
    decision = decide(triage, dets(0.3), 0.0)
    assert decision is not None
    assert decision.reasons == (TriageReason.RANDOM,)
