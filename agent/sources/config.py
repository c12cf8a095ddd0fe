"""Camera configuration (pydantic): the source is chosen by its ``type`` field.

Example::

    cameras:
      - name: press-1
        fps_limit: 10
        source: {type: rtsp, url: "rtsp://10.0.0.21:554/stream2", main_url: "rtsp://10.0.0.21:554/stream1"}
      - name: bench
        source: {type: usb, device: /dev/video0, width: 1280, height: 720, fps: 30, fourcc: MJPG}
      - name: jetson-csi
        source: {type: csi, sensor_id: 0, width: 1920, height: 1080, fps: 30, flip_method: 0}
      - name: replay
        source: {type: file, path: /data/line3.mp4, loop: true, realtime: true}
      - name: demo
        source: {type: synthetic, domain: factory, seed: 1, width: 1920, height: 1080, fps: 10}

RTSP, CSI and raw GStreamer sources are read through GStreamer (agent/sources/gst.py): its Python bindings
(PyGObject) and plugins come from the system (``python3-gi`` and the GStreamer packages; on a Jetson, JetPack's
own, with its hardware decoders), seen by the agent's virtualenv through ``--system-site-packages``. The camera
fails at start with a clear error naming what to install when they are missing.
"""

from __future__ import annotations

from typing import List, Literal, Optional, Union

from pydantic import Field, field_validator
from typing_extensions import Annotated

from agent.core.backoff import Backoff
from agent.rules_config import CameraRulesConfig
from agent.strict import FrozenModel


class BackoffConfig(FrozenModel):
    """Reconnect delays: capped exponential backoff with jitter.

    The cap is short on purpose: a camera that reboots is back within seconds and should stream again within
    seconds, and a try costs one TCP connection (a refused login or a wrong path waits a minute instead:
    agent/sources/gst.py ``AUTH_RETRY_S``)."""

    initial_s: float = Field(default=0.5, gt=0, le=3600, description="Delay before the first retry.")
    max_s: float = Field(default=2.0, gt=0, le=3600, description="Longest delay between retries.")
    multiplier: float = Field(default=2.0, ge=1, le=10, description="Growth of the delay per failed attempt.")
    jitter: float = Field(default=0.2, ge=0, lt=1, description="Delays are scaled by a random 1-jitter..1.")

    def to_core(self) -> Backoff:
        return Backoff(self.initial_s, max(self.max_s, self.initial_s), self.multiplier, self.jitter)


class RtspSourceConfig(FrozenModel):
    """An RTSP camera (H.264 or H.265), read through GStreamer.

    ``url`` is the stream the model sees (a camera's substream where it has one: 640x360 costs a tenth of
    1080p to decode, and the model letterboxes to its input size anyway); ``main_url`` the full-resolution
    stream, used only for what a person or the trainer looks at (alert snapshots, samples): it is received
    but not decoded, and a still is decoded from its last keyframe only when one is needed."""

    type: Literal["rtsp"] = Field(description="Source kind.")
    url: str = Field(
        pattern=r"^rtsps?://",
        description="The detect stream: rtsp:// or rtsps:// URL (credentials may be inline, or the whole URL a "
        "!credential). The model runs on every frame of it.",
    )
    main_url: Optional[str] = Field(
        default=None,
        pattern=r"^rtsps?://",
        description="The camera's main (full-resolution) stream for alert snapshots and samples; null: they "
        "come from the detect stream.",
    )
    transport: Literal["tcp", "udp"] = Field(
        default="tcp",
        description="RTSP transport: tcp (interleaved; a lossy network slows it down but never smears frames) "
        "or udp (lower overhead; lost packets cost whole frames, dropped by the decoder and counted).",
    )
    decoder: Literal["auto", "cpu", "nvv4l2", "nvdec", "vaapi"] = Field(
        default="auto",
        description="Video decoder: auto (Jetson nvv4l2decoder, then NVDEC on an NVIDIA GPU, then VA-API, else "
        "the CPU; the camera's status says which and why), cpu (GStreamer's libav decoder), nvv4l2 (Jetson), "
        "nvdec (NVIDIA dGPU, gst-plugins-bad nvcodec), vaapi (Intel/AMD, gst-plugins-bad va).",
    )
    decoder_threads: int = Field(
        default=1,
        ge=0,
        le=16,
        description="CPU decoder threads per camera; 1 adds no latency (each extra frame thread holds back a "
        "frame), 0 lets the decoder choose (for one high-resolution camera on a many-core box).",
    )
    latency_ms: int = Field(
        default=200,
        ge=0,
        le=5000,
        description="Jitter buffer: how long a late or reordered packet is waited for (matters for udp; an "
        "in-order stream is not delayed by it).",
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Give up an open that has not delivered a frame after this long."
    )
    read_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="No frame for this long drops the connection and reconnects (the camera shows stalled "
        "from the stall limit on, sooner).",
    )


class HttpSourceConfig(FrozenModel):
    """An HTTP(S) stream (MJPEG over multipart/x-mixed-replace, HLS, ...) read by OpenCV's FFmpeg backend."""

    type: Literal["http"] = Field(description="Source kind.")
    url: str = Field(pattern=r"^https?://", description="http:// or https:// URL.")
    open_timeout_s: float = Field(default=10.0, gt=0, le=300, description="Give up opening after this long.")
    read_timeout_s: float = Field(default=5.0, gt=0, le=300, description="A read blocking this long fails.")


