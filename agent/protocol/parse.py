"""Parsers for inbound payloads: bytes in, a validated model out, :class:`ProtocolError` on anything else.

Order of checks (cheapest first, so a hostile payload costs little): size limit → framing → UTF-8 →
JSON (no NaN/Infinity, bounded nesting) → JSON object → command ``type`` known → model validation →
digest of the body. Also the encoders for the outbound side (JSON and framed payloads).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, NoReturn, Optional, Tuple, Type, TypeVar

from pydantic import BaseModel, ValidationError

from agent.protocol.config import ProtocolLimits
from agent.protocol.errors import ProtocolError, ProtocolErrorReason
from agent.protocol.framing import decode_frame, encode_frame
from agent.protocol.models import (
    COMMAND_ADAPTER,
    COMMAND_TYPES,
    AlertEvent,
    CameraStatus,
    Command,
    DeviceStatus,
    ModelChunkHeader,
    ModelPush,
    OtaStateReport,
    SampleMeta,
    SnapshotRef,
)

M = TypeVar("M", bound=BaseModel)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _load_object(topic: str, payload: bytes, request_id_hint: bool = False) -> Dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(topic, ProtocolErrorReason.BAD_UTF8, f"not UTF-8 at byte {exc.start}") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays; json raises it instead of a ValueError.
        raise ProtocolError(topic, ProtocolErrorReason.BAD_JSON, str(exc)[:200]) from None
    if not isinstance(document, dict):
        raise ProtocolError(
            topic, ProtocolErrorReason.INVALID, f"expected a JSON object, got {type(document).__name__}"
        )
    return document


def _request_id_of(document: Dict[str, Any]) -> Optional[str]:
    """The request id an error reply can carry: a string of 1..128 characters that encodes as UTF-8 (JSON may
    escape a lone surrogate, ``"\\ud800"``, which no reply can hold); otherwise ``None``."""
    value = document.get("request_id")
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _validation_detail(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(item) for item in error.get("loc", ())) or "(root)"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)[:1000]


def _check_size(topic: str, payload: bytes, limit: int) -> None:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError(topic, ProtocolErrorReason.INVALID, f"payload is {type(payload).__name__}")
    if len(payload) > limit:
        raise ProtocolError(topic, ProtocolErrorReason.OVERSIZE, f"{len(payload)} bytes > limit {limit}")


def _validate(topic: str, model: Type[M], document: Dict[str, Any]) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ProtocolError(topic, ProtocolErrorReason.INVALID, _validation_detail(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:  # defensive: validators of nested types
        raise ProtocolError(topic, ProtocolErrorReason.INVALID, str(exc)[:200]) from None


def parse_command(topic: str, payload: bytes, limits: ProtocolLimits) -> Command:
    """Parse a command payload.

    Raises:
        ProtocolError: on anything invalid; ``request_id`` is set when the payload had a readable one.
    """
    _check_size(topic, payload, limits.max_command_bytes)
    document = _load_object(topic, bytes(payload))
    request_id = _request_id_of(document)
    kind = document.get("type")
    if not isinstance(kind, str) or kind not in COMMAND_TYPES:
        shown = kind if isinstance(kind, str) else type(kind).__name__
        raise ProtocolError(
            topic,
            ProtocolErrorReason.UNKNOWN_TYPE,
            f"unknown command type {str(shown)[:64]!r}; known: {', '.join(COMMAND_TYPES)}",
            request_id,
        )
    try:
        return COMMAND_ADAPTER.validate_python(document)
    except ValidationError as exc:
        raise ProtocolError(topic, ProtocolErrorReason.INVALID, _validation_detail(exc), request_id) from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(topic, ProtocolErrorReason.INVALID, str(exc)[:200], request_id) from None


def parse_model_push(topic: str, payload: bytes, limits: ProtocolLimits) -> ModelPush:
    """Parse a model push notification (JSON)."""
    _check_size(topic, payload, limits.max_push_bytes)
    return _validate(topic, ModelPush, _load_object(topic, bytes(payload)))


def _parse_framed(topic: str, payload: bytes, model: Type[M], limit: int, limits: ProtocolLimits) -> Tuple[M, bytes]:
    _check_size(topic, payload, limit)
    header_bytes, body = decode_frame(topic, bytes(payload), limits.max_frame_header_bytes)
    header = _validate(topic, model, _load_object(topic, header_bytes))
    return header, body


def _check_digest(topic: str, what: str, body: bytes, size: int, sha256: str) -> None:
    if len(body) != size:
        raise ProtocolError(topic, ProtocolErrorReason.BAD_DIGEST, f"{what}: {len(body)} bytes, header {size}")
    if hashlib.sha256(body).hexdigest() != sha256:
        raise ProtocolError(topic, ProtocolErrorReason.BAD_DIGEST, f"{what}: sha256 mismatch")


def parse_model_chunk(topic: str, payload: bytes, limits: ProtocolLimits) -> Tuple[ModelChunkHeader, bytes]:
    """Parse a framed model chunk and verify the chunk's length and SHA-256 before returning it."""
    header, body = _parse_framed(topic, payload, ModelChunkHeader, limits.max_chunk_bytes, limits)
    if header.index >= header.total:
        raise ProtocolError(topic, ProtocolErrorReason.INVALID, f"index {header.index} >= total {header.total}")
    _check_digest(topic, "chunk", body, header.size, header.sha256)
    return header, body


