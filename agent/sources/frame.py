"""Frames and source states: the pure part of the camera sources (their reconnect backoff is
:class:`agent.core.backoff.Backoff`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Dict, Optional

import numpy.typing as npt


@dataclass(frozen=True)
class SyntheticOrigin:
    """What a rendered frame was rendered from: enough to render it again and read its ground truth.

    Carried by frames of the ``synthetic`` source only (a real camera has no such identity), and from there in
    the lineage of every sample taken of the frame, so the cloud's oracle labeller (a stand-in for human
    review) can re-render it.

    Attributes:
        domain: scene domain name (``agent.synthetic.DOMAINS``).
        seed: the stream's seed.
        index: the frame's index in the stream (what ``render_stream_frame`` was called with; differs from
            :attr:`Frame.index` when a prerendered loop is replayed).
        width, height: the rendered size in pixels.
    """

    domain: str
    seed: int
    index: int
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    """One captured image.

    Attributes:
        camera: the camera's name.
        index: 0, 1, 2, ... per source, increasing across reconnects (gaps mean frames were dropped by the
            fps limit or overwritten before anyone took them).
        captured_monotonic: ``time.monotonic()`` when the reader got the frame (latency, rates).
        captured_wall: ``time.time()`` at the same moment (timestamps in messages, flag windows).
        image: ``(H, W, 3)`` BGR uint8.
        origin: the render identity of a synthetic frame, ``None`` for every real camera.
    """

    camera: str
    index: int
    captured_monotonic: float
    captured_wall: float
    image: npt.NDArray[Any]
    origin: Optional[SyntheticOrigin] = None

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class DecodeStats:
    """What a camera's decoder did: one connection's figures, or the sum over every connection of a camera.

    Attributes:
        received: access units that reached the decoder (after the first keyframe of each connection).
        waited: access units dropped before the first keyframe of a connection (a reader joining mid-GOP
            must not hand grey or smeared frames to the model).
        decoded: frames that came out of the decoder and its colour conversion.
        decode_errors: access units the decoder dropped as undecodable (corrupt, or references lost).
        decode_cpu_s: CPU seconds spent decoding and converting the ``timed_frames`` frames.
        timed_frames: frames whose decode CPU time is counted (the CPU decoder; a hardware decoder's frames
            are decoded off the CPU and not timed).
        codec: ``h264`` / ``h265`` (the latest connection's).
        decoder: which decoder, and why it was chosen (the latest connection's).
    """

    received: int = 0
    waited: int = 0
    decoded: int = 0
    decode_errors: int = 0
    decode_cpu_s: float = 0.0
    timed_frames: int = 0
    codec: str = ""
    decoder: str = ""

    def __add__(self, other: DecodeStats) -> DecodeStats:
        return DecodeStats(
            self.received + other.received,
            self.waited + other.waited,
            self.decoded + other.decoded,
            self.decode_errors + other.decode_errors,
            self.decode_cpu_s + other.decode_cpu_s,
            self.timed_frames + other.timed_frames,
            other.codec or self.codec,
            other.decoder or self.decoder,
        )

    @property
    def decode_ms(self) -> Optional[float]:
        """Mean CPU milliseconds per decoded frame, ``None`` before any frame was timed."""
        return round(1000.0 * self.decode_cpu_s / self.timed_frames, 2) if self.timed_frames else None

    def as_record(self) -> Dict[str, Any]:
        return {
            "codec": self.codec,
            "decoder": self.decoder,
            "received": self.received,
            "waited_for_keyframe": self.waited,
            "decoded": self.decoded,
            "decode_errors": self.decode_errors,
            "decode_ms": self.decode_ms,
            "decode_cpu_s": round(self.decode_cpu_s, 3),
        }


@dataclass(frozen=True)
class AccessUnit:
    """One compressed frame of a stream that is received but not decoded (a camera's main stream).

    Attributes:
        data: the access unit, Annex B byte stream (parameter sets inline before each keyframe).
        pts: its presentation time (nanoseconds, the stream's clock).
        keyframe: decodable on its own (an IDR): a still can start here.
        arrived_monotonic, arrived_wall: when it reached the box.
    """

    data: bytes
    pts: int
    keyframe: bool
    arrived_monotonic: float
    arrived_wall: float


class SourceState(str, Enum):
    """Life cycle of a camera source.

    ::

        STARTING ──► STREAMING ◄──► STALLED
            │            │             │
            ▼            ▼             ▼
        RECONNECTING ◄───┴─────────────┘     (open failed / read failed / stream ended unexpectedly)
            │  ▲
            └──┘  backoff, retry
        any ──► STOPPED  (stop() called, or a file/folder that does not loop reached its end)
        any ──► FAILED   (a configuration error retrying cannot fix)
    """

    STARTING = "starting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (SourceState.STOPPED, SourceState.FAILED)


@dataclass(frozen=True)
class MainStreamStatus:
    """A camera's main stream (received, decoded only for stills: agent/sources/stills.py) for its status."""

    address: str
    state: SourceState
    reason: str
    codec: str
    units: int
    buffered_bytes: int
    received_units: int
    received_bytes: int
    reconnects: int
    stills: int
    still_failures: int
    still_ms_total: float
    width: int
    height: int

    @property
    def still_ms(self) -> Optional[float]:
        """Mean wall milliseconds to decode a still (its keyframe and the units up to the moment)."""
        return round(self.still_ms_total / self.stills, 1) if self.stills else None

    def as_record(self) -> Dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state.value,
            "reason": self.reason,
            "codec": self.codec,
            "received_units": self.received_units,
            "received_bytes": self.received_bytes,
            "buffered_units": self.units,
            "buffered_bytes": self.buffered_bytes,
            "reconnects": self.reconnects,
            "stills": self.stills,
            "still_failures": self.still_failures,
            "still_ms": self.still_ms,
            "width": self.width,
            "height": self.height,
        }


@dataclass(frozen=True)
class SourceStatus:
    """A snapshot for the retained camera status message and ``edge-agent status``.

    Attributes:
        camera: the camera's name.
        kind: the source type (``rtsp``, ``file``, ...).
        state: the state now.
        previous: the state before the last change.
        reason: why the last change happened ("" when nothing to say).
        changed_monotonic: ``time.monotonic()`` of the last change.
        changed_wall: ``time.time()`` of the last change.
        frames: frames delivered into the latest-frame slot.
        dropped: frames overwritten in the slot before anyone took them.
        skipped: frames read but not delivered because of the fps limit.
        reconnects: successful re-opens after the first open.
        reconnect_attempts: every open tried after the first one, failed or not (a camera that never comes
            back shows attempts, not a flat ``reconnects`` 0).
        failed_attempts: consecutive failed opens (0 once streaming).
        last_frame_monotonic: ``time.monotonic()`` of the newest frame, ``None`` before the first.
        width: width of the newest frame (0 before the first).
        height: height of the newest frame (0 before the first).
        address: where the frames come from, without credentials (``rtsp://10.0.0.5:554/stream1``, a file
            path, ``synthetic:factory``).
        decode: the decoder's figures summed over every connection (``None`` for sources without a counted
            decoder: files, folders, USB, synthetic).
        main: the camera's main stream, when it has one (stills for snapshots and samples).
    """

    camera: str
    kind: str
    state: SourceState
    previous: Optional[SourceState]
    reason: str
    changed_monotonic: float
    changed_wall: float
    frames: int
    dropped: int
    skipped: int
    reconnects: int
    failed_attempts: int
    reconnect_attempts: int
    last_frame_monotonic: Optional[float]
    width: int
    height: int
    address: str = ""
    decode: Optional[DecodeStats] = None
    main: Optional[MainStreamStatus] = None

    def as_record(self) -> Dict[str, Any]:
        """JSON-ready dict for the retained status message (no monotonic times: meaningless elsewhere)."""
        return {
            "camera": self.camera,
            "kind": self.kind,
            "state": self.state.value,
            "previous": self.previous.value if self.previous else None,
            "reason": self.reason,
            "since": self.changed_wall,
            "frames": self.frames,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "reconnects": self.reconnects,
            "reconnect_attempts": self.reconnect_attempts,
            "failed_attempts": self.failed_attempts,
            "width": self.width,
            "height": self.height,
            "address": self.address,
            "decode": None if self.decode is None else self.decode.as_record(),
            "main": None if self.main is None else self.main.as_record(),
        }
