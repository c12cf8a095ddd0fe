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
        }
