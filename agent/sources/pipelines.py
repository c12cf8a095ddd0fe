"""GStreamer pipelines for cameras, as text, and the choice of a video decoder: pure, no GStreamer import.

Every camera that GStreamer reads (RTSP streams, Jetson CSI sensors, a user's own pipeline) is built from the
strings made here and parsed by GStreamer's own ``gst_parse_launch`` in :mod:`agent.sources.gst`. One function
per piece, so what runs on a box is what the tests parse:

- :func:`decode_branch` — what follows ``rtspsrc`` for one codec and one decoder, ending in the ``appsink``
  that hands raw frames to the agent::

      cpu     rtph264depay ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format={I420,…} ! appsink
      nvv4l2  rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert !
              video/x-raw,format={I420,…} ! appsink                              (Jetson, JetPack 5 / 6)
      nvdec   rtph264depay ! h264parse ! nvh264dec ! videoconvert ! video/x-raw,format={I420,…} ! appsink
                                                                                 (NVIDIA dGPU, gst-plugins-bad)
      vaapi   rtph264depay ! h264parse ! vah264dec ! vapostproc ! video/x-raw,format=BGRx ! videoconvert !
              video/x-raw,format={I420,…} ! appsink                              (Intel / AMD, VA-API)

  and the H.265 twins (``rtph265depay ! h265parse ! avdec_h265 | nvv4l2decoder | nvh265dec | vah265dec``).
  The sink takes what the decoder gives (I420 or NV12 from a CPU or NVDEC decoder, BGRx from nvvidconv and
  vapostproc, which convert on the GPU; ``videoconvert`` passes those through untouched) and the reader
  converts to BGR with OpenCV (0.8 ms for a 1080p I420 frame against 3.9 ms in ``videoconvert``);
- :func:`demux_branch` — the same stream without a decoder (depayloaded, parsed, access units only): a
  camera's main stream, kept for stills that are decoded only when one is needed;
- :func:`rtsp_pipeline` — ``rtspsrc location=… ! <decode branch>`` as one string (the documentation's and the
  parser tests' form; the reader itself sets the location as a property, so credentials never sit in a string
  that could be logged);
- :func:`choose_decoder` — which decoder ``decoder: auto`` takes on this machine, and why;
- :func:`split_credentials` — a camera URL without its user and password (what status and logs may show),
  and the credentials apart (what ``rtspsrc`` gets as ``user-id`` / ``user-pw``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "APPSINK",
    "CODECS",
    "DECODERS",
    "RAW_FORMATS",
    "SINK_CAPS",
    "DecoderChoice",
    "MachineFacts",
    "choose_decoder",
    "codec_of_encoding",
    "csi_pipeline",
    "decode_branch",
    "decoder_element",
    "demux_branch",
    "raw_layout",
    "redact_url",
    "rtsp_pipeline",
    "split_credentials",
    "still_decoder",
]

CODECS = ("h264", "h265")
DECODERS = ("cpu", "nvv4l2", "nvdec", "vaapi")

_DEPAY = {"h264": "rtph264depay", "h265": "rtph265depay"}
_PARSE = {"h264": "h264parse", "h265": "h265parse"}
_AU_CAPS = {
    "h264": "video/x-h264,stream-format=byte-stream,alignment=au",
    "h265": "video/x-h265,stream-format=byte-stream,alignment=au",
}
_DECODER_ELEMENT = {
    ("cpu", "h264"): "avdec_h264",
    ("cpu", "h265"): "avdec_h265",
    ("nvv4l2", "h264"): "nvv4l2decoder",
    ("nvv4l2", "h265"): "nvv4l2decoder",
    ("nvdec", "h264"): "nvh264dec",
    ("nvdec", "h265"): "nvh265dec",
    ("vaapi", "h264"): "vah264dec",
    ("vaapi", "h265"): "vah265dec",
}
# What each decoder needs beside itself to reach system-memory BGR.
_AFTER_DECODER = {
    # nvvidconv copies NVMM (GPU) surfaces to system memory; BGRx is the only packed RGB it writes
    "nvv4l2": ("nvvidconv",),
    "nvdec": (),
    # vapostproc converts on the GPU; BGRx, as for nvvidconv
    "vaapi": ("vapostproc",),
    "cpu": (),
}
APPSINK = "appsink name=sink max-buffers=1 drop=true sync=false"
"""The agent's end of every pipeline: newest frame wins already here (the camera's slot counts the rest)."""
RAW_FORMATS = ("I420", "NV12", "BGRx", "BGR")
"""What the agent's sink takes: what decoders and GPU converters give, converted to BGR by the reader."""
SINK_CAPS = "video/x-raw,format=(string){" + ",".join(RAW_FORMATS) + "}"


