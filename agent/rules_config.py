"""Configuration models (pydantic) for a camera's tracker, alert rules and triage.

These are what the YAML holds; ``to_core()`` turns each into the plain frozen dataclasses of
:mod:`agent.core.tracker`, :mod:`agent.core.alerts` and :mod:`agent.core.triage`, which import no pydantic.

Example (one camera's part of the agent configuration)::

    tracker: {iou_threshold: 0.3, max_misses: 5}
    alerts:
      - name: person-in-press-area
        classes: [person]
        min_confidence: 0.6
        min_consecutive_frames: 3
        cooldown_s: 30
        zones: [{name: press, points: [[100, 400], [600, 400], [600, 700], [100, 700]]}]
    triage:
      uncertainty: {lo: 0.25, hi: 0.5, rate: {per_minute: 6, burst: 3}}
      random: {probability: 0.001, seed: 7}

Alert classes are written as names (``person``) or ids (``0``); names are resolved against the active model's
class names when the rules are built, so a model update that renames or drops a class fails loudly at that
point instead of silently never alerting.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence, Set, Tuple, Union

from pydantic import Field, field_validator, model_validator

from agent.core.alerts import AlertRule
from agent.core.interface import ClassNeeds
from agent.core.tracker import TrackerParams, TrackEventKind
from agent.core.triage import (
    FlagPolicy,
    InconsistencyPolicy,
    NearDuplicatePolicy,
    RandomSamplePolicy,
    RateLimit,
    TriagePolicy,
    UncertaintyPolicy,
)
from agent.core.zones import Anchor, Zone
from agent.strict import FrozenModel


class UnknownClassError(ValueError):
    """An alert rule names a class the active model does not have.

    Attributes:
        rule: the rule's name.
        class_name: the unknown class.
        known: the model's class names.
    """

    def __init__(self, rule: str, class_name: Union[str, int], known: Sequence[str]) -> None:
        super().__init__(f"alert rule {rule!r}: class {class_name!r} is not one of the model's classes {list(known)}")
        self.rule = rule
        self.class_name = class_name
        self.known = tuple(known)


# ----------------------------------------------------------------------------------------------- tracker


class TrackerConfig(FrozenModel):
    """The per-camera IoU tracker (feeds alert streaks and the ``inconsistent`` triage strategy)."""

    iou_threshold: float = Field(default=0.3, gt=0, le=1, description="Minimum IoU to match a box to a track.")
    max_misses: int = Field(default=5, ge=0, le=1000, description="Frames a track may go unseen before it dies.")
    confirm_hits: int = Field(default=3, ge=1, le=1000, description="Hits after which a track counts as confirmed.")
    flicker_max_gap: int = Field(
        default=3,
        ge=0,
        description="A confirmed track found again after 1..this many missed frames is a flicker.",
    )
    confident: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A track that reached this confidence and died unconfirmed 'died young'.",
    )
    class_agnostic: bool = Field(
        default=True,
        description="Match boxes across classes (needed to see class flips); false: same class only.",
    )
    class_history: int = Field(default=8, ge=1, le=1000, description="Frames of class votes a track keeps.")

    @model_validator(mode="after")
    def _gap_within_misses(self) -> TrackerConfig:
        if self.flicker_max_gap > self.max_misses:
            raise ValueError(f"flicker_max_gap ({self.flicker_max_gap}) must be <= max_misses ({self.max_misses})")
        return self

    def to_core(self) -> TrackerParams:
        return TrackerParams(**self.model_dump())


# ------------------------------------------------------------------------------------------------ alerts


class ZoneConfig(FrozenModel):
    """A polygon in pixels of the camera's original frame."""

    name: str = Field(..., min_length=1, max_length=64, description="Zone name, reported in alerts.")
    points: List[Tuple[float, float]] = Field(
        ..., min_length=3, max_length=256, description="Polygon vertices [x, y] in frame pixels (closed)."
    )

    def to_core(self) -> Zone:
        return Zone.from_points(self.name, self.points)


