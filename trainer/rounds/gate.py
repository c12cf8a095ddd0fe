"""The gate: does a round's candidate ship? Pure.

Scored on the artefact that ships (the INT8 model through the agent's engine) against the model running now,
on two holdouts: the base one (the domains the fleet already handles) and the new domain's (field samples
never trained on). It passes only if the new domain gains at least ``min_new_domain_gain``, the base domain
loses at most ``max_base_regression``, and quantisation costs at most ``max_int8_loss``; every failed
condition is a reason, in words a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional


@dataclass(frozen=True)
class HoldoutScores:
    """mAP50-95 of the running model and of the candidate on one holdout (INT8, agent engine)."""

    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: List[str] = field(default_factory=list)
    figures: Dict[str, float] = field(default_factory=dict)


def decide(
    base: HoldoutScores,
    new_domain: HoldoutScores,
    min_new_domain_gain: float,
    max_base_regression: float,
    candidate_fp32_base: Optional[float] = None,
    max_int8_loss: Optional[float] = None,
) -> GateVerdict:
    """The verdict and, when it fails, why (every failed condition)."""
    reasons: List[str] = []
    if new_domain.delta < min_new_domain_gain:
        reasons.append(
            f"new-domain holdout mAP50-95 {new_domain.before:.4f} -> {new_domain.after:.4f} "
            f"({new_domain.delta:+.4f}): needs a gain of at least {min_new_domain_gain:+.4f}"
        )
    if -base.delta > max_base_regression:
        reasons.append(
            f"base holdout mAP50-95 {base.before:.4f} -> {base.after:.4f} ({base.delta:+.4f}): "
            f"may lose at most {max_base_regression:.4f}"
        )
    figures = {
        "base_before": base.before,
        "base_after": base.after,
        "base_delta": base.delta,
        "new_domain_before": new_domain.before,
        "new_domain_after": new_domain.after,
        "new_domain_delta": new_domain.delta,
    }
    if candidate_fp32_base is not None and max_int8_loss is not None:
        loss = candidate_fp32_base - base.after
        figures["int8_loss"] = loss
        if loss > max_int8_loss:
            reasons.append(
                f"INT8 costs {loss:.4f} mAP50-95 against the candidate's FP32 on the base holdout "
                f"(at most {max_int8_loss:.4f})"
            )
    return GateVerdict(passed=not reasons, reasons=reasons, figures=figures)