def _check(codec: str, decoder: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unsupported codec {codec!r} (supported: {', '.join(CODECS)})")
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r} (one of {', '.join(DECODERS)})")


def decoder_element(decoder: str, codec: str) -> str:
    """The GStreamer element that decodes ``codec`` with ``decoder`` (``avdec_h264``, ``nvv4l2decoder``, …)."""
    _check(codec, decoder)
    return _DECODER_ELEMENT[(decoder, codec)]


def decode_branch(codec: str, decoder: str = "cpu", *, threads: int = 1) -> str:
    """From RTP packets of ``codec`` to BGR frames in the agent's ``appsink`` (see the module docstring).

    The depayloader is named ``depay`` and the decoder ``decoder``: the reader counts and times access units
    from the one to frames out of the ``sink`` (the first point a frame's data exists whole, and the last
    before the agent takes it). ``threads`` is the
    CPU decoder's thread count: 1 by default, because frame threading holds back one frame per extra thread
    (67 ms each at 15 fps) and a box with several cameras already decodes them in parallel; 0 lets FFmpeg
    choose. The CPU decoder drops frames it could not decode cleanly (``output-corrupt=false``) instead of
    handing grey or smeared pictures to the model.
    """
    _check(codec, decoder)
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    element = _DECODER_ELEMENT[(decoder, codec)]
    if decoder == "cpu":
        element += f" name=decoder max-threads={threads} output-corrupt=false"
    else:
        element += " name=decoder"
    stages = [f"{_DEPAY[codec]} name=depay", _PARSE[codec], element, *_AFTER_DECODER[decoder]]
    if _AFTER_DECODER[decoder]:
        stages.append("video/x-raw,format=BGRx")
    # videoconvert only acts on a format the reader does not take (10-bit, 4:2:2): otherwise it passes through
    stages += ["videoconvert", SINK_CAPS, APPSINK]
    return " ! ".join(stages)


def demux_branch(codec: str) -> str:
    """RTP packets of ``codec`` to whole access units (parameter sets repeated before each keyframe, so any
    keyframe starts a decodable run) in an ``appsink`` that keeps every one: no decoder runs."""
    if codec not in CODECS:
        raise ValueError(f"unsupported codec {codec!r} (supported: {', '.join(CODECS)})")
    return (
        f"{_DEPAY[codec]} ! {_PARSE[codec]} config-interval=-1 ! {_AU_CAPS[codec]} ! "
        "appsink name=sink max-buffers=256 drop=false sync=false"
    )


def still_decoder(codec: str, threads: int = 0) -> str:
    """A pipeline that decodes access units pushed into ``appsrc name=src`` (a run from a keyframe) into BGR
    frames in ``appsink name=sink``: the main stream's stills, decoded on demand."""
    if codec not in CODECS:
        raise ValueError(f"unsupported codec {codec!r} (supported: {', '.join(CODECS)})")
    return (
        f"appsrc name=src format=time caps={_AU_CAPS[codec]} ! {_PARSE[codec]} ! "
        f"avdec_{codec} max-threads={threads} output-corrupt=false ! videoconvert ! {SINK_CAPS} ! "
        "appsink name=sink sync=false max-buffers=0 drop=false"
    )


def rtsp_pipeline(
    location: str, codec: str, decoder: str = "cpu", *, transport: str = "tcp", latency_ms: int = 200
) -> str:
    """The whole pipeline as one ``gst-launch-1.0`` string (documentation and parser tests)."""
    if transport not in ("tcp", "udp"):
        raise ValueError(f"transport must be tcp or udp, not {transport!r}")
    head = f'rtspsrc location="{location}" protocols={transport} latency={int(latency_ms)}'
    return f"{head} ! {decode_branch(codec, decoder)}"


def codec_of_encoding(encoding_name: str) -> Optional[str]:
    """The codec of an RTP stream from its SDP ``encoding-name`` (``H264``, ``H265``); ``None`` for others."""
    return {"H264": "h264", "H265": "h265"}.get(encoding_name.strip().upper())


def _round_up_4(value: int) -> int:
    return (value + 3) // 4 * 4


