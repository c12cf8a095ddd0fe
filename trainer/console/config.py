"""``console:`` in trainer.yaml: the fleet pages (``edge-trainer console``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.console.config import PageAccess


class CloudConsoleConfig(PageAccess):
    """Where the fleet pages listen and who may open them (loopback, or a password)."""

    port: int = Field(default=9120, ge=0, le=65535, description="TCP port (0: any free port, for tests).")
    username: str = Field(default="fleet", min_length=1, max_length=64, description="HTTP Basic user name.")
    window_hours: float = Field(default=1.0, gt=0, le=24 * 30, description="Alert and sample rates are over this.")
    samples_page: int = Field(default=60, ge=1, le=500, description="Samples per page.")

    @model_validator(mode="after")
    def _password_off_loopback(self) -> CloudConsoleConfig:
        problem = self.exposure_problem()
        if problem:
            raise ValueError(problem)
        return self