class AlertRuleConfig(FrozenModel):
    """One alert rule of a camera."""

    name: str = Field(..., min_length=1, max_length=64, description="Rule name, unique per camera.")
    classes: List[Union[int, str]] = Field(
        default_factory=list, description="Class names or ids that trigger the rule; empty: any class."
    )
    min_confidence: float = Field(default=0.5, ge=0, le=1, description="Minimum detection confidence.")
    min_consecutive_frames: int = Field(
        default=1,
        ge=1,
        le=10000,
        description="Frames in a row (per track when tracking) before the rule fires.",
    )
    cooldown_s: float = Field(default=30.0, ge=0, description="Seconds of silence after the rule fired.")
    zones: List[ZoneConfig] = Field(
        default_factory=list,
        description="Only boxes whose anchor lies in one of these zones; empty: anywhere.",
    )
    anchor: Anchor = Field(
        default=Anchor.BOTTOM_CENTER, description="Box point tested against zones: bottom_center or center."
    )

    def to_core(self, class_names: Sequence[str]) -> AlertRule:
        """Resolve class names against the model's ``class_names`` (index = class id)."""
        ids: Set[int] = set()
        for cls in self.classes:
            if isinstance(cls, int):
                if not 0 <= cls < len(class_names):
                    raise UnknownClassError(self.name, cls, class_names)
                ids.add(cls)
            elif cls in class_names:
                ids.add(list(class_names).index(cls))
            else:
                raise UnknownClassError(self.name, cls, class_names)
        return AlertRule(
            name=self.name,
            class_ids=frozenset(ids),
            min_confidence=self.min_confidence,
            min_consecutive_frames=self.min_consecutive_frames,
            cooldown_s=self.cooldown_s,
            zones=tuple(zone.to_core() for zone in self.zones),
            anchor=self.anchor,
        )


