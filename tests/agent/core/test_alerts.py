"""Alert rules, polygon zones, and the alert/tracker configuration models."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.core.alerts import AlertEvaluator, AlertRule
from agent.core.detections import Detections
from agent.core.zones import Anchor, Zone, anchor_points, in_any_zone, points_in_polygon
from agent.rules_config import AlertRuleConfig, CameraRulesConfig, UnknownClassError, class_names_from_mapping

SQUARE = Zone.from_points("square", [(0, 0), (100, 0), (100, 100), (0, 100)])
# A "U" shape: the notch (40..60, 0..60) is outside although inside the bounding box.
U_SHAPE = Zone.from_points("u", [(0, 0), (40, 0), (40, 60), (60, 60), (60, 0), (100, 0), (100, 100), (0, 100)])


# -------------------------------------------------------------------------------------------------- zones


@pytest.mark.parametrize(
    ("zone", "point", "inside"),
    [
        (SQUARE, (50, 50), True),
        (SQUARE, (150, 50), False),
        (SQUARE, (-1, 50), False),
        (SQUARE, (50, 101), False),
        (U_SHAPE, (50, 30), False),  # in the notch
        (U_SHAPE, (50, 80), True),  # below the notch
        (U_SHAPE, (20, 30), True),  # left arm
        (U_SHAPE, (80, 30), True),  # right arm
        (Zone.from_points("tri", [(0, 0), (100, 0), (0, 100)]), (20, 20), True),
        (Zone.from_points("tri", [(0, 0), (100, 0), (0, 100)]), (70, 70), False),
    ],
)
def test_point_in_polygon(zone: Zone, point: Tuple[float, float], inside: bool) -> None:
    assert zone.contains(np.array([point], float)).tolist() == [inside]


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [(Anchor.BOTTOM_CENTER, [[30.0, 40.0]]), (Anchor.CENTER, [[30.0, 25.0]])],
)
def test_anchor_points(anchor: Anchor, expected: list) -> None:
    assert anchor_points(np.array([[20, 10, 40, 40]], np.float32), anchor).tolist() == expected


def test_in_any_zone_without_zones_accepts_everything_and_handles_empty_input() -> None:
    assert in_any_zone(np.zeros((3, 4)), []).tolist() == [True, True, True]
    assert in_any_zone(np.zeros((0, 4)), [SQUARE]).tolist() == []
    assert points_in_polygon(np.zeros((0, 2)), SQUARE.as_array()).tolist() == []


@pytest.mark.parametrize("points", [[(0, 0), (1, 1)], [(0, 0), (1, float("nan")), (2, 2)]])
def test_bad_zones_are_rejected(points: list) -> None:
    with pytest.raises(ValueError, match="zone 'z'"):
        Zone.from_points("z", points)


@settings(max_examples=80, deadline=None)
@given(st.floats(-50, 150), st.floats(-50, 150))
def test_square_zone_matches_the_obvious_rule(x: float, y: float) -> None:
    # Away from the edges the ray-casting answer must equal the plain interval test.
    if min(abs(x), abs(x - 100), abs(y), abs(y - 100)) < 1e-6:
        return
    assert bool(SQUARE.contains(np.array([[x, y]]))[0]) == (0 < x < 100 and 0 < y < 100)


# ------------------------------------------------------------------------------------------------- alerts


def dets(*items: Tuple[Tuple[float, float, float, float], float, int]) -> Detections:
    if not items:
        return Detections.empty()
    return Detections.from_arrays([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])


PERSON = 0
FORKLIFT = 1
IN_ZONE = (40.0, 20.0, 60.0, 80.0)  # bottom-centre (50, 80): inside SQUARE
OUT_ZONE = (140.0, 20.0, 160.0, 80.0)


def fire_frames(
    rule: AlertRule,
    frames: Sequence[Detections],
    track_ids: Optional[Sequence[Sequence[int]]] = None,
    dt: float = 1.0,
) -> List[int]:
    evaluator = AlertEvaluator("cam1", [rule])
    fired = []
    for i, frame in enumerate(frames):
        ids = None if track_ids is None else np.asarray(track_ids[i], np.int64)
        if evaluator.update(frame, now=i * dt, frame_index=i, track_ids=ids):
            fired.append(i)
    return fired


P = dets((IN_ZONE, 0.9, PERSON))
P_LOW = dets((IN_ZONE, 0.3, PERSON))
F = dets((IN_ZONE, 0.9, FORKLIFT))
P_OUT = dets((OUT_ZONE, 0.9, PERSON))
NONE = Detections.empty()


@pytest.mark.parametrize(
    ("rule", "frames", "expected"),
    [
        (AlertRule("r", frozenset({PERSON}), cooldown_s=0), [P, P, P], [0, 1, 2]),
        (AlertRule("r", frozenset({PERSON}), cooldown_s=0), [F, P_LOW, NONE], []),
        (AlertRule("r", frozenset(), cooldown_s=0), [F, P_LOW, NONE], [0]),  # any class
        (AlertRule("r", frozenset({PERSON}), min_confidence=0.25, cooldown_s=0), [P_LOW], [0]),
        (
            AlertRule("r", frozenset({PERSON}), min_consecutive_frames=3, cooldown_s=0),
            [P, P, NONE, P, P, P, P],
            [5, 6],
        ),
        (AlertRule("r", frozenset({PERSON}), cooldown_s=2.5), [P, P, P, P, P, P, P], [0, 3, 6]),
        (AlertRule("r", frozenset({PERSON}), zones=(SQUARE,), cooldown_s=0), [P_OUT, P], [1]),
        # centre anchor of OUT_ZONE box is still outside; of a box straddling the bottom edge it is inside
        (
            AlertRule("r", frozenset({PERSON}), zones=(SQUARE,), anchor=Anchor.CENTER, cooldown_s=0),
            [dets(((40, 60, 60, 130), 0.9, PERSON))],
            [0],
        ),
        (
            AlertRule("r", frozenset({PERSON}), zones=(SQUARE,), cooldown_s=0),
            [dets(((40, 60, 60, 130), 0.9, PERSON))],
            [],
        ),
    ],
)
def test_rule_table(rule: AlertRule, frames: List[Detections], expected: List[int]) -> None:
    assert fire_frames(rule, frames) == expected


def test_streaks_are_per_track_when_track_ids_are_given() -> None:
    rule = AlertRule("r", frozenset({PERSON}), min_consecutive_frames=3, cooldown_s=0)
    frames = [P, P, P, P]
    # Two different objects taking turns never make a streak of 3 ...
    assert fire_frames(rule, frames, track_ids=[[1], [2], [1], [2]]) == []
    # ... the same object does.
    assert fire_frames(rule, frames, track_ids=[[7], [7], [7], [7]]) == [2, 3]
    # Without ids the rule only sees "a person in each frame".
    assert fire_frames(rule, frames) == [2, 3]


def test_event_contents() -> None:
    rule = AlertRule("press", frozenset({PERSON}), min_consecutive_frames=2, cooldown_s=10, zones=(SQUARE,))
    evaluator = AlertEvaluator("cam1", [rule])
    frame = dets((IN_ZONE, 0.9, PERSON), (OUT_ZONE, 0.95, PERSON), (IN_ZONE, 0.8, FORKLIFT))
    assert evaluator.update(frame, now=100.0, frame_index=7, track_ids=np.array([3, 4, 5])) == []
    (event,) = evaluator.update(frame, now=100.5, frame_index=8, track_ids=np.array([3, 4, 5]))
    assert (event.rule, event.camera, event.frame_index) == ("press", "cam1", 8)
    assert (event.started_at, event.triggered_at, event.consecutive_frames) == (100.0, 100.5, 2)
    assert event.xyxy.tolist() == [list(IN_ZONE)]
    assert event.track_ids.tolist() == [3]
    assert event.class_id.tolist() == [PERSON]
    assert event.zones == (("square",),)
    # cooldown: nothing for 10 s, then again while the person is still there
    assert evaluator.update(frame, now=105.0, frame_index=9, track_ids=np.array([3, 4, 5])) == []
    assert len(evaluator.update(frame, now=110.5, frame_index=10, track_ids=np.array([3, 4, 5]))) == 1


def test_reset_clears_streaks_but_keeps_cooldown() -> None:
    rule = AlertRule("r", frozenset({PERSON}), min_consecutive_frames=2, cooldown_s=100)
    evaluator = AlertEvaluator("cam1", [rule])
    evaluator.update(P, now=0, frame_index=0)
    assert evaluator.update(P, now=1, frame_index=1)
    evaluator.reset()
    assert evaluator.update(P, now=2, frame_index=2) == []
    assert evaluator.update(P, now=3, frame_index=3) == []  # streak back to 2, but cooling down


def test_several_rules_fire_independently() -> None:
    rules = [
        AlertRule("people", frozenset({PERSON}), cooldown_s=0),
        AlertRule("forklifts", frozenset({FORKLIFT})),
    ]
    evaluator = AlertEvaluator("cam1", rules)
    events = evaluator.update(dets((IN_ZONE, 0.9, PERSON), (OUT_ZONE, 0.9, FORKLIFT)), now=0, frame_index=0)
    assert [e.rule for e in events] == ["people", "forklifts"]


@pytest.mark.parametrize("kwargs", [{"min_confidence": 1.5}, {"min_consecutive_frames": 0}, {"cooldown_s": -1.0}])
def test_invalid_rules_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="rule 'r'"):
        AlertRule("r", **kwargs)


def test_duplicate_rule_names_and_bad_track_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        AlertEvaluator("cam1", [AlertRule("a"), AlertRule("a")])
    with pytest.raises(ValueError, match="track_ids"):
        AlertEvaluator("cam1", [AlertRule("a")]).update(P, now=0, frame_index=0, track_ids=np.array([1, 2]))


# ------------------------------------------------------------------------------------------------- config


def test_rule_config_resolves_class_names_and_builds_zones() -> None:
    cfg = AlertRuleConfig.model_validate(
        {
            "name": "press",
            "classes": ["person", 2],
            "min_consecutive_frames": 3,
            "zones": [{"name": "z", "points": [[0, 0], [10, 0], [10, 10]]}],
            "anchor": "center",
        }
    )
    rule = cfg.to_core(["person", "forklift", "pallet"])
    assert rule.class_ids == frozenset({0, 2})
    assert rule.zones[0].points == ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0))
    assert rule.anchor is Anchor.CENTER


@pytest.mark.parametrize("cls", ["helmet", 5])
def test_unknown_class_fails_with_the_rule_and_class_named(cls: object) -> None:
    cfg = AlertRuleConfig.model_validate({"name": "press", "classes": [cls]})
    with pytest.raises(UnknownClassError, match="press") as info:
        cfg.to_core(["person", "forklift"])
    assert info.value.class_name == cls


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"alerts": [{"name": "a", "colour": "red"}]}, "alerts.0.colour"),
        (
            {"alerts": [{"name": "a", "zones": [{"name": "z", "points": [[0, 0], [1, 1]]}]}]},
            "alerts.0.zones.0.points",
        ),
        ({"alerts": [{"name": "a"}, {"name": "a"}]}, "duplicate"),
        ({"tracker": {"max_misses": 2, "flicker_max_gap": 3}}, "flicker_max_gap"),
        ({"triage": {"uncertainty": {"lo": 0.6, "hi": 0.5}}}, "lo"),
        ({"triage": {"random": {"probability": 2}}}, "triage.random.probability"),
    ],
)
def test_bad_rules_config_names_the_key(data: dict, where: str) -> None:
    with pytest.raises(ValidationError, match=where.replace(".", r"\.")):
        CameraRulesConfig.model_validate(data)


def test_class_names_from_mapping() -> None:
    assert class_names_from_mapping({0: "a", 2: "c"}) == ["a", "1", "c"]
    assert class_names_from_mapping({}) == []
