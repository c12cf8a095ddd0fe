"""Build a :class:`CameraSource` from a :class:`CameraConfig`: the one place mapping ``type`` to a reader."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Optional

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
from agent.sources.pipelines import csi_pipeline, redact_url
from agent.sources.readers import (
    FrameReader,
    ImageFolderReader,
    Opener,
    SyntheticReader,
    open_ffmpeg,
    open_usb,
    open_video_file,
)
from agent.threads import Supervisor

if TYPE_CHECKING:
    from agent.sources.gst import GstUnitReader
    from agent.sources.stills import MainStream


def make_opener(source: SourceConfig, camera: str = "") -> Opener:
    """The opener (zero-argument callable returning a fresh reader) for a source configuration."""
    if isinstance(source, RtspSourceConfig):
        cfg_rtsp = source

        def open_rtsp() -> FrameReader:
            from agent.sources.gst import open_rtsp as open_gst_rtsp

            return open_gst_rtsp(
                cfg_rtsp.url,
                transport=cfg_rtsp.transport,
                latency_ms=cfg_rtsp.latency_ms,
                decoder=cfg_rtsp.decoder,
                threads=cfg_rtsp.decoder_threads,
                open_timeout_s=cfg_rtsp.open_timeout_s,
                read_timeout_s=cfg_rtsp.read_timeout_s,
                what=f"camera {camera} ({redact_url(cfg_rtsp.url)})",
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
        return _gst_pipeline_opener(pipeline, f"camera {camera} (csi sensor {source.sensor_id})", fps)
    if isinstance(source, GStreamerSourceConfig):
        return _gst_pipeline_opener(source.pipeline, f"camera {camera} (gstreamer)", source.fps, source.live)
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


def _gst_pipeline_opener(description: str, what: str, fps: Optional[float], live: bool = True) -> Opener:
    def open_pipeline() -> FrameReader:
        from agent.sources.gst import open_pipeline as open_gst_pipeline

        reader = open_gst_pipeline(description, what=what, nominal_fps=fps)
        reader.live = live
        return reader

    return open_pipeline


def source_address(source: SourceConfig) -> str:
    """Where a source's frames come from, as its status may show it (never credentials): the URL without user,
    password or query for network cameras, ``kind:what`` for the others."""
    if isinstance(source, (RtspSourceConfig, HttpSourceConfig)):
        return redact_url(source.url)
    if isinstance(source, UsbSourceConfig):
        return f"usb:{source.device}"
    if isinstance(source, CsiSourceConfig):
        return f"csi:{source.sensor_id}"
    if isinstance(source, GStreamerSourceConfig):
        return "gstreamer:pipeline"
    if isinstance(source, FileSourceConfig):
        return f"file:{source.path}"
    if isinstance(source, ImageFolderSourceConfig):
        return f"images:{source.path}"
    return f"synthetic:{source.domain}/{source.seed}"


def build_source(
    config: CameraConfig, rng: Optional[random.Random] = None, supervisor: Optional[Supervisor] = None
) -> CameraSource:
    """A stopped source for this camera; call ``start()`` on it. Its threads report to ``supervisor``."""
    source = config.source
    loop = bool(getattr(source, "loop", False))
    main = None
    if isinstance(source, RtspSourceConfig) and source.main_url:
        main = _main_stream(config.name, source, config, supervisor)
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
        address=source_address(source),
        main=main,
    )


def _main_stream(
    camera: str, source: RtspSourceConfig, config: CameraConfig, supervisor: Optional[Supervisor]
) -> MainStream:
    from agent.sources.stills import MainStream

    url = source.main_url
    assert url is not None
    shown = redact_url(url)

    def open_units() -> GstUnitReader:
        from agent.sources.gst import open_rtsp_units

        return open_rtsp_units(
            url,
            transport=source.transport,
            latency_ms=source.latency_ms,
            open_timeout_s=source.open_timeout_s,
            read_timeout_s=source.read_timeout_s,
            what=f"camera {camera} main stream ({shown})",
        )

    return MainStream(camera, shown, open_units, backoff=config.reconnect.to_core(), supervisor=supervisor)
