"""Where a page listens and who may open it: what the box page's and the fleet pages' configurations share."""

from __future__ import annotations

import ipaddress
from typing import Optional

from pydantic import Field

from agent.strict import StrictModel

__all__ = ["PageAccess", "is_loopback"]


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
