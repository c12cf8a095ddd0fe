"""Pydantic models of every MQTT message the agent sends or receives.

Outbound (device → broker): :class:`DeviceStatus`, :class:`CameraStatus`, :class:`AlertEvent`,
:class:`SampleMeta` (header of a framed JPEG, see :mod:`agent.protocol.framing`), :class:`OtaStateReport`,
:class:`CommandReply` (ok or error).

Inbound (broker → device): :data:`Command` (a union discriminated on ``type``), :class:`ModelPush`,
:class:`ModelChunkHeader` (header of a framed chunk of release bytes).

Every model forbids unknown keys and documents every field; ``docs/schemas/`` holds the JSON schema
generated from each (``python -m agent.protocol.schema docs/schemas``).
"""

from __future__ import annotations

import enum
import sys
from datetime import datetime
from typing import Dict, List, Literal, Optional, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

if sys.version_info >= (3, 9):
    from typing import Annotated
else:  # pragma: no cover - Python 3.8
    from typing_extensions import Annotated

#: Version of this message set; carried in the device status so a consumer can tell what it talks to.
PROTOCOL_VERSION = 1

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_SHA256_PATTERN = r"^[0-9a-f]{64}$"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- shared parts


class ModelRef(_Message):
    """Which model produced a result: lineage carried by every alert and sample."""

    name: str = Field(min_length=1, max_length=128, description="Release name of the model.")
    version: str = Field(min_length=1, max_length=64, description="Release version string of the model.")
    sha256: str = Field(pattern=_SHA256_PATTERN, description="SHA-256 (hex) of the model file that ran.")


class Box(_Message):
    """One detection: a box in source-frame pixels with its class and confidence."""

    x1: float = Field(description="Left edge, pixels in the source frame.")
    y1: float = Field(description="Top edge, pixels in the source frame.")
    x2: float = Field(description="Right edge, pixels in the source frame (>= x1).")
    y2: float = Field(description="Bottom edge, pixels in the source frame (>= y1).")
    class_id: int = Field(ge=0, description="Class index in the model's label list.")
    class_name: str = Field(max_length=128, description="Class label.")
    confidence: float = Field(ge=0.0, le=1.0, description="Detection confidence in [0, 1].")
    track_id: Optional[int] = Field(default=None, ge=0, description="Tracker id of the object, if tracked.")


class ImageInfo(_Message):
    """Describes a JPEG carried in a framed payload or referenced from an alert."""

    content_type: Literal["image/jpeg"] = Field(default="image/jpeg", description="Media type of the image.")
    width: int = Field(gt=0, description="Image width in pixels.")
    height: int = Field(gt=0, description="Image height in pixels.")
    size: int = Field(ge=0, description="Length of the image in bytes.")
    sha256: str = Field(pattern=_SHA256_PATTERN, description="SHA-256 (hex) of the image bytes.")


# --------------------------------------------------------------------------- status


