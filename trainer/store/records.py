"""What the index writer is given: one record per MQTT message, already parsed and checked by ingest.

The ingest decoder (``trainer.ingest.decode``) turns ``(topic, payload)`` into exactly one of these; the
index writer (``trainer.store.index``) applies a batch of them in one transaction. Frozen: they cross from the
writer thread's batch into the database and nothing changes them on the way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional, Union

from agent.protocol import AlertEvent, CameraStatus, DeviceStatus, OtaStateReport, SampleMeta, SnapshotRef


@dataclass(frozen=True)
class Origin:
    """Where and when a message came from (the topic's site and device, already checked against the payload)."""

    site: str
    device: str
    topic: str
    received_at: float
    worker: str


@dataclass(frozen=True)
class SampleIn:
    origin: Origin
    meta: SampleMeta
    jpeg: bytes


@dataclass(frozen=True)
class SnapshotIn:
    origin: Origin
    ref: SnapshotRef
    jpeg: bytes


@dataclass(frozen=True)
class AlertIn:
    origin: Origin
    event: AlertEvent


@dataclass(frozen=True)
class DeviceStatusIn:
    origin: Origin
    status: DeviceStatus


@dataclass(frozen=True)
class CameraStatusIn:
    origin: Origin
    status: CameraStatus


@dataclass(frozen=True)
class OtaReportIn:
    origin: Origin
    report: OtaStateReport


class DropReason(str, enum.Enum):
    """Why a message was not stored. The protocol's own reasons (``agent.protocol.ProtocolErrorReason``) come
    first; then the checks ingest adds, and the store's refusals and duplicates."""

    OVERSIZE = "oversize"
    BAD_UTF8 = "bad_utf8"
    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    BAD_DIGEST = "bad_digest"
    BAD_TOPIC = "bad_topic"
    DEVICE_MISMATCH = "device_mismatch"
    SITE_MISMATCH = "site_mismatch"
    CAMERA_MISMATCH = "camera_mismatch"
    STORE_FULL = "store_full"
    DUPLICATE_ID = "duplicate_id"
    DUPLICATE_IMAGE = "duplicate_image"

    @property
    def is_duplicate(self) -> bool:
        return self in (DropReason.DUPLICATE_ID, DropReason.DUPLICATE_IMAGE)


@dataclass(frozen=True)
class DropIn:
    """A message ingest rejected: counted per (device, reason); its first bytes are kept for forensics.

    ``device`` is the topic's device level when the topic had one (``""`` otherwise): the device the broker's
    ACL let publish there.
    """

    site: str
    device: str
    topic: str
    reason: DropReason
    detail: str
    size: int
    head: bytes
    received_at: float
    message_id: Optional[str] = None


Record = Union[SampleIn, SnapshotIn, AlertIn, DeviceStatusIn, CameraStatusIn, OtaReportIn, DropIn]


class Outcome(str, enum.Enum):
    """What the index did with one record."""

    STORED = "stored"  # a new sample, snapshot, alert or OTA report
    UPDATED = "updated"  # a status that is newer than the one held
    STALE = "stale"  # a status older than the one held (a retained re-delivery): kept as last seen only
    DUPLICATE = "duplicate"  # seen before (message id, or the same image from the same device)
    REFUSED = "refused"  # the store is full
    DROPPED = "dropped"  # rejected by ingest (a DropIn), counted
