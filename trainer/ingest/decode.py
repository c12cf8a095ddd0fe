"""``(topic, payload)`` → one store record: parsed with the agent's own ``agent.protocol`` parsers (the same
models and framing the devices encode with), checked against the topic, or turned into a counted drop. Pure.

Checks, in order: the topic is a device topic (``bad_topic``) → size limit and parsing, body length and
SHA-256 (the protocol's reasons: ``oversize``, ``bad_frame``, ``bad_json``, ``invalid``, ``bad_digest``, ...) →
the payload names the device (and site, camera, topic) it was published under (``device_mismatch``,
``site_mismatch``, ``camera_mismatch``) → an image body is a whole JPEG of the size its metadata says
(``invalid``: ``trainer.ingest.jpeg`` reads its header). The site broker's ACL already lets a device publish
only under its own id; this check makes a message claiming another device's identity a counted rejection, not
a sample.
"""

from __future__ import annotations

import json
from typing import Optional

from agent.protocol import (
    ProtocolError,
    ProtocolLimits,
    parse_alert,
    parse_camera_status,
    parse_device_status,
    parse_ota_state,
    parse_sample,
    parse_snapshot,
)
from trainer.ingest.jpeg import JpegError, jpeg_size
from trainer.ingest.topics import Kind, TopicError, parse_topic
from trainer.store import (
    AlertIn,
    CameraStatusIn,
    DeviceStatusIn,
    DropIn,
    DropReason,
    Origin,
    OtaReportIn,
    Record,
    SampleIn,
    SnapshotIn,
)


def _image_problem(jpeg: bytes, width: int, height: int) -> str:
    """What is wrong with a body whose metadata says ``width`` x ``height`` ("" when nothing): boxes are
    drawn against those dimensions, so the header must say the same."""
    try:
        found = jpeg_size(jpeg)
    except JpegError as exc:
        return f"is not a whole JPEG: {exc}"
    if found != (width, height):
        return f"is {found[0]}x{found[1]}, its metadata says {width}x{height}"
    return ""


def _message_id(payload: bytes) -> Optional[str]:
    """Best effort: the ``id`` of a JSON or framed payload, for the forensic record of a rejection."""
    try:
        if payload[:4] == b"EVL1" and len(payload) >= 8:
            length = int.from_bytes(payload[4:8], "big")
            payload = payload[8 : 8 + min(length, 65536)]
        if len(payload) > 65536:
            return None
        value = json.loads(payload.decode("utf-8")).get("id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value[:128] if isinstance(value, str) else None


def decode(
    topic: str, payload: bytes, prefix: str, limits: ProtocolLimits, received_at: float, worker: str
) -> Optional[Record]:
    """The record for one message, or ``None`` for a cleared retained topic (an empty payload on a status
    topic: nothing to store). Never raises on bad input."""

    def drop(reason: DropReason, detail: str, site: str = "", device: str = "") -> DropIn:
        return DropIn(
            site=site,
            device=device,
            topic=topic[:512],
            reason=reason,
            detail=detail[:1000],
            size=len(payload),
            head=bytes(payload[:4096]),
            received_at=received_at,
            message_id=_message_id(bytes(payload[:70000])),
        )

    try:
        ref = parse_topic(topic, prefix)
    except TopicError as exc:
        return drop(DropReason.BAD_TOPIC, str(exc))
    if not payload and not ref.kind.shared:
        return None
    origin = Origin(site=ref.site, device=ref.device, topic=topic, received_at=received_at, worker=worker)
    try:
        if ref.kind is Kind.SAMPLE:
            meta, jpeg = parse_sample(topic, payload, limits)
            if meta.device != ref.device:
                return drop(DropReason.DEVICE_MISMATCH, f"sample names device {meta.device!r}", ref.site, ref.device)
            problem = _image_problem(jpeg, meta.image.width, meta.image.height)
            if problem:
                return drop(DropReason.INVALID, f"sample body {problem}", ref.site, ref.device)
            return SampleIn(origin, meta, jpeg)
        if ref.kind is Kind.SNAPSHOT:
            snapshot, jpeg = parse_snapshot(topic, payload, limits)
            if snapshot.topic != topic:
                return drop(
                    DropReason.DEVICE_MISMATCH, f"snapshot names topic {snapshot.topic[:200]!r}", ref.site, ref.device
                )
            problem = _image_problem(jpeg, snapshot.image.width, snapshot.image.height)
            if problem:
                return drop(DropReason.INVALID, f"snapshot body {problem}", ref.site, ref.device)
            return SnapshotIn(origin, snapshot, jpeg)
        if ref.kind is Kind.ALERT:
            event = parse_alert(topic, payload, limits)
            if event.device != ref.device:
                return drop(DropReason.DEVICE_MISMATCH, f"alert names device {event.device!r}", ref.site, ref.device)
            return AlertIn(origin, event)
        if ref.kind is Kind.OTA_STATE:
            report = parse_ota_state(topic, payload, limits)
            if report.device != ref.device:
                return drop(DropReason.DEVICE_MISMATCH, f"report names device {report.device!r}", ref.site, ref.device)
            return OtaReportIn(origin, report)
        if ref.kind is Kind.STATUS:
            status = parse_device_status(topic, payload, limits)
            if status.device != ref.device:
                return drop(DropReason.DEVICE_MISMATCH, f"status names device {status.device!r}", ref.site, ref.device)
            if status.site != ref.site:
                return drop(DropReason.SITE_MISMATCH, f"status names site {status.site!r}", ref.site, ref.device)
            return DeviceStatusIn(origin, status)
        camera_status = parse_camera_status(topic, payload, limits)
        if camera_status.device != ref.device:
            return drop(
                DropReason.DEVICE_MISMATCH, f"camera status names device {camera_status.device!r}", ref.site, ref.device
            )
        if camera_status.camera != ref.camera:
            return drop(
                DropReason.CAMERA_MISMATCH, f"camera status names camera {camera_status.camera!r}", ref.site, ref.device
            )
        return CameraStatusIn(origin, camera_status)
    except ProtocolError as exc:
        return drop(DropReason(exc.reason.value), exc.detail, ref.site, ref.device)