class UsbSourceConfig(FrozenModel):
    """A USB / V4L2 camera."""

    type: Literal["usb"] = Field(description="Source kind.")
    device: Union[int, str] = Field(description="V4L2 device index (0) or path (/dev/video0).")
    width: Optional[int] = Field(default=None, ge=16, le=16384, description="Requested width (driver may adjust).")
    height: Optional[int] = Field(default=None, ge=16, le=16384, description="Requested height.")
    fps: Optional[float] = Field(default=None, gt=0, le=1000, description="Requested frame rate.")
    fourcc: Optional[str] = Field(
        default=None, min_length=4, max_length=4, description="Pixel format, e.g. MJPG or YUYV."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: Union[int, str]) -> Union[int, str]:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("device index must be >= 0")
        elif not value.startswith("/dev/"):
            raise ValueError("device must be an index or a /dev/... path")
        return value


class CsiSourceConfig(FrozenModel):
    """A MIPI CSI camera on a Jetson, through nvarguscamerasrc (GStreamer, JetPack's plugins)."""

    type: Literal["csi"] = Field(description="Source kind.")
    sensor_id: int = Field(default=0, ge=0, le=15, description="nvarguscamerasrc sensor-id.")
    width: int = Field(default=1920, ge=16, le=8192, description="Capture width.")
    height: int = Field(default=1080, ge=16, le=8192, description="Capture height.")
    fps: int = Field(default=30, ge=1, le=240, description="Capture frame rate.")
    flip_method: int = Field(default=0, ge=0, le=7, description="nvvidconv flip-method (0: none, 2: 180°).")
    output_width: Optional[int] = Field(
        default=None, ge=16, le=8192, description="Scale to this width in nvvidconv (default: capture width)."
    )
    output_height: Optional[int] = Field(
        default=None,
        ge=16,
        le=8192,
        description="Scale to this height in nvvidconv (default: capture height).",
    )


class GStreamerSourceConfig(FrozenModel):
    """Any GStreamer pipeline ending in an appsink delivering BGR (``video/x-raw,format=BGR``)."""

    type: Literal["gstreamer"] = Field(description="Source kind.")
    pipeline: str = Field(min_length=1, max_length=4096, description="gst-launch syntax, ending in appsink.")
    live: bool = Field(default=True, description="A live source (stall detection, no pacing).")
    fps: Optional[float] = Field(default=None, gt=0, le=1000, description="Expected rate, for stall detection.")

    @field_validator("pipeline")
    @classmethod
    def _appsink(cls, value: str) -> str:
        if "appsink" not in value:
            raise ValueError("the pipeline must end in an appsink (OpenCV reads frames from it)")
        return value


class FileSourceConfig(FrozenModel):
    """A video file."""

    type: Literal["file"] = Field(description="Source kind.")
    path: str = Field(min_length=1, description="Path of the video file.")
    loop: bool = Field(default=True, description="Start again at the end (reopening the file each time).")
    realtime: bool = Field(
        default=True, description="Deliver at the file's own frame rate; false: as fast as decoding allows."
    )


class ImageFolderSourceConfig(FrozenModel):
    """A folder of images, in sorted name order (re-listed at each pass)."""

    type: Literal["images"] = Field(description="Source kind.")
    path: str = Field(min_length=1, description="Folder of images (jpg, png, bmp, tif, webp).")
    loop: bool = Field(default=True, description="Start again after the last image.")
    fps: Optional[float] = Field(
        default=5.0, gt=0, le=1000, description="Images per second; null: as fast as decoding allows."
    )


class SyntheticSourceConfig(FrozenModel):
    """Rendered industrial scenes from agent.synthetic (demos, tests, benchmarks)."""

    type: Literal["synthetic"] = Field(description="Source kind.")
    domain: str = Field(default="factory", min_length=1, description="Scene domain (factory, drifted, night).")
    seed: int = Field(default=0, ge=0, description="Scene seed; the same seed renders the same frames.")
    width: int = Field(default=1920, ge=32, le=8192, description="Frame width.")
    height: int = Field(default=1080, ge=32, le=8192, description="Frame height.")
    fps: float = Field(default=10.0, gt=0, le=1000, description="Frames per second delivered.")
    prerender: int = Field(
        default=0,
        ge=0,
        le=256,
        description="0: render every frame when it is read (about 13 ms of CPU per 1080p frame, in the camera's "
        "thread). N: render N frames once at start and replay them forward and backward by reference, so the "
        "camera costs next to no CPU (like a hardware-decoded camera) and holds N frames (6.2 MB each at 1080p).",
    )


SourceConfig = Annotated[
    Union[
        RtspSourceConfig,
        HttpSourceConfig,
        UsbSourceConfig,
        CsiSourceConfig,
        GStreamerSourceConfig,
        FileSourceConfig,
        ImageFolderSourceConfig,
        SyntheticSourceConfig,
    ],
    Field(discriminator="type"),
]


class CameraConfig(FrozenModel):
    """One camera: where frames come from, how fast, and what to do with its detections."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Unique camera name; used in MQTT topics, so letters, digits, '_', '.', '-' only.",
    )
    enabled: bool = Field(default=True, description="Read this camera.")
    source: SourceConfig = Field(description="Where the frames come from; chosen by `type`.")
    fps_limit: Optional[float] = Field(
        default=None,
        gt=0,
        le=1000,
        description="Deliver at most this many frames per second; null: no limit.",
    )
    reconnect: BackoffConfig = Field(default=BackoffConfig(), description="Reconnect backoff.")
    stall_timeout_s: Optional[float] = Field(
        default=None,
        gt=0,
        le=3600,
        description="No frame for this long is a stall; null: 10 frame intervals, at least 2 s.",
    )
    rules: CameraRulesConfig = Field(
        default=CameraRulesConfig(), description="Tracker, alert rules and triage of this camera."
    )


def check_unique_names(cameras: List[CameraConfig]) -> List[CameraConfig]:
    """Raise ``ValueError`` naming the duplicates when two cameras share a name (for the daemon's config)."""
    names = [camera.name for camera in cameras]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate camera names {duplicates}")
    return cameras
