"""Binary framing for messages that carry bytes (sample JPEGs, snapshots, model chunks).

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic b"EVL1"
    4       4     n = length of the header in bytes (uint32)
    8       n     header: UTF-8 JSON object (a SampleMeta / SnapshotRef / ModelChunkHeader)
    8+n     rest  body: the raw bytes (JPEG, chunk)

The same framing is used on MQTT 5 and 3.1.1, so a receiver needs one decoder whatever protocol the
sender negotiated, and bridges or brokers that drop MQTT 5 user properties lose nothing. Pure functions.
"""

from __future__ import annotations

import struct
from typing import Tuple

from agent.protocol.errors import ProtocolError, ProtocolErrorReason

MAGIC = b"EVL1"
_PREFIX = struct.Struct(">4sI")


def encode_frame(header_json: bytes, body: bytes) -> bytes:
    """Frame ``header_json`` (UTF-8 JSON object bytes) and ``body`` into one payload."""
    return _PREFIX.pack(MAGIC, len(header_json)) + header_json + body


def decode_frame(topic: str, payload: bytes, max_header_bytes: int) -> Tuple[bytes, bytes]:
    """Split a framed payload into (header JSON bytes, body bytes).

    Raises:
        ProtocolError: ``bad_frame`` if the magic is wrong, the payload is shorter than announced, or the
            header is longer than ``max_header_bytes``.
    """
    if len(payload) < _PREFIX.size:
        raise ProtocolError(topic, ProtocolErrorReason.BAD_FRAME, f"{len(payload)} bytes: shorter than prefix")
    magic, header_len = _PREFIX.unpack_from(payload)
    if magic != MAGIC:
        raise ProtocolError(topic, ProtocolErrorReason.BAD_FRAME, f"bad magic {magic!r}")
    if header_len > max_header_bytes:
        raise ProtocolError(topic, ProtocolErrorReason.BAD_FRAME, f"header of {header_len} bytes > {max_header_bytes}")
    end = _PREFIX.size + header_len
    if end > len(payload):
        raise ProtocolError(topic, ProtocolErrorReason.BAD_FRAME, "header runs past the end of the payload")
    return bytes(payload[_PREFIX.size : end]), bytes(payload[end:])
