"""The rollout's decisions, pure: a device's figures, what is wrong with a device, and what a stage does next.

A device is judged against itself: its figures under the new model against its own under the previous model
(alerts per frame, share of uncertain frames, mean detection confidence, FPS), so a camera that always
alerts a lot does not halt anything; only a change does. A rise in uncertain frames counts only when mean
confidence did not rise with it (a model that sees more objects also sees more borderline ones).
An OTA failure of the new release (``rolled_back``, or ``failed`` for a reason other than the retryable ones the
box retries by itself) halts at once. A stage promotes when
``min_committed`` of its devices committed the new release and the watch window since that moment passed
with nothing wrong.

    pending ──push──► watching ──min committed──► ready ──watch_s, nothing wrong──► promoted (next stage)
                        └──────────────── any device wrong ─────────────────────► halted
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from trainer.rollout.config import QualityBounds


@dataclass(frozen=True)
class Figures:
    """A model's figures on one device (cumulative over ``seconds``)."""

    frames: int
    seconds: float
    detections: int
    confidence_sum: float
    alerts: int
    uncertain: int

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def alerts_per_frame(self) -> float:
        return self.alerts / self.frames if self.frames else 0.0

    @property
    def uncertain_share(self) -> float:
        return self.uncertain / self.frames if self.frames else 0.0

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.detections if self.detections else 0.0


@dataclass(frozen=True)
class DeviceView:
    """What the registry knows of one device of a stage."""

    device: str
    running_new: bool  # its status names the new release's model
    committed_new: bool  # its last OTA report: committed, for the new release
    ota_failed_new: Optional[str]  # rolled_back / failed for the new release: the detail; else None
    before: Optional[Figures]  # under the previous model
    after: Optional[Figures]  # under the new model


# OTA failures that say nothing about the release: the box retries them by itself (agent.ota.errors)
RETRYABLE_OTA_REASONS = ("transport", "too_slow", "interrupted", "state")


def ota_failure(phase: Optional[str], detail: Optional[str], version: str) -> Optional[str]:
    """What an OTA report of the new release says against it, or None (not a failure, or a retryable one: a
    slow link or a busy installer must not look like a bad model and halt the rollout)."""
    if phase == "rolled_back":
        return f"OTA rolled_back on {version}: {detail or ''}".strip()
    if phase != "failed":
        return None
    reason = (detail or "").split(":", 1)[0].split(" ", 1)[0]
    if reason in RETRYABLE_OTA_REASONS:
        return None
    return f"OTA failed on {version}: {detail or ''}".strip()


@dataclass(frozen=True)
class Signal:
    """One quality signal of a device: its figure under the previous and the new model, against its bound."""

    name: str  # "alerts per frame" | "uncertain frames" | "mean confidence" | "FPS"
    before: float
    after: float
    change: str  # "x1.20", "+0.031", "-0.020", "-12%"
    bound: str  # the bound it is held to, as written in the messages
    ok: bool
    message: str  # what a halt says about it

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


