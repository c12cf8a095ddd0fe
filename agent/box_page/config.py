"""``console:`` in the agent's configuration: the box's commissioning page (off unless enabled)."""

from __future__ import annotations

import ipaddress
from typing import Optional

from pydantic import Field, model_validator

from agent.strict import StrictModel


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only ever reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PageAccess(StrictModel):
    """Where a page listens and who may open it (the box page here; the fleet pages extend it too)."""

    host: str = Field(
        default="127.0.0.1",
        description="Address to bind. Anything but loopback needs a password: reach the page through an SSH tunnel "
        "(ssh -L PORT:127.0.0.1:PORT host) or set one and bind the network's interface.",
    )
    port: int = Field(default=8090, ge=0, le=65535, description="TCP port (0: any free port, for tests).")
    username: str = Field(default="operator", min_length=1, max_length=64, description="HTTP Basic user name.")
    password: Optional[str] = Field(
        default=None,
        min_length=12,
        max_length=256,
        description="HTTP Basic password (use !credential console-password). Required when host is not loopback; "
        "requests from other machines are refused without it, even through a proxy on this one.",
    )

    def exposure_problem(self) -> Optional[str]:
        """Why this binding would expose the page without a password (``None``: it does not)."""
        if is_loopback(self.host) or self.password:
            return None
        return (
            f"console.host {self.host!r} is not loopback: set console.password (!credential console-password) "
            "or bind 127.0.0.1 and use an SSH tunnel"
        )


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
