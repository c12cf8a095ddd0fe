"""Staged rollout of a signed release: canary → wider → fleet, halted by OTA failures and quality shifts.

Public surface: the configuration, the driver (``Rollout`` over the store's index, its MQTT seam
``MqttActions``) and its errors; ``plan`` holds the pure stage decisions, ``state`` the rollout's record.
"""

from __future__ import annotations

from trainer.rollout.config import QualityBounds, RolloutConfig, StageConfig
from trainer.rollout.driver import MAX_ROLLBACKS, MqttActions, Rollout, RolloutError, dumps, release_of_bundle
from trainer.rollout.state import RolloutStore

__all__ = [
    "MAX_ROLLBACKS",
    "MqttActions",
    "QualityBounds",
    "Rollout",
    "RolloutConfig",
    "RolloutError",
    "RolloutStore",
    "StageConfig",
    "dumps",
    "release_of_bundle",
]
