"""Who may use the box page (pure: the request's peer and ``Authorization`` header in, a decision out).

    loopback peer, no password configured        allowed
    loopback peer, password configured           allowed with the right credentials, else 401
    any other peer, no password configured       403 (refused: never open to the plant network)
    any other peer, password configured          allowed with the right credentials, else 401

Without a password, the request's ``Host`` must also name loopback (``localhost``, ``127.x``, ``[::1]``):
otherwise a web page elsewhere could rebind its own name to 127.0.0.1 and read the page (or send its
commands, Origin and Host both being its name) from a browser on the box or at the end of an SSH tunnel
(DNS rebinding). With a password, the browser never sends this page's credentials to another name.

A password is compared in constant time. The rule holds whatever address the server is bound to, so a
misconfigured bind never opens the page to the network.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Optional, Tuple

from agent.web.config import is_loopback

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


def _host_name(host: Optional[str]) -> str:
    """``localhost`` of ``localhost:8090``, ``::1`` of ``[::1]:8090``."""
    host = (host or "").strip()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def decide(
    peer: str, authorization: Optional[str], username: str, password: Optional[str], host: Optional[str] = None
) -> Decision:
    """The decision for a request from ``peer`` (an IP address) carrying ``authorization`` and ``Host: host``."""
    local = is_loopback(peer)
    if password is None:
        if not local:
            return Decision(403, f"{peer} is not loopback and no console password is set")
        if not is_loopback(_host_name(host)):
            return Decision(403, f"Host {str(host)[:100]!r} does not name loopback (DNS rebinding?)")
        return Decision(200, "loopback")
    given = _credentials(authorization)
    if given is None:
        return Decision(401, "no credentials")
    user_ok = hmac.compare_digest(given[0].encode("utf-8"), username.encode("utf-8"))
    password_ok = hmac.compare_digest(given[1].encode("utf-8"), password.encode("utf-8"))
    if user_ok and password_ok:
        return Decision(200, "password")
    return Decision(401, "wrong credentials")
