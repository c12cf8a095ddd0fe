"""The "one disk budget" rule: spool, sample JPEGs and model staging share one byte budget, and room to
stage one update is always reserved (so a full spool can never block a model fix). Pure arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.spool.config import DiskBudgetConfig


@dataclass(frozen=True)
class BudgetAllocation:
    """Bytes granted to each consumer; the three add up to at most the total."""

    spool_bytes: int
    samples_bytes: int
    staging_bytes: int


class DiskBudget:
    """Splits :attr:`DiskBudgetConfig.total_bytes`; staging always keeps its reserve."""

    def __init__(self, config: DiskBudgetConfig) -> None:
        self.config = config

    def allocation(self, free_on_disk: int = -1, used_by_agent: int = 0) -> BudgetAllocation:
        """Split the budget.

        Args:
            free_on_disk: free bytes on the file system now (``shutil.disk_usage().free``); when given
                (>= 0) the total is capped at what the disk can hold (free + what the agent already uses),
                and the staging reserve is taken first.
            used_by_agent: bytes the spool, samples and staging currently occupy.
        """
        total = self.config.total_bytes
        if free_on_disk >= 0:
            total = min(total, free_on_disk + used_by_agent)
        staging = min(self.config.staging_reserve_bytes, total)
        rest = max(0, total - staging)
        samples = int(rest * self.config.samples_fraction)
        return BudgetAllocation(spool_bytes=rest - samples, samples_bytes=samples, staging_bytes=staging)

    def staging_fits(self, update_bytes: int) -> bool:
        """Whether an update of ``update_bytes`` fits in the reserved staging room."""
        return 0 <= update_bytes <= self.config.staging_reserve_bytes
