"""Durable outbound spool (SQLite WAL) and the shared disk budget. See :mod:`agent.spool.store`."""

from __future__ import annotations

from agent.spool.budget import BudgetAllocation, DiskBudget
from agent.spool.config import DEFAULT_PRIORITIES, DiskBudgetConfig, SpoolConfig
from agent.spool.errors import SpoolError, SpoolFullError, SpoolLockedError, SpoolWriteError
from agent.spool.store import Spool, SpoolItem, SpoolStats, drain_slots

__all__ = [
    "DEFAULT_PRIORITIES",
    "BudgetAllocation",
    "DiskBudget",
    "DiskBudgetConfig",
    "Spool",
    "SpoolConfig",
    "SpoolError",
    "SpoolFullError",
    "SpoolItem",
    "SpoolLockedError",
    "SpoolStats",
    "SpoolWriteError",
    "drain_slots",
]