class CameraState(str, enum.Enum):
    """Life-cycle state of one camera source."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STALLED = "stalled"
    STOPPED = "stopped"
    ERROR = "error"


class CameraSummary(_Message):
    """One line per camera inside the device status."""

    camera: str = Field(pattern=_ID_PATTERN, description="Camera id (as in the agent configuration).")
    state: CameraState = Field(description="Current state of the camera source.")
    fps: float = Field(ge=0.0, description="Frames per second processed over the last interval.")


_COUNT = 2**63 - 1  # counters stay within a signed 64-bit integer (what every receiver's database holds)


class ModelQuality(_Message):
    """What the active model did on this device since it started serving (counters since ``since``). The
    cloud compares a new model's figures with the previous model's on the same device: a staged rollout halts
    on a shift in alert rate, in the share of uncertain frames, in mean confidence or in FPS."""

    model_sha256: str = Field(pattern=_SHA256_PATTERN, description="SHA-256 of the model these figures are of.")
    since: AwareDatetime = Field(description="When this model started serving (the counters start there).")
    frames: int = Field(ge=0, le=_COUNT, description="Frames processed by the model, all cameras.")
    detections: int = Field(ge=0, le=_COUNT, description="Detections kept after NMS, all cameras.")
    confidence_sum: float = Field(ge=0.0, description="Sum of those detections' confidences (mean = sum / detections).")
    alerts: int = Field(ge=0, le=_COUNT, description="Alerts raised.")
    uncertain_frames: int = Field(
        ge=0, le=_COUNT, description="Frames triage found uncertain, before any rate limit (sent or not)."
    )


class DeviceStatus(_Message):
    """Retained status of a device; the broker publishes the ``offline`` variant as the last will."""

    device: str = Field(pattern=_ID_PATTERN, description="Device id (the TLS identity / MQTT username).")
    site: str = Field(pattern=_ID_PATTERN, description="Site id.")
    state: Literal["online", "offline"] = Field(description="Whether the agent is connected.")
    protocol: int = Field(default=PROTOCOL_VERSION, ge=1, description="Version of this message set.")
    agent_version: str = Field(max_length=64, description="Version of the edge-agent software.")
    model: Optional[ModelRef] = Field(default=None, description="The active model, if one is loaded.")
    model_error: Optional[str] = Field(
        default=None,
        max_length=1024,
        description="Why no model runs (missing or unloadable at start): the box waits for a signed release.",
    )
    cameras: List[CameraSummary] = Field(default_factory=list, description="Summary of each camera.")
    groups: List[Annotated[str, Field(pattern=_ID_PATTERN)]] = Field(
        default_factory=list, max_length=64, description="Device groups whose model pushes apply (rollout stages)."
    )
    quality: Optional[ModelQuality] = Field(default=None, description="The active model's figures on this device.")
    ts: AwareDatetime = Field(description="When this status was produced (UTC, ISO 8601).")


class CameraDecode(_Message):
    """What a camera's video decoder did since the agent started (GStreamer-read cameras: RTSP)."""

    codec: str = Field(default="", max_length=16, description="h264 / h265 (empty until a stream was described).")
    decoder: str = Field(
        default="", max_length=256, description="Which decoder and why (cpu, nvv4l2, nvdec, vaapi; auto's reason)."
    )
    received: int = Field(ge=0, description="Access units that reached the decoder.")
    decoded: int = Field(ge=0, description="Frames the decoder produced.")
    decode_errors: int = Field(ge=0, description="Access units the decoder dropped as undecodable.")
    waited_for_keyframe: int = Field(
        default=0, ge=0, description="Access units dropped before a connection's first keyframe (mid-GOP joins)."
    )
    decode_ms: Optional[float] = Field(
        default=None, ge=0.0, description="Mean CPU milliseconds per decoded frame (null: decoded in hardware)."
    )


class CameraMainStream(_Message):
    """A camera's main (full-resolution) stream: received, decoded only for snapshots and samples."""

    address: str = Field(max_length=512, description="Its address, without credentials.")
    state: CameraState = Field(description="State of the main stream's connection.")
    error: Optional[str] = Field(default=None, max_length=1024, description="Why it is not receiving, if so.")
    codec: str = Field(default="", max_length=16, description="h264 / h265.")
    received_bytes: int = Field(ge=0, description="Bytes received since the agent started.")
    stills: int = Field(ge=0, description="Stills decoded from it (snapshots, samples).")
    still_failures: int = Field(default=0, ge=0, description="Stills that could not be decoded.")
    still_ms: Optional[float] = Field(default=None, ge=0.0, description="Mean milliseconds to decode a still.")
    width: Optional[int] = Field(default=None, ge=0, description="Width of its stills.")
    height: Optional[int] = Field(default=None, ge=0, description="Height of its stills.")


class CameraStatus(_Message):
    """Retained status of one camera, on its own topic (republished at every status interval)."""

    device: str = Field(pattern=_ID_PATTERN, description="Device id.")
    camera: str = Field(pattern=_ID_PATTERN, description="Camera id.")
    state: CameraState = Field(description="Current state of the camera source.")
    source: str = Field(max_length=512, description="Source kind and redacted address (no credentials).")
    fps: float = Field(ge=0.0, description="Frames per second delivered over the last interval.")
    frames: int = Field(ge=0, description="Frames read since the agent started.")
    drops: int = Field(ge=0, description="Frames dropped because a newer one arrived first.")
    reconnects: int = Field(ge=0, description="Successful reconnects since the agent started.")
    reconnect_attempts: int = Field(
        default=0, ge=0, description="Reconnect attempts since the agent started, failed ones included."
    )
    last_frame_at: Optional[AwareDatetime] = Field(default=None, description="Time of the last frame.")
    error: Optional[str] = Field(default=None, max_length=1024, description="Last error, if any.")
    width: Optional[int] = Field(default=None, ge=0, description="Width of the newest frame.")
    height: Optional[int] = Field(default=None, ge=0, description="Height of the newest frame.")
    stale: int = Field(
        default=0, ge=0, description="Frames the pipeline refused as older than the camera's stall limit."
    )
    decode: Optional[CameraDecode] = Field(default=None, description="The video decoder's figures, if it has one.")
    main: Optional[CameraMainStream] = Field(default=None, description="The camera's main stream, if it has one.")
    ts: AwareDatetime = Field(description="When this status was produced.")


