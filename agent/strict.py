"""The one base of every configuration model: unknown keys are errors, with their path (Frigate-style
``extra="forbid"``); :class:`FrozenModel` for the parts that are values (rules, sources) and never change in place."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["FrozenModel", "StrictModel"]


class StrictModel(BaseModel):
    """A configuration model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid")


class FrozenModel(StrictModel):
    """A strict configuration model that is also immutable (hashable, safe to share between threads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
