"""Camera sources: one reader thread per camera, newest frame wins, reconnect with backoff, stall detection.

Public surface::

    build_source(CameraConfig) -> CameraSource      # agent.sources.factory
    CameraSource.start() / stop() / status() / latest() / wait_frame() / await next_frame()
    Frame, SourceState, SourceStatus, Backoff        # agent.sources.frame (pure)
    CameraConfig and the per-type source models      # agent.sources.config (pydantic)
    SourceError and subclasses                       # agent.sources.errors

OpenCV is imported only when a reader opens.
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
from agent.sources.factory import build_source, make_opener
from agent.sources.frame import Frame, SourceState, SourceStatus, SyntheticOrigin
from agent.sources.readers import FrameReader, Opener, csi_pipeline, gstreamer_available

__all__ = [
    "Backoff",
    "BackoffConfig",
    "CameraConfig",
    "CameraSource",
    "CsiSourceConfig",
    "FileSourceConfig",
    "Frame",
    "FrameListener",
    "FrameReader",
    "GStreamerSourceConfig",
    "HttpSourceConfig",
    "ImageFolderSourceConfig",
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
    "csi_pipeline",
    "default_stall_timeout",
    "gstreamer_available",
    "make_opener",
]
