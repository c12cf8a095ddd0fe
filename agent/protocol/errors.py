"""Errors raised while parsing inbound MQTT payloads.

Every inbound payload (commands, model pushes, model chunks) goes through one parser that takes bytes
and raises exactly one exception type on anything invalid::

    ProtocolError                the payload on ``topic`` is not a valid message; ``reason`` says why
        reason: ProtocolErrorReason
            oversize             more bytes than the configured limit (checked before decoding)
            bad_utf8             not UTF-8
            bad_json             not JSON (or NaN/Infinity, or nested too deep)
            bad_frame            a framed binary payload with a broken header
            unknown_type         a command whose ``type`` is not one we know
            invalid              JSON that does not fit the message model (types, ranges, extra keys)
            bad_digest           a chunk whose bytes do not hash to the sha256 it announces

The error keeps the ``request_id`` of a command when one could be read, so an error reply can name it.
"""

from __future__ import annotations

import enum
from typing import Optional


class ProtocolErrorReason(str, enum.Enum):
    """Why an inbound payload was rejected (also the ``code`` of an error reply)."""

    OVERSIZE = "oversize"
    BAD_UTF8 = "bad_utf8"
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    BAD_DIGEST = "bad_digest"


class ProtocolError(ValueError):
    """An inbound payload is not a valid message.

    Attributes:
        topic: the MQTT topic the payload came on.
        reason: the class of fault (see :class:`ProtocolErrorReason`).
        detail: a human-readable explanation (safe to log and to send back in an error reply).
        request_id: the command's request id if it could be read from the payload, else ``None``.
    """

    def __init__(
        self,
        topic: str,
        reason: ProtocolErrorReason,
        detail: str,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(f"{topic}: {reason.value}: {detail}")
        self.topic = topic
        self.reason = reason
        self.detail = detail
        self.request_id = request_id
