"""Configuration of the spool and of the shared disk budget."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Default priority of each message kind; higher outranks lower (kept longer, sent first).
DEFAULT_PRIORITIES: Dict[str, int] = {
    "alert": 100,
    "ota": 90,
    "reply": 80,
    "status": 70,
    "snapshot": 50,
    "sample": 10,
}


class SpoolConfig(BaseModel):
    """Durable outbound spool (SQLite, WAL)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        default=Path("/var/lib/edge-agent/spool.sqlite3"), description="SQLite database file of the spool."
    )
    max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="Byte budget for queued payloads; beyond it the eviction policy applies.",
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description=(
            "SQLite synchronous mode. FULL: a put that returned survives power loss (fsync per commit). "
            "NORMAL in WAL mode survives application crashes but may lose the last commits on power loss."
        ),
    )
    priorities: Dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_PRIORITIES),
        description="Priority per message kind (higher outranks lower); unknown kinds get priority 0.",
    )
    live_share: float = Field(
        default=0.25,
        ge=0.0,
        le=0.9,
        description="Share of the in-flight window kept free of backlog so live messages are never starved.",
    )
    busy_timeout_ms: int = Field(default=5000, ge=0, description="SQLite busy timeout in milliseconds.")


class DiskBudgetConfig(BaseModel):
    """One disk budget for the spool, sample JPEGs kept outside the database and model staging."""

    model_config = ConfigDict(extra="forbid")

    total_bytes: int = Field(ge=1, description="Bytes the agent may use on its state file system in all.")
    staging_reserve_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=0,
        description="Always kept free to stage one model update (size of the largest expected release).",
    )
    samples_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=0.9,
        description="Fraction of the non-reserved bytes for sample JPEGs stored outside the spool database.",
    )
    min_spool_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=64 * 1024,
        description="The spool gets at least this much, or config fails.",
    )

    @model_validator(mode="after")
    def _fits(self) -> DiskBudgetConfig:
        spool = int((self.total_bytes - self.staging_reserve_bytes) * (1.0 - self.samples_fraction))
        if spool < self.min_spool_bytes:
            raise ValueError(
                f"total_bytes {self.total_bytes} leaves {spool} bytes for the spool after reserving "
                f"{self.staging_reserve_bytes} for staging; "
                f"need at least min_spool_bytes {self.min_spool_bytes}"
            )
        return self