def raw_layout(fmt: str, width: int, height: int) -> Tuple[int, Tuple[Tuple[int, int, int, int], ...]]:
    """GStreamer's default layout of a raw frame: ``(size, planes)``, each plane ``(offset, stride, width in
    bytes, rows)``. Rows are padded to 4 bytes and the luma plane to an even height, as
    ``gst_video_info_set_format`` lays them out (tests/agent/sources/test_pipelines.py compares the two).

    >>> raw_layout("I420", 642, 360)
    (348480, ((0, 644, 642, 360), (231840, 324, 321, 180), (290160, 324, 321, 180)))

    Raises:
        ValueError: a format the reader does not take (:data:`RAW_FORMATS`).
    """
    luma_rows = (height + 1) // 2 * 2  # the luma plane is laid out for an even height
    if fmt == "I420":
        y = _round_up_4(width)
        c = _round_up_4((width + 1) // 2)
        rows = (height + 1) // 2
        u = y * luma_rows
        v = u + c * rows
        return v + c * rows, ((0, y, width, height), (u, c, (width + 1) // 2, rows), (v, c, (width + 1) // 2, rows))
    if fmt == "NV12":
        y = _round_up_4(width)
        uv = y * luma_rows
        rows = (height + 1) // 2
        return uv + y * rows, ((0, y, width, height), (uv, y, (width + 1) // 2 * 2, rows))
    if fmt == "BGRx":
        return width * 4 * height, ((0, width * 4, width * 4, height),)
    if fmt == "BGR":
        stride = _round_up_4(width * 3)
        return stride * height, ((0, stride, width * 3, height),)
    raise ValueError(f"raw format {fmt!r} is not one the reader takes ({', '.join(RAW_FORMATS)})")


# ------------------------------------------------------------------------------------------------ decoders


@dataclass(frozen=True)
class MachineFacts:
    """What a machine offers for decoding (gathered by :func:`agent.sources.gst.machine_facts`).

    Attributes:
        jetson: ``/etc/nv_tegra_release`` exists (a Jetson with JetPack).
        nvidia_gpu: ``/dev/nvidiactl`` exists (an NVIDIA driver for a discrete GPU is loaded).
        render_node: a ``/dev/dri/renderD*`` node exists (a GPU VA-API can drive).
        elements: GStreamer element names present (of those :func:`decoder_element` names).
    """

    jetson: bool = False
    nvidia_gpu: bool = False
    render_node: bool = False
    elements: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class DecoderChoice:
    """The decoder a camera uses and why (shown in its status)."""

    decoder: str
    element: str
    reason: str

    def describe(self) -> str:
        return f"{self.decoder} ({self.element}: {self.reason})"


def choose_decoder(requested: str, codec: str, facts: MachineFacts) -> DecoderChoice:
    """``auto`` picks the first hardware decoder the machine has for ``codec`` — Jetson's nvv4l2decoder, then
    NVDEC on a discrete NVIDIA GPU, then VA-API — and the CPU otherwise; a named decoder is taken as asked and
    fails at open if its element is missing (never a silent fallback: the operator asked for that decoder).

    Raises:
        ValueError: an unknown decoder or codec.
    """
    if requested == "auto":
        candidates = (
            ("nvv4l2", facts.jetson, "Jetson"),
            ("nvdec", facts.nvidia_gpu, "NVIDIA GPU"),
            ("vaapi", facts.render_node, "VA-API render node"),
        )
        for decoder, present, what in candidates:
            element = decoder_element(decoder, codec)
            if present and element in facts.elements:
                return DecoderChoice(decoder, element, f"auto: {what} and {element} present")
        skipped = [
            f"{decoder_element(d, codec)} absent" if present else f"no {what}" for d, present, what in candidates
        ]
        return DecoderChoice("cpu", decoder_element("cpu", codec), "auto: " + ", ".join(skipped))
    element = decoder_element(requested, codec)
    return DecoderChoice(requested, element, "configured")


# ----------------------------------------------------------------------------------------------------- CSI


def csi_pipeline(
    *,
    sensor_id: int = 0,
    width: int = 1920,
    height: int = 1080,
    fps: int = 30,
    flip_method: int = 0,
    output_width: Optional[int] = None,
    output_height: Optional[int] = None,
) -> str:
    """The GStreamer pipeline for a Jetson CSI camera, delivering BGRx frames to the agent.

    nvarguscamerasrc captures NV12 into NVMM (GPU) memory through the ISP; nvvidconv flips/scales and copies
    to system memory as BGRx (the only packed RGB format it can write); the reader drops the x.
    """
    out_w = output_width or width
    out_h = output_height or height
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){fps}/1, format=(string)NV12 ! "
        f"nvvidconv flip-method={flip_method} ! "
        f"video/x-raw, width=(int){out_w}, height=(int){out_h}, format=(string)BGRx ! {APPSINK}"
    )


# -------------------------------------------------------------------------------------------------- URLs


def split_credentials(url: str) -> Tuple[str, Optional[str], Optional[str]]:
    """``(url without user:password@, user, password)``, user and password percent-decoded.

    >>> split_credentials("rtsp://op:p%40ss@10.0.0.5:554/stream1")
    ('rtsp://10.0.0.5:554/stream1', 'op', 'p@ss')
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return bare, user, password


def redact_url(url: str) -> str:
    """The URL as status documents and logs may show it: no user, no password, no query (tokens live there)."""
    bare = split_credentials(url)[0]
    parts = urlsplit(bare)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