def build_alert_rules(rules: Sequence[AlertRuleConfig], class_names: Sequence[str]) -> Tuple[AlertRule, ...]:
    """All of a camera's rules, with unique names checked."""
    names = [rule.name for rule in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate alert rule names {duplicates}")
    return tuple(rule.to_core(class_names) for rule in rules)


# ------------------------------------------------------------------------------------------------ triage


class RateLimitConfig(FrozenModel):
    """A token bucket."""

    per_minute: float = Field(default=6.0, ge=0, le=60000, description="Average frames per minute allowed.")
    burst: int = Field(default=3, ge=1, le=10000, description="Frames allowed in a burst (bucket size).")

    def to_core(self) -> RateLimit:
        return RateLimit(self.per_minute, self.burst)


class UncertaintyConfig(FrozenModel):
    """Send frames with a detection whose confidence is in [lo, hi)."""

    enabled: bool = Field(default=True, description="Use this strategy.")
    lo: float = Field(default=0.25, ge=0, le=1, description="Lower end of the uncertainty band (inclusive).")
    hi: float = Field(default=0.5, ge=0, le=1, description="Upper end of the uncertainty band (exclusive).")
    rate: RateLimitConfig = Field(default=RateLimitConfig(), description="Rate limit of this strategy.")

    @model_validator(mode="after")
    def _band(self) -> UncertaintyConfig:
        if self.lo >= self.hi:
            raise ValueError(f"lo ({self.lo}) must be below hi ({self.hi})")
        return self


class InconsistencyConfig(FrozenModel):
    """Send frames where the tracker saw the model contradict itself."""

    enabled: bool = Field(default=True, description="Use this strategy.")
    kinds: List[TrackEventKind] = Field(
        default_factory=lambda: list(TrackEventKind),
        description="Tracker events that count: flicker, died_young, class_flip.",
    )
    rate: RateLimitConfig = Field(default=RateLimitConfig(), description="Rate limit of this strategy.")


class FlagConfig(FrozenModel):
    """Send frames inside operator/PLC flag windows (added by the flag-window command)."""

    enabled: bool = Field(default=True, description="Use this strategy.")
    sample_interval_s: float = Field(default=1.0, ge=0, description="At most one frame per this many seconds.")
    max_windows: int = Field(default=64, ge=1, le=10000, description="Open windows kept per camera.")
    rate: RateLimitConfig = Field(default=RateLimitConfig(per_minute=60, burst=10), description="Rate limit.")


class RandomSampleConfig(FrozenModel):
    """Send a small random sample of all frames (unbiased monitoring)."""

    enabled: bool = Field(default=True, description="Use this strategy.")
    probability: float = Field(default=0.001, ge=0, le=1, description="Chance per processed frame.")
    seed: int = Field(default=0, ge=0, description="Seed of the generator (mixed with the camera name).")
    rate: RateLimitConfig = Field(default=RateLimitConfig(per_minute=1, burst=1), description="Rate limit.")


class NearDuplicateConfig(FrozenModel):
    """Do not send a frame that looks like one sent recently."""

    enabled: bool = Field(default=True, description="Use near-duplicate suppression.")
    hash_size: int = Field(default=8, ge=2, le=32, description="Difference hash of hash_size**2 bits.")
    tolerance: float = Field(default=2.0, ge=0, le=255, description="Grey levels of difference ignored as noise.")
    max_distance: int = Field(default=4, ge=0, description="Hashes this many bits apart or closer are duplicates.")
    memory: int = Field(default=32, ge=1, le=10000, description="Recently sent frames remembered.")
    memory_s: float = Field(default=600.0, ge=0, description="Seconds a sent frame is remembered.")
    exempt_flagged: bool = Field(default=True, description="Never suppress frames inside a flag window.")


class TriageConfig(FrozenModel):
    """Which frames of a camera go back to the trainer."""

    uncertainty: UncertaintyConfig = Field(default=UncertaintyConfig(), description="Uncertainty band.")
    inconsistency: InconsistencyConfig = Field(
        default=InconsistencyConfig(), description="Temporal inconsistency from the tracker."
    )
    flagged: FlagConfig = Field(default=FlagConfig(), description="Operator/PLC flag windows.")
    random: RandomSampleConfig = Field(default=RandomSampleConfig(), description="Random sample.")
    near_duplicate: NearDuplicateConfig = Field(
        default=NearDuplicateConfig(), description="Near-duplicate suppression."
    )

    def to_core(self) -> TriagePolicy:
        u, i, f, r, d = self.uncertainty, self.inconsistency, self.flagged, self.random, self.near_duplicate
        return TriagePolicy(
            uncertainty=UncertaintyPolicy(u.enabled, u.lo, u.hi, u.rate.to_core()),
            inconsistency=InconsistencyPolicy(i.enabled, frozenset(i.kinds), i.rate.to_core()),
            flagged=FlagPolicy(f.enabled, f.sample_interval_s, f.max_windows, f.rate.to_core()),
            random=RandomSamplePolicy(r.enabled, r.probability, r.seed, r.rate.to_core()),
            near_duplicate=NearDuplicatePolicy(
                d.enabled, d.hash_size, d.tolerance, d.max_distance, d.memory, d.memory_s, d.exempt_flagged
            ),
        )


class CameraRulesConfig(FrozenModel):
    """Tracker, alert rules and triage of one camera (embedded in the camera's configuration)."""

    tracker: TrackerConfig = Field(default=TrackerConfig(), description="IoU tracker settings.")
    alerts: List[AlertRuleConfig] = Field(default_factory=list, description="Alert rules of this camera.")
    triage: TriageConfig = Field(default=TriageConfig(), description="Misdetection triage.")

    @field_validator("alerts")
    @classmethod
    def _unique_names(cls, rules: List[AlertRuleConfig]) -> List[AlertRuleConfig]:
        names = [rule.name for rule in rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate alert rule names {duplicates}")
        return rules

    def alert_rules(self, class_names: Sequence[str]) -> Tuple[AlertRule, ...]:
        return build_alert_rules(self.alerts, class_names)


def class_needs(rules_by_camera: Mapping[str, CameraRulesConfig]) -> ClassNeeds:
    """The classes the alert rules of these cameras name, for the OTA compatibility check."""
    names: Set[str] = set()
    ids: Set[int] = set()
    where: List[str] = []
    for camera, rules in rules_by_camera.items():
        for rule in rules.alerts:
            for cls in rule.classes:
                if isinstance(cls, int):
                    ids.add(cls)
                else:
                    names.add(cls)
                where.append(f"{camera}/{rule.name}={cls}")
    return ClassNeeds(frozenset(names), frozenset(ids), tuple(where))


def class_names_from_mapping(names: Mapping[int, str]) -> List[str]:
    """A model's ``{id: name}`` mapping as a list indexed by id (gaps become ``"<id>"``)."""
    if not names:
        return []
    size = max(names) + 1
    return [names.get(i, str(i)) for i in range(size)]


__all__ = [
    "AlertRuleConfig",
    "CameraRulesConfig",
    "FlagConfig",
    "InconsistencyConfig",
    "NearDuplicateConfig",
    "RandomSampleConfig",
    "RateLimitConfig",
    "TrackerConfig",
    "TriageConfig",
    "UncertaintyConfig",
    "UnknownClassError",
    "ZoneConfig",
    "build_alert_rules",
    "class_names_from_mapping",
    "class_needs",
]
