"""Build a :class:`CameraSource` from a :class:`CameraConfig`: the one place mapping ``type`` to a reader."""

from __future__ import annotations

import random
from typing import Optional

from agent.sources.camera import CameraSource
from agent.sources.config import (
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
)
from agent.sources.readers import (
    FrameReader,
    ImageFolderReader,
    Opener,
    SyntheticReader,
    csi_pipeline,
    open_ffmpeg,
    open_gstreamer,
    open_usb,
    open_video_file,
)
from agent.threads import Supervisor


def make_opener(source: SourceConfig, camera: str = "") -> Opener:
    """The opener (zero-argument callable returning a fresh reader) for a source configuration."""
    if isinstance(source, RtspSourceConfig):
        cfg_rtsp = source

        def open_rtsp() -> FrameReader:
            return open_ffmpeg(
                cfg_rtsp.url,
                live=True,
                open_timeout_s=cfg_rtsp.open_timeout_s,
                read_timeout_s=cfg_rtsp.read_timeout_s,
                capture_options=f"rtsp_transport;{cfg_rtsp.transport}",
                what=f"camera {camera} (rtsp)",
            )

        return open_rtsp
    if isinstance(source, HttpSourceConfig):
        cfg_http = source

        def open_http() -> FrameReader:
            return open_ffmpeg(
                cfg_http.url,
                live=True,
                open_timeout_s=cfg_http.open_timeout_s,
                read_timeout_s=cfg_http.read_timeout_s,
                what=f"camera {camera} (http)",
            )

        return open_http
    if isinstance(source, UsbSourceConfig):
        cfg_usb = source
        return lambda: open_usb(cfg_usb.device, cfg_usb.width, cfg_usb.height, cfg_usb.fps, cfg_usb.fourcc)
    if isinstance(source, CsiSourceConfig):
        pipeline = csi_pipeline(
            sensor_id=source.sensor_id,
            width=source.width,
            height=source.height,
            fps=source.fps,
            flip_method=source.flip_method,
            output_width=source.output_width,
            output_height=source.output_height,
        )
        fps = float(source.fps)
        return lambda: open_gstreamer(pipeline, live=True, fps=fps)
    if isinstance(source, GStreamerSourceConfig):
        cfg_gst = source
        return lambda: open_gstreamer(cfg_gst.pipeline, live=cfg_gst.live, fps=cfg_gst.fps)
    if isinstance(source, FileSourceConfig):
        cfg_file = source
        return lambda: open_video_file(cfg_file.path, cfg_file.realtime)
    if isinstance(source, ImageFolderSourceConfig):
        cfg_images = source
        return lambda: ImageFolderReader(cfg_images.path, cfg_images.fps)
    if isinstance(source, SyntheticSourceConfig):
        cfg_syn = source
        return lambda: SyntheticReader(
            cfg_syn.domain, cfg_syn.seed, (cfg_syn.height, cfg_syn.width), cfg_syn.fps, prerender=cfg_syn.prerender
        )
    raise TypeError(f"unknown source configuration {type(source).__name__}")  # pragma: no cover


def build_source(
    config: CameraConfig, rng: Optional[random.Random] = None, supervisor: Optional[Supervisor] = None
) -> CameraSource:
    """A stopped source for this camera; call ``start()`` on it. Its threads report to ``supervisor``."""
    source = config.source
    loop = bool(getattr(source, "loop", False))
    return CameraSource(
        config.name,
        source.type,
        make_opener(source, config.name),
        loop=loop,
        fps_limit=config.fps_limit,
        backoff=config.reconnect.to_core(),
        stall_timeout_s=config.stall_timeout_s,
        rng=rng,
        supervisor=supervisor,
    )
