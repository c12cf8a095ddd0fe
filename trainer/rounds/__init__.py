"""Learning rounds: field samples + replay → fine-tune → export → gate on the shipped INT8 → signed release.

Public surface: the configuration, ``Round`` (one round, run), the records of the rounds so far and the model
they left running, and ``RoundPolicy`` (when ``edge-trainer serve`` starts a round by itself).
"""

from __future__ import annotations

from trainer.rounds.config import BaselineModel, PolicyConfig, RoundsConfig
from trainer.rounds.dataset import RoundRefused
from trainer.rounds.history import RunningModel, last_started, list_rounds, running_model
from trainer.rounds.policy import RoundPolicy
from trainer.rounds.run import Round

__all__ = [
    "BaselineModel",
    "PolicyConfig",
    "Round",
    "RoundPolicy",
    "RoundRefused",
    "RoundsConfig",
    "RunningModel",
    "last_started",
    "list_rounds",
    "running_model",
]
