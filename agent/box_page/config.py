"""``console:`` in the agent's configuration: the box's commissioning page (off unless enabled)."""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.web.config import PageAccess


class ConsoleConfig(PageAccess):
    """The box page: camera states, a live annotated preview, model, spool, link, recent alerts and samples,
    and buttons for the MQTT commands. Served by a standard-library HTTP server thread of the daemon."""

    enabled: bool = Field(default=False, description="Serve the page; off by default.")
    preview_fps: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="Most preview images per second per camera, however many viewers: each is encoded once and "
        "shared, in the console's thread, never in the inference thread.",
    )
    preview_width: int = Field(
        default=640,
        ge=160,
        le=3840,
        description="Preview images are scaled down to this width (the cost is mostly the JPEG encode, which "
        "grows with the pixels: about 0.5 ms at 640, 1.1 ms at 960 on one x86 core).",
    )
    preview_jpeg_quality: int = Field(default=70, ge=10, le=95, description="JPEG quality of the preview.")
    command_timeout_s: float = Field(default=15.0, gt=0, le=120, description="Longest wait for a command's reply.")

    @model_validator(mode="after")
    def _password_off_loopback(self) -> ConsoleConfig:
        problem = self.exposure_problem() if self.enabled else None
        if problem:
            raise ValueError(problem)
        return self