def parse_sample(topic: str, payload: bytes, limits: ProtocolLimits) -> Tuple[SampleMeta, bytes]:
    """Parse a framed sample (trainer ingest side) and verify the JPEG's length and SHA-256."""
    meta, body = _parse_framed(topic, payload, SampleMeta, limits.max_sample_bytes, limits)
    _check_digest(topic, "image", body, meta.image.size, meta.image.sha256)
    return meta, body


def parse_snapshot(topic: str, payload: bytes, limits: ProtocolLimits) -> Tuple[SnapshotRef, bytes]:
    """Parse a framed snapshot and verify the JPEG's length and SHA-256."""
    ref, body = _parse_framed(topic, payload, SnapshotRef, limits.max_sample_bytes, limits)
    _check_digest(topic, "image", body, ref.image.size, ref.image.sha256)
    return ref, body


def _parse_report(topic: str, payload: bytes, model: Type[M], limits: ProtocolLimits) -> M:
    _check_size(topic, payload, limits.max_report_bytes)
    return _validate(topic, model, _load_object(topic, bytes(payload)))


def parse_alert(topic: str, payload: bytes, limits: ProtocolLimits) -> AlertEvent:
    """Parse an alert event (JSON; trainer ingest side)."""
    return _parse_report(topic, payload, AlertEvent, limits)


def parse_device_status(topic: str, payload: bytes, limits: ProtocolLimits) -> DeviceStatus:
    """Parse a retained device status (JSON; trainer ingest side)."""
    return _parse_report(topic, payload, DeviceStatus, limits)


def parse_camera_status(topic: str, payload: bytes, limits: ProtocolLimits) -> CameraStatus:
    """Parse a retained camera status (JSON; trainer ingest side)."""
    return _parse_report(topic, payload, CameraStatus, limits)


def parse_ota_state(topic: str, payload: bytes, limits: ProtocolLimits) -> OtaStateReport:
    """Parse an OTA state report (JSON; trainer ingest side)."""
    return _parse_report(topic, payload, OtaStateReport, limits)


def encode_json(message: BaseModel) -> bytes:
    """Serialise a message model to its JSON payload (UTF-8, no NaN, nulls kept)."""
    return message.model_dump_json().encode("utf-8")


def encode_framed(header: BaseModel, body: bytes) -> bytes:
    """Serialise a framed message (sample, snapshot, chunk): header model + raw body."""
    return encode_frame(encode_json(header), body)
