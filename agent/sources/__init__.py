"""Camera sources: one reader thread per camera, newest frame wins, reconnect with backoff, stall detection.

Public surface::

    build_source(CameraConfig) -> CameraSource      # agent.sources.factory
    CameraSource.start() / stop() / status() / latest() / wait_frame() / await next_frame()
    Frame, SourceState, SourceStatus, DecodeStats    # agent.sources.frame (pure)
    decode_branch, choose_decoder, csi_pipeline      # agent.sources.pipelines (pure: GStreamer pipelines)
    CameraConfig and the per-type source models      # agent.sources.config (pydantic)
    SourceError and subclasses                       # agent.sources.errors

OpenCV and GStreamer (agent.sources.gst) are imported only when a reader opens.
"""

from __future__ import annotations

from agent.core.backoff import Backoff
from agent.sources.camera import CameraSource, FrameListener, StateListener, default_stall_timeout
from agent.sources.config import (
    BackoffConfig,
    CameraConfig,
    CsiSourceConfig,
    FileSourceConfig,
    GStreamerSourceConfig,
    HttpSourceConfig,
    ImageFolderSourceConfig,
    RtspSourceConfig,
    SourceConfig,
    SyntheticSourceConfig,
    UsbSourceConfig,
    check_unique_names,
)
from agent.sources.errors import (
    SourceConfigError,
    SourceError,
    SourceReadError,
    SourceStoppedError,
    SourceUnavailableError,
)
from agent.sources.factory import build_source, make_opener, source_address
from agent.sources.frame import DecodeStats, Frame, SourceState, SourceStatus, SyntheticOrigin
from agent.sources.pipelines import DecoderChoice, MachineFacts, choose_decoder, csi_pipeline, decode_branch
from agent.sources.readers import FrameReader, Opener

__all__ = [
    "Backoff",
    "BackoffConfig",
    "CameraConfig",
    "CameraSource",
    "CsiSourceConfig",
    "DecodeStats",
    "DecoderChoice",
    "FileSourceConfig",
    "Frame",
    "FrameListener",
    "FrameReader",
    "GStreamerSourceConfig",
    "HttpSourceConfig",
    "ImageFolderSourceConfig",
    "MachineFacts",
    "Opener",
    "RtspSourceConfig",
    "SourceConfig",
    "SourceConfigError",
    "SourceError",
    "SourceReadError",
    "SourceState",
    "SourceStatus",
    "SourceStoppedError",
    "SourceUnavailableError",
    "StateListener",
    "SyntheticOrigin",
    "SyntheticSourceConfig",
    "UsbSourceConfig",
    "build_source",
    "check_unique_names",
    "choose_decoder",
    "csi_pipeline",
    "decode_branch",
    "default_stall_timeout",
    "make_opener",
    "source_address",
]