# --------------------------------------------------------------------------- alerts and samples


class AlertRuleRef(_Message):
    """The alert rule that fired and the parameters it fired with."""

    name: str = Field(min_length=1, max_length=128, description="Rule name from the configuration.")
    classes: List[str] = Field(default_factory=list, description="Classes the rule watches.")
    min_confidence: float = Field(ge=0.0, le=1.0, description="Minimum confidence of the rule.")
    min_frames: int = Field(ge=1, description="Consecutive frames required before firing.")
    zone: Optional[str] = Field(default=None, max_length=128, description="Zone name, if the rule has one.")


class SnapshotRef(_Message):
    """Where the JPEG snapshot of an alert travels: a framed message on the snapshots topic."""

    id: str = Field(pattern=_ID_PATTERN, description="Message id of the snapshot message.")
    topic: str = Field(max_length=512, description="Topic the snapshot is published on.")
    image: ImageInfo = Field(description="Size and digest of the JPEG.")
    request_id: Optional[str] = Field(
        default=None,
        max_length=128,
        description="The request_snapshot command this answers (null for an alert's snapshot).",
    )
    camera: Optional[str] = Field(
        default=None, pattern=_ID_PATTERN, description="Camera the frame comes from (set on requested snapshots)."
    )


class AlertEvent(_Message):
    """An alert: a rule fired on a camera."""

    id: str = Field(pattern=_ID_PATTERN, description="Unique message id; receivers drop duplicates by it.")
    device: str = Field(pattern=_ID_PATTERN, description="Device id.")
    camera: str = Field(pattern=_ID_PATTERN, description="Camera id.")
    model: ModelRef = Field(description="Model that produced the detections.")
    frame_ts: AwareDatetime = Field(description="Capture time of the frame that fired the alert.")
    created_ts: AwareDatetime = Field(description="When the alert was produced.")
    boxes: List[Box] = Field(description="Detections that satisfied the rule.")
    rule: AlertRuleRef = Field(description="The rule that fired.")
    snapshot: Optional[SnapshotRef] = Field(default=None, description="JPEG snapshot, if one was taken.")


class SampleReason(str, enum.Enum):
    """Why triage sent a frame back to the trainer."""

    UNCERTAIN = "uncertain"
    INCONSISTENT = "inconsistent"
    FLAGGED = "flagged"
    RANDOM = "random"


class SyntheticFrameRef(_Message):
    """The render identity of a frame from the ``synthetic`` camera source: re-rendering it gives the frame and
    its exact ground truth (the cloud's oracle labeller, a stand-in for human review, uses it). Real cameras
    never send it."""

    domain: str = Field(pattern=_ID_PATTERN, description="Scene domain (agent.synthetic.DOMAINS).")
    seed: int = Field(ge=0, le=2**63 - 1, description="Seed of the rendered stream.")
    index: int = Field(ge=0, le=2**63 - 1, description="Index of the frame in the rendered stream.")
    width: int = Field(gt=0, le=16384, description="Rendered width in pixels.")
    height: int = Field(gt=0, le=16384, description="Rendered height in pixels.")


