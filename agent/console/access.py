"""Who may use the box page (pure: the request's peer and ``Authorization`` header in, a decision out).

    loopback peer, no password configured        allowed
    loopback peer, password configured           allowed with the right credentials, else 401
    any other peer, no password configured       403 (refused: never open to the plant network)
    any other peer, password configured          allowed with the right credentials, else 401

A password is compared in constant time. The rule holds whatever address the server is bound to, so a
misconfigured bind never opens the page to the network.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Optional, Tuple

from agent.console.config import is_loopback

__all__ = ["Decision", "decide"]


@dataclass(frozen=True)
class Decision:
    """``status`` 200 (go on), 401 (ask for credentials) or 403 (refused); ``reason`` for the log."""

    status: int
    reason: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


def _credentials(header: Optional[str]) -> Optional[Tuple[str, str]]:
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def decide(peer: str, authorization: Optional[str], username: str, password: Optional[str]) -> Decision:
    """The decision for a request from ``peer`` (an IP address) carrying ``authorization``."""
    local = is_loopback(peer)
    if password is None:
        if local:
            return Decision(200, "loopback")
        return Decision(403, f"{peer} is not loopback and no console password is set")
    given = _credentials(authorization)
    if given is None:
        return Decision(401, "no credentials")
    user_ok = hmac.compare_digest(given[0].encode("utf-8"), username.encode("utf-8"))
    password_ok = hmac.compare_digest(given[1].encode("utf-8"), password.encode("utf-8"))
    if user_ok and password_ok:
        return Decision(200, "password")
    return Decision(401, "wrong credentials")