def quality_signals(view: DeviceView, bounds: QualityBounds) -> List[Signal]:
    """The device's signals against ``bounds`` (empty until both models have seen ``min_frames`` frames)."""
    before, after = view.before, view.after
    if before is None or after is None or before.frames < bounds.min_frames or after.frames < bounds.min_frames:
        return []
    signals = []
    # one alert of smoothing on both sides: a device with no alerts before is not halted by its first one
    ratio = ((after.alerts + 1) / after.frames) / ((before.alerts + 1) / before.frames)
    shift = f"{before.alerts_per_frame:.4f} -> {after.alerts_per_frame:.4f}"
    bound = bounds.max_alert_ratio if ratio > bounds.max_alert_ratio else bounds.min_alert_ratio
    ok = bounds.min_alert_ratio <= ratio <= bounds.max_alert_ratio
    signals.append(
        Signal(
            "alerts per frame",
            before.alerts_per_frame,
            after.alerts_per_frame,
            f"x{ratio:.2f}",
            f"x{bounds.min_alert_ratio:g} .. x{bounds.max_alert_ratio:g}",
            ok,
            f"alerts per frame x{ratio:.2f} ({shift}), bound x{bound:g}",
        )
    )
    rise = after.uncertain_share - before.uncertain_share
    # A frame is uncertain when it holds one borderline detection, so the share also rises when a model starts
    # seeing objects it was blind to (what a round on a drifted camera is for; the loop demo measured 0.56 ->
    # 0.77 with mean confidence 0.45 -> 0.65). More borderline frames are a fault only when the model is not
    # surer on average at the same time.
    surer = bool(before.detections and after.detections) and after.mean_confidence > before.mean_confidence
    signals.append(
        Signal(
            "uncertain frames",
            before.uncertain_share,
            after.uncertain_share,
            f"{rise:+.3f}",
            f"+{bounds.max_uncertain_increase:g} (unless surer)",
            not (rise > bounds.max_uncertain_increase and not surer),
            f"uncertain frames {before.uncertain_share:.3f} -> {after.uncertain_share:.3f} "
            f"(+{rise:.3f}, bound +{bounds.max_uncertain_increase:g})",
        )
    )
    if before.detections and after.detections:
        drop = before.mean_confidence - after.mean_confidence
        signals.append(
            Signal(
                "mean confidence",
                before.mean_confidence,
                after.mean_confidence,
                f"{-drop:+.3f}",
                f"-{bounds.max_confidence_drop:g}",
                drop <= bounds.max_confidence_drop,
                f"mean confidence {before.mean_confidence:.3f} -> {after.mean_confidence:.3f} "
                f"(-{drop:.3f}, bound -{bounds.max_confidence_drop:g})",
            )
        )
    if before.fps > 0:
        signals.append(
            Signal(
                "FPS",
                before.fps,
                after.fps,
                f"{after.fps / before.fps - 1:+.0%}",
                f"-{bounds.max_fps_drop:.0%}",
                after.fps >= before.fps * (1 - bounds.max_fps_drop),
                f"FPS {before.fps:.1f} -> {after.fps:.1f} (more than {bounds.max_fps_drop:.0%} slower)",
            )
        )
    return signals


def device_problems(view: DeviceView, bounds: QualityBounds) -> List[str]:
    """Why this device says the new model is worse (empty: nothing wrong, or not enough seen yet)."""
    if view.ota_failed_new:
        return [f"{view.device}: {view.ota_failed_new}"]
    return [f"{view.device}: {s.message}" for s in quality_signals(view, bounds) if not s.ok]


class Action(str, enum.Enum):
    WAIT = "wait"
    READY = "ready"  # min_committed reached just now: the watch window starts
    PROMOTE = "promote"
    HALT = "halt"


@dataclass(frozen=True)
class StageDecision:
    action: Action
    reasons: List[str] = field(default_factory=list)
    committed: int = 0
    devices: int = 0


def decide_stage(
    views: Sequence[DeviceView],
    min_committed: int,
    watch_s: float,
    ready_since: Optional[float],
    now: float,
    bounds: QualityBounds,
) -> StageDecision:
    """What a running stage does now (``views``: every device of this stage and of the stages before)."""
    problems = [p for view in views for p in device_problems(view, bounds)]
    committed = sum(1 for v in views if v.committed_new)
    if problems:
        return StageDecision(Action.HALT, problems, committed, len(views))
    if committed < min_committed:
        return StageDecision(Action.WAIT, [f"{committed} of {min_committed} devices committed"], committed, len(views))
    if ready_since is None:
        return StageDecision(
            Action.READY, [f"{committed} devices committed; watching {watch_s:g} s"], committed, len(views)
        )
    watched = now - ready_since
    unjudged = [v.device for v in views if v.committed_new and (v.after is None or v.after.frames < bounds.min_frames)]
    if watched < watch_s or unjudged:
        why = f"watched {watched:.0f} of {watch_s:g} s"
        if unjudged:
            why += f"; not enough frames yet from {', '.join(unjudged[:5])}"
        return StageDecision(Action.WAIT, [why], committed, len(views))
    return StageDecision(
        Action.PROMOTE, [f"{committed} committed, {watched:.0f} s watched, nothing wrong"], committed, len(views)
    )
