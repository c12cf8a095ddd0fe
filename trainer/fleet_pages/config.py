"""``console:`` in trainer.yaml: the fleet pages (``edge-trainer console``)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from agent.link.config import BrokerConnection
from agent.web.config import PageAccess


class CloudConsoleConfig(PageAccess):
    """Where the fleet pages listen and who may open them (loopback, or a password)."""

    port: int = Field(default=9120, ge=0, le=65535, description="TCP port (0: any free port, for tests).")
    username: str = Field(default="fleet", min_length=1, max_length=64, description="HTTP Basic user name.")
    window_hours: float = Field(default=1.0, gt=0, le=24 * 30, description="Alert and sample rates are over this.")
    samples_page: int = Field(default=60, ge=1, le=500, description="Samples per page.")
    broker: Optional[BrokerConnection] = Field(
        default=None,
        description="The site broker for the fleet page's device commands (snapshot, flag, roll back); absent: "
        "rollout.broker; neither: the buttons are off. The account needs write on {prefix}/+/+/cmd and read on "
        "{prefix}/+/+/cmd/reply (deploy/mosquitto/ops.acl).",
    )
    topic_prefix: str = Field(default="edge", description="First topic level(s) with `broker` (else rollout's).")
    command_wait_s: float = Field(default=10.0, gt=0, le=120, description="How long a command waits for its reply.")

    @model_validator(mode="after")
    def _password_off_loopback(self) -> CloudConsoleConfig:
        problem = self.exposure_problem()
        if problem:
            raise ValueError(problem)
        return self