class SampleMeta(_Message):
    """Metadata of a misdetection sample; the header of a framed payload whose body is the JPEG."""

    id: str = Field(pattern=_ID_PATTERN, description="Unique message id; receivers drop duplicates by it.")
    device: str = Field(pattern=_ID_PATTERN, description="Device id.")
    camera: str = Field(pattern=_ID_PATTERN, description="Camera id.")
    reason: SampleReason = Field(description="Triage strategy that picked the frame.")
    track_id: Optional[int] = Field(default=None, ge=0, description="Track that triggered it, if any.")
    predictions: List[Box] = Field(description="Every detection on the frame after NMS.")
    thresholds: Dict[str, float] = Field(description="Thresholds in force (name → value).")
    model: ModelRef = Field(description="Model that produced the predictions.")
    frame_ts: AwareDatetime = Field(description="Capture time of the frame.")
    image: ImageInfo = Field(description="The JPEG in the body of the framed payload.")
    note: Optional[str] = Field(default=None, max_length=1024, description="Operator note (flagged).")
    synthetic: Optional[SyntheticFrameRef] = Field(
        default=None, description="Render identity of the frame; only frames of the synthetic camera carry it."
    )


# --------------------------------------------------------------------------- model pushes and OTA


class ReleaseRef(_Message):
    """Identifies a signed model release."""

    name: str = Field(pattern=_ID_PATTERN, description="Release name.")
    version: str = Field(min_length=1, max_length=64, description="Release version string.")
    counter: int = Field(ge=0, description="Monotonic release counter (anti-rollback floor).")


class ChunkPlan(_Message):
    """How the release bytes travel over MQTT for sites without HTTP access."""

    topic: str = Field(max_length=512, description="Topic prefix; chunk i is retained on '{topic}/{i}'.")
    total: int = Field(ge=1, description="Number of chunks.")
    chunk_size: int = Field(ge=1, description="Bytes per chunk (the last one may be shorter).")


class ModelPush(_Message):
    """Notification that a release is available (retained on the fleet or group topic)."""

    release: ReleaseRef = Field(description="The release being pushed.")
    channel: str = Field(pattern=_ID_PATTERN, description="Release channel, e.g. 'stable' or 'canary'.")
    bundle_sha256: str = Field(pattern=_SHA256_PATTERN, description="SHA-256 of the whole release bundle.")
    bundle_size: int = Field(ge=0, description="Length of the release bundle in bytes.")
    urls: List[str] = Field(
        default_factory=list, max_length=16, description="HTTP(S) locations of the bundle / TUF repository."
    )
    chunks: Optional[ChunkPlan] = Field(default=None, description="Chunked MQTT transfer, if offered.")
    published_at: AwareDatetime = Field(description="When the push was published.")


class ModelChunkHeader(_Message):
    """Header of a framed chunk of release bytes; the body is the chunk."""

    release: ReleaseRef = Field(description="Release the chunk belongs to.")
    bundle_sha256: str = Field(pattern=_SHA256_PATTERN, description="SHA-256 of the whole bundle.")
    index: int = Field(ge=0, description="Chunk index, 0-based.")
    total: int = Field(ge=1, description="Number of chunks in the bundle.")
    offset: int = Field(ge=0, description="Byte offset of the chunk in the bundle.")
    size: int = Field(ge=0, description="Length of the chunk in bytes.")
    sha256: str = Field(pattern=_SHA256_PATTERN, description="SHA-256 of this chunk's bytes.")


class OtaPhase(str, enum.Enum):
    """Phase of the OTA installer."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGING = "staging"
    HEALTH_CHECK = "health_check"
    SWITCHING = "switching"
    PROBATION = "probation"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


class OtaStateReport(_Message):
    """Progress and result of a model update."""

    id: str = Field(pattern=_ID_PATTERN, description="Unique message id.")
    device: str = Field(pattern=_ID_PATTERN, description="Device id.")
    phase: OtaPhase = Field(description="Current phase of the installer.")
    release: Optional[ReleaseRef] = Field(default=None, description="Release being installed, if any.")
    active: Optional[ReleaseRef] = Field(default=None, description="Release running now.")
    progress: Optional[float] = Field(default=None, ge=0.0, le=1.0, description="Fraction done in phase.")
    detail: Optional[str] = Field(default=None, max_length=2048, description="Explanation / error text.")
    ts: AwareDatetime = Field(description="When this report was produced.")


# --------------------------------------------------------------------------- commands


class _CommandBase(_Message):
    request_id: str = Field(pattern=_ID_PATTERN, description="Caller's id; echoed in the reply.")
    sent_at: Optional[AwareDatetime] = Field(default=None, description="When the caller sent it.")


class FlagWindowCommand(_CommandBase):
    """Operator/PLC feedback: frames of a camera in a time window are misdetections; sample them."""

    type: Literal["flag_window"] = Field(description="Command type.")
    camera: str = Field(pattern=_ID_PATTERN, description="Camera id.")
    start: AwareDatetime = Field(description="Start of the flagged window.")
    end: AwareDatetime = Field(description="End of the flagged window (>= start).")
    note: Optional[str] = Field(default=None, max_length=1024, description="Free text from the operator.")


class RequestSnapshotCommand(_CommandBase):
    """Ask for a JPEG of the camera's newest frame (published on the snapshots topic)."""

    type: Literal["request_snapshot"] = Field(description="Command type.")
    camera: str = Field(pattern=_ID_PATTERN, description="Camera id.")


