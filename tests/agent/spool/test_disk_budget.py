"""The one disk budget: staging reserve first, then samples / spool."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.spool import BudgetAllocation, DiskBudget, DiskBudgetConfig

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("total", "reserve", "fraction", "free", "used", "expected"),
    [
        (1000 * MB, 200 * MB, 0.0, -1, 0, BudgetAllocation(800 * MB, 0, 200 * MB)),
        (1000 * MB, 200 * MB, 0.25, -1, 0, BudgetAllocation(600 * MB, 200 * MB, 200 * MB)),
        # the disk holds less than configured: staging keeps its reserve, the spool shrinks
        (1000 * MB, 200 * MB, 0.0, 300 * MB, 100 * MB, BudgetAllocation(200 * MB, 0, 200 * MB)),
        # almost nothing free: everything goes to the staging reserve
        (1000 * MB, 200 * MB, 0.0, 50 * MB, 0, BudgetAllocation(0, 0, 50 * MB)),
    ],
)
def test_allocation(
    total: int, reserve: int, fraction: float, free: int, used: int, expected: BudgetAllocation
) -> None:
    budget = DiskBudget(DiskBudgetConfig(total_bytes=total, staging_reserve_bytes=reserve, samples_fraction=fraction))
    got = budget.allocation(free_on_disk=free, used_by_agent=used)
    assert got == expected
    assert got.spool_bytes + got.samples_bytes + got.staging_bytes <= total


def test_staging_fits_only_within_the_reserve() -> None:
    budget = DiskBudget(DiskBudgetConfig(total_bytes=1000 * MB, staging_reserve_bytes=200 * MB))
    assert budget.staging_fits(200 * MB)
    assert not budget.staging_fits(200 * MB + 1)


def test_budget_that_leaves_no_spool_is_rejected_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="min_spool_bytes"):
        DiskBudgetConfig(total_bytes=100 * MB, staging_reserve_bytes=95 * MB)
    with pytest.raises(ValidationError, match="extra"):
        DiskBudgetConfig(total_bytes=100 * MB, typo=1)  # type: ignore[call-arg]
