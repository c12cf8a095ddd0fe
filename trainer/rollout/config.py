"""``rollout:`` in trainer.yaml: the stages of a staged rollout, the bounds that halt it, and how it reaches
the devices (the site broker; the agent's group and fleet push topics)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from pydantic import Field, field_validator, model_validator

from agent.link.config import BrokerConnection
from agent.protocol.topics import check_segment
from agent.strict import StrictModel


class StageConfig(StrictModel):
    """One stage: the devices of a group (or the whole fleet), how many must commit, how long to watch."""

    name: str = Field(min_length=1, max_length=64, description="Stage name (canary, wide, fleet, ...).")
    group: Optional[str] = Field(
        default=None, description="Device group whose push topic this stage uses; null: the fleet topic (everyone)."
    )
    min_committed: int = Field(default=1, ge=1, description="Devices of the stage that must report committed.")
    watch_s: float = Field(
        default=600.0, ge=0, description="Then watch that long (their figures against the bounds) before promoting."
    )

    @field_validator("group")
    @classmethod
    def _group(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_segment("group", value)


class QualityBounds(StrictModel):
    """How far a device's figures under the new model may move from its own under the previous one."""

    min_frames: int = Field(
        default=200, ge=1, description="Frames under each model before its figures are judged (fewer: wait)."
    )
    max_alert_ratio: float = Field(
        default=2.0, gt=1, description="Alerts per frame may at most multiply by this (smoothed by one alert)."
    )
    min_alert_ratio: float = Field(
        default=0.25,
        ge=0,
        lt=1,
        description="... and shrink at most to this share (alerts that vanish are a fault too).",
    )
    max_uncertain_increase: float = Field(
        default=0.15,
        ge=0,
        le=1,
        description="Share of frames triage finds uncertain may rise by at most this (unless mean confidence rose).",
    )
    max_confidence_drop: float = Field(
        default=0.10, ge=0, le=1, description="Mean detection confidence may fall by at most this."
    )
    max_fps_drop: float = Field(default=0.30, ge=0, le=1, description="FPS may fall by at most this share.")


class RolloutConfig(StrictModel):
    """Staged rollout (``edge-trainer rollout start|status|promote|halt|watch``)."""

    state_dir: Path = Field(default=Path("/var/lib/edge-trainer/rollouts"), description="Rollout state files.")
    site: str = Field(description="Site whose devices the rollout reaches.")
    topic_prefix: str = Field(default="edge", description="First topic level(s), as on the devices.")
    broker: BrokerConnection = Field(default_factory=BrokerConnection, description="The site broker.")
    channel: str = Field(default="stable", description="Release channel the devices follow.")
    chunk_size: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024, description="Push chunk size.")
    urls: List[str] = Field(
        default_factory=list, description="HTTP(S) repositories for URL pushes; empty: the release travels in chunks."
    )
    stages: List[StageConfig] = Field(min_length=1, description="In order; the last one usually the fleet.")
    bounds: QualityBounds = Field(default_factory=QualityBounds, description="What halts a stage.")
    tick_s: float = Field(default=10.0, gt=0, description="How often `rollout watch` looks.")

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        return check_segment("site", value)

    @model_validator(mode="after")
    def _unique(self) -> RolloutConfig:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        return self