class SetThresholdsCommand(_CommandBase):
    """Change detection/triage thresholds at run time (not persisted across restarts)."""

    type: Literal["set_thresholds"] = Field(description="Command type.")
    camera: Optional[str] = Field(default=None, pattern=_ID_PATTERN, description="Camera id; all if absent.")
    thresholds: Dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        min_length=1, max_length=32, description="Threshold name → value in [0, 1]."
    )


class RollbackCommand(_CommandBase):
    """Roll the model back to the previous / last-known-good release."""

    type: Literal["rollback"] = Field(description="Command type.")
    reason: Optional[str] = Field(default=None, max_length=1024, description="Why (logged, reported).")
    if_active: Optional[ReleaseRef] = Field(
        default=None,
        description="Roll back only while this release (name and counter) is the active one; otherwise the command "
        "is a no-op, so a rollout that repeats its halt never flips a device back to the release it left.",
    )


class PingCommand(_CommandBase):
    """Liveness check of the command channel; answered with an ok reply."""

    type: Literal["ping"] = Field(description="Command type.")


Command = Annotated[
    Union[FlagWindowCommand, RequestSnapshotCommand, SetThresholdsCommand, RollbackCommand, PingCommand],
    Field(discriminator="type"),
]
"""Any inbound command, discriminated on its ``type`` field."""

COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
COMMAND_TYPES = ("flag_window", "request_snapshot", "set_thresholds", "rollback", "ping")


class ReplyStatus(str, enum.Enum):
    """Outcome of a command."""

    OK = "ok"
    ERROR = "error"


class ReplyError(_Message):
    """Why a command failed."""

    code: str = Field(
        min_length=1,
        max_length=64,
        description=(
            "Machine-readable code: a ProtocolErrorReason for malformed commands "
            "(oversize, bad_utf8, bad_json, unknown_type, invalid) or a handler code "
            "(e.g. unknown_camera, busy, internal)."
        ),
    )
    message: str = Field(max_length=2048, description="Human-readable explanation.")


class CommandReply(_Message):
    """Answer to a command, on the device's reply topic."""

    request_id: Optional[str] = Field(
        default=None, max_length=128, description="Request id of the command; null if it was unreadable."
    )
    device: str = Field(pattern=_ID_PATTERN, description="Device id.")
    status: ReplyStatus = Field(description="ok or error.")
    error: Optional[ReplyError] = Field(default=None, description="Set when status is error.")
    result: Optional[Dict[str, Union[str, int, float, bool, None]]] = Field(
        default=None, description="Small flat result object when status is ok."
    )
    ts: AwareDatetime = Field(description="When the reply was produced.")

    @classmethod
    def ok(
        cls,
        request_id: str,
        device: str,
        ts: datetime,
        result: Optional[Dict[str, Union[str, int, float, bool, None]]] = None,
    ) -> CommandReply:
        """An ok reply."""
        return cls(request_id=request_id, device=device, status=ReplyStatus.OK, result=result, ts=ts)

    @classmethod
    def failure(cls, request_id: Optional[str], device: str, ts: datetime, code: str, message: str) -> CommandReply:
        """An error reply with ``code`` and ``message`` (message truncated to the field's limit)."""
        return cls(
            request_id=request_id,
            device=device,
            status=ReplyStatus.ERROR,
            error=ReplyError(code=code, message=message[:2048]),
            ts=ts,
        )
