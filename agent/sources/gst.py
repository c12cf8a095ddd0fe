"""GStreamer readers: RTSP cameras (any decoder), Jetson CSI sensors and a user's own pipeline, through PyGObject.

GStreamer is the one way the agent decodes video streams: the CPU decoder (``avdec_h264`` / ``avdec_h265``) and
the hardware ones (Jetson's ``nvv4l2decoder``, NVDEC, VA-API) differ by one element of a pipeline built in
:mod:`agent.sources.pipelines`. It was measured against OpenCV's FFmpeg backend and PyAV on the same streams
(docs/BENCHMARKS.md, "RTSP readers"): FFmpeg's RTSP demuxer holds every frame back until the next one starts
(its parser finds the end of an access unit only there), one frame interval of latency (67 ms at 15 fps) that
GStreamer's depayloader does not add, and OpenCV adds frame threading on top.

The bindings are PyGObject (``gi``) with GStreamer's typelibs: on a Jetson and on Debian/Ubuntu boxes the
system's ``python3-gi`` seen through a virtualenv made with ``--system-site-packages`` (the install scripts do
that), or ``pip install PyGObject`` where the build headers are present. They are imported when a camera opens,
never at import time: the pure parts of the agent and the other sources work without them.

A reader is used by one camera thread. GStreamer's own streaming threads run the pipeline; two pad probes on
them count what passes and time it: access units into the decoder (dropped until the first keyframe, so a
reader that joins mid-GOP never hands a grey or smeared frame to the model) and frames out of the colour
converter. Per frame that gives when its data reached the box (the frame's capture time as far as the box can
see it: stamping after decoding hid the decode time), the CPU time spent decoding and converting it, and the
frames the decoder dropped as undecodable.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Set, Tuple, TypeVar

import numpy as np
import structlog

from agent.sources.diagnose import diagnose_stream_url
from agent.sources.errors import SourceConfigError, SourceReadError, SourceUnavailableError
from agent.sources.frame import AccessUnit, DecodeStats
from agent.sources.pipelines import (
    DECODERS,
    MachineFacts,
    choose_decoder,
    codec_of_encoding,
    decode_branch,
    decoder_element,
    demux_branch,
    raw_layout,
    redact_url,
    split_credentials,
    still_decoder,
)
from agent.sources.readers import Image

__all__ = [
    "AUTH_RETRY_S",
    "GstFrameReader",
    "GstUnitReader",
    "decode_still",
    "gst_available",
    "gst_modules",
    "machine_facts",
    "open_pipeline",
    "open_rtsp",
    "open_rtsp_units",
]

AUTH_RETRY_S = 60.0
"""A camera that refuses the credentials is asked again after this long, not in a retry storm: a password does
not fix itself, and cameras lock accounts out after repeated failures."""
NOT_FOUND_RETRY_S = 30.0
_POLL_S = 0.1  # how often a waiting read looks at the bus for an error
_WARN_EVERY_S = 30.0  # one log line per camera for GStreamer's warnings in this long (lost packets repeat them)
_NS = 1_000_000_000
_INSTALL_HINT = (
    "GStreamer and its Python bindings are needed for RTSP, CSI and GStreamer cameras: on Debian/Ubuntu "
    "`apt install python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav` and a virtualenv made with "
    "--system-site-packages (deploy/install-x86.sh and install-jetson.sh do both), or `pip install PyGObject`"
)

log = structlog.get_logger(__name__)

_modules: Optional[Tuple[Any, Any]] = None
_modules_lock = threading.Lock()


def gst_modules() -> Tuple[Any, Any]:
    """``(Gst, GLib)``, imported and initialised once.

    Raises:
        SourceConfigError: PyGObject or GStreamer's typelibs are missing (with what to install).
    """
    global _modules
    with _modules_lock:
        if _modules is None:
            try:
                gi = importlib.import_module("gi")
                gi.require_version("Gst", "1.0")
                gi.require_version("GstApp", "1.0")
                gst = importlib.import_module("gi.repository.Gst")
                glib = importlib.import_module("gi.repository.GLib")
                importlib.import_module("gi.repository.GstApp")  # appsink's pull methods
            except (ImportError, ValueError, AttributeError) as exc:
                raise SourceConfigError(f"{_INSTALL_HINT} ({type(exc).__name__}: {exc})") from exc
            gst.init(None)
            _modules = (gst, glib)
        return _modules


def gst_available() -> bool:
    """Whether GStreamer can be used here (for ``decoder: auto`` reports and the tests)."""
    try:
        gst_modules()
    except SourceConfigError:
        return False
    return True


def machine_facts(root: Path = Path("/")) -> MachineFacts:
    """What this machine offers for decoding: Jetson, NVIDIA driver, a DRI render node, decoder elements."""
    gst, _glib = gst_modules()
    names = {decoder_element(d, c) for d in DECODERS for c in ("h264", "h265")}
    present = frozenset(name for name in names if gst.ElementFactory.find(name) is not None)
    dri = root / "dev" / "dri"
    return MachineFacts(
        jetson=(root / "etc" / "nv_tegra_release").exists(),
        nvidia_gpu=(root / "dev" / "nvidiactl").exists(),
        render_node=dri.is_dir() and any(p.name.startswith("renderD") for p in dri.iterdir()),
        elements=present,
    )


class _Probes:
    """Counts and times access units from the depayloader to frames at the sink, and keeps undecodable ones
    (before a connection's first keyframe, after lost packets) from the decoder; its methods run on GStreamer's
    streaming threads (the depayloader, parser, decoder and converter share one when the decoder is the CPU's
    with one thread: the CPU time between the two probes is then theirs alone)."""

    def __init__(self, gst: Any) -> None:
        self._gst = gst
        self._lock = threading.Lock()
        self.keyframe_seen = False
        self._broken = False  # data was lost: frames are dropped until the next whole keyframe
        self.received = self.waited = self.decoded = self.decode_errors = self.timed = 0
        self.cpu_s = 0.0
        self.codec = ""
        self.decoder = ""
        # pts -> (arrival monotonic, arrival wall, thread CPU time at arrival, native thread id)
        self._pending: Dict[int, Tuple[float, float, float, int]] = {}
        self._arrivals: Dict[int, Tuple[float, float]] = {}
        self._before_key: Set[int] = set()  # frames (RTP timestamps) that arrived before the first keyframe

    def attach(self, depay: Any, sink: Any) -> None:
        gst = self._gst
        depay.get_static_pad("sink").add_probe(gst.PadProbeType.BUFFER, self._rtp_packet)
        depay.get_static_pad("src").add_probe(gst.PadProbeType.BUFFER, self._access_unit)
        sink.get_static_pad("sink").add_probe(gst.PadProbeType.BUFFER, self._out_of_converter)

    def _rtp_packet(self, _pad: Any, info: Any) -> Any:
        # Until the first keyframe, remember which frames' packets arrived: the depayloader itself discards
        # a joining reader's frames until it has the stream's parameter sets (which come with a keyframe),
        # so the frames waited for are counted here, at the packets, whoever discards them.
        if self.keyframe_seen:
            return self._gst.PadProbeReturn.REMOVE  # a Python call per RTP packet costs: only until then
        pts = info.get_buffer().pts
        with self._lock:
            if not self.keyframe_seen and pts != self._gst.CLOCK_TIME_NONE and len(self._before_key) < 4096:
                self._before_key.add(pts)
        return self._gst.PadProbeReturn.OK

    def _access_unit(self, _pad: Any, info: Any) -> Any:
        gst = self._gst
        buffer = info.get_buffer()
        keyframe = not buffer.has_flags(gst.BufferFlags.DELTA_UNIT)
        now, wall = time.monotonic(), time.time()
        with self._lock:
            if not self.keyframe_seen:
                if not keyframe:
                    return gst.PadProbeReturn.DROP  # undecodable without its keyframe: grey or smeared
                self.keyframe_seen = True
                self.waited = sum(1 for p in self._before_key if p < buffer.pts)
                self._before_key.clear()
            elif buffer.has_flags(gst.BufferFlags.DISCONT):
                # packets were lost before or inside this access unit (the depayloader saw a gap in the RTP
                # sequence): it and every frame that refers to it would decode as smeared pictures, which the
                # decoder does not always flag; drop them up to the next whole keyframe
                self._broken = True
            self.received += 1
            if self._broken:
                if keyframe and not buffer.has_flags(gst.BufferFlags.DISCONT):
                    self._broken = False
                else:
                    self.decode_errors += 1
                    return gst.PadProbeReturn.DROP
            if buffer.pts != gst.CLOCK_TIME_NONE:
                self._pending[buffer.pts] = (now, wall, time.thread_time(), threading.get_native_id())
                if len(self._pending) > 256:  # a decoder that holds frames back without a bound: forget oldest
                    self._pending.pop(next(iter(self._pending)))
        return gst.PadProbeReturn.OK

    def _out_of_converter(self, _pad: Any, info: Any) -> Any:
        gst = self._gst
        pts = info.get_buffer().pts
        cpu, tid = time.thread_time(), threading.get_native_id()
        with self._lock:
            self.decoded += 1
            entry = self._pending.pop(pts, None)
            # frames leave in presentation order: an earlier one still pending was dropped by the decoder
            lost = [p for p in self._pending if p < pts]
            for p in lost:
                del self._pending[p]
            self.decode_errors += len(lost)
            if entry is not None:
                self._arrivals[pts] = (entry[0], entry[1])
                if len(self._arrivals) > 64:
                    self._arrivals.pop(next(iter(self._arrivals)))
                if entry[3] == tid:
                    self.cpu_s += cpu - entry[2]
                    self.timed += 1
        return gst.PadProbeReturn.OK

    def add_convert(self, cpu_s: float) -> None:
        """The reader thread's colour conversion of one frame (part of what decoding a frame costs)."""
        with self._lock:
            self.cpu_s += cpu_s

    def arrival(self, pts: int) -> Optional[Tuple[float, float]]:
        with self._lock:
            return self._arrivals.pop(pts, None)

    def stats(self) -> DecodeStats:
        with self._lock:
            return DecodeStats(
                self.received,
                self.waited,
                self.decoded,
                self.decode_errors,
                self.cpu_s,
                self.timed,
                self.codec,
                self.decoder,
            )


class GstFrameReader:
    """Frames from a running GStreamer pipeline's ``appsink``: a :class:`~agent.sources.readers.FrameReader`.

    After each :meth:`read`, :attr:`last_capture` is ``(monotonic, wall)`` of the moment the frame's data
    reached the decoder (``None`` when the pipeline has no counted decoder: CSI, a user's pipeline).
    """

    live = True

    def __init__(
        self,
        pipeline: Any,
        sink: Any,
        what: str,
        *,
        read_timeout_s: float,
        nominal_fps: Optional[float] = None,
        probes: Optional[_Probes] = None,
    ) -> None:
        self._gst, _glib = gst_modules()
        self._pipeline = pipeline
        self._sink = sink
        self._bus = pipeline.get_bus()
        self._what = what
        self._read_timeout = read_timeout_s
        self._probes = probes
        self._pending_sample: Any = None
        self.nominal_fps = nominal_fps
        self.last_capture: Optional[Tuple[float, float]] = None
        self.size: Optional[Tuple[int, int]] = None
        self._closed = False
        self._warnings = 0
        self._warned_at = -_WARN_EVERY_S

    # ------------------------------------------------------------------------------------ FrameReader

    def read(self) -> Optional[Image]:
        sample = self._pull(self._read_timeout)
        return None if sample is None else self._image(sample)

    def grab(self) -> bool:
        return self._pull(self._read_timeout) is not None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending_sample = None
        self._pipeline.set_state(self._gst.State.NULL)

    def stats(self) -> Optional[DecodeStats]:
        return None if self._probes is None else self._probes.stats()

    # ------------------------------------------------------------------------------------- internals

    def wait_first(self, timeout_s: float) -> None:
        """Block until the first frame is ready (kept for the first :meth:`read`).

        Raises:
            _PipelineError: the pipeline reported an error or ended.
            _NoFrame: no frame in ``timeout_s``.
        """
        self._pending_sample = self._pull_or_raise(timeout_s)

    def _pull(self, timeout_s: float) -> Any:
        if self._pending_sample is not None:
            sample, self._pending_sample = self._pending_sample, None
            return sample
        try:
            return self._pull_or_raise(timeout_s)
        except _PipelineError as exc:
            if exc.ended and not self.live:
                return None  # the end of a finite pipeline (a file), not a failure
            raise SourceReadError(str(exc)) from None
        except _NoFrame as exc:
            raise SourceReadError(str(exc)) from None

    def _pull_or_raise(self, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            self._read_bus()
            sample = self._sink.try_pull_sample(int(min(_POLL_S, max(0.0, deadline - time.monotonic())) * _NS))
            if sample is not None:
                return sample
            self._read_bus()
            if time.monotonic() >= deadline:
                raise _NoFrame(f"{self._what}: no frame for {timeout_s:.1f} s")

    def _read_bus(self) -> None:
        """Every message the pipeline posted: an error or the end raises; a warning is logged with the camera's
        name (at most one line per ``_WARN_EVERY_S``, with how many came); the rest is dropped. Read at every
        frame: a bus nobody reads keeps every message for good."""
        gst = self._gst
        while self._bus.have_pending():
            message = self._bus.pop()
            if message is None:
                return
            if message.type == gst.MessageType.ERROR:
                error, debug = message.parse_error()
                raise _PipelineError(_describe_error(self._what, error, debug), error)
            if message.type == gst.MessageType.EOS:
                raise _PipelineError(f"{self._what}: the stream ended", ended=True)
            if message.type == gst.MessageType.WARNING:
                self._warnings += 1
                now = time.monotonic()
                if now - self._warned_at >= _WARN_EVERY_S:
                    warning, debug = message.parse_warning()
                    log.warning(
                        "camera_gstreamer_warning",
                        camera=self._what,
                        element=message.src.get_name() if message.src is not None else "",
                        warning=warning.message,
                        debug=(debug or "").strip().splitlines()[-1][:300] if debug else "",
                        since_last=self._warnings,
                    )
                    self._warned_at, self._warnings = now, 0

    def _image(self, sample: Any) -> Image:
        gst = self._gst
        buffer = sample.get_buffer()
        started = time.thread_time()
        image = sample_to_bgr(sample, self._what)
        if self._probes is not None:
            self._probes.add_convert(time.thread_time() - started)
        self.size = (int(image.shape[1]), int(image.shape[0]))
        arrival = None
        if self._probes is not None and buffer.pts != gst.CLOCK_TIME_NONE:
            arrival = self._probes.arrival(buffer.pts)
        self.last_capture = arrival
        return image


def sample_to_bgr(sample: Any, what: str = "frame") -> Image:
    """A raw GStreamer sample (one of :data:`~agent.sources.pipelines.RAW_FORMATS`) as BGR ``(H, W, 3)`` uint8.

    The colour conversion is OpenCV's (0.8 ms for a 1080p I420 frame on one core, against 3.9 ms in
    GStreamer's ``videoconvert``), on the camera's reader thread.

    Raises:
        SourceReadError: a buffer smaller than its caps say, or a format the reader does not take.
    """
    import cv2

    structure = sample.get_caps().get_structure(0)
    fmt = structure.get_string("format") or ""
    width, height = int(structure.get_value("width")), int(structure.get_value("height"))
    buffer = sample.get_buffer()
    data = buffer.extract_dup(0, buffer.get_size())
    try:
        size, planes = raw_layout(fmt, width, height)
    except ValueError as exc:
        raise SourceReadError(f"{what}: {exc}") from None
    if len(data) < size:
        raise SourceReadError(f"{what}: a {len(data)}-byte buffer for a {width}x{height} {fmt} frame")
    raw = np.frombuffer(data, np.uint8)

    def plane(index: int) -> Image:
        offset, stride, row_bytes, rows = planes[index]
        view: Image = np.lib.stride_tricks.as_strided(raw[offset:], (rows, row_bytes), (stride, 1))
        return view

    if fmt == "BGR":
        return (
            np.ascontiguousarray(plane(0)).reshape(height, width, 3)
            if planes[0][1] != width * 3
            else (raw[: width * height * 3].reshape(height, width, 3))
        )
    if fmt == "BGRx":
        return np.asarray(cv2.cvtColor(raw[:size].reshape(height, width, 4), cv2.COLOR_BGRA2BGR))
    # 4:2:0: OpenCV wants the planes one after the other, rows unpadded
    if all(stride == row_bytes for _offset, stride, row_bytes, _rows in planes) and width % 2 == 0 and height % 2 == 0:
        packed = raw[:size].reshape(height * 3 // 2, width)
    else:
        packed = np.concatenate([np.ascontiguousarray(plane(i)).reshape(-1) for i in range(len(planes))])
        if width % 2 or height % 2:
            raise SourceReadError(f"{what}: a {width}x{height} 4:2:0 frame (odd sizes are not decoded)")
        packed = packed.reshape(height * 3 // 2, width)
    code = cv2.COLOR_YUV2BGR_I420 if fmt == "I420" else cv2.COLOR_YUV2BGR_NV12
    return np.asarray(cv2.cvtColor(packed, code))


class _NoFrame(Exception):
    """No frame arrived in the time allowed."""


class _PipelineError(Exception):
    """The pipeline failed while opening (message, and GLib.Error when GStreamer gave one)."""

    def __init__(self, message: str, error: Any = None, ended: bool = False) -> None:
        super().__init__(message)
        self.error = error
        self.ended = ended


def _describe_error(what: str, error: Any, debug: Optional[str]) -> str:
    detail = f" ({debug.strip().splitlines()[-1][:300]})" if debug else ""
    return f"{what}: {error.message}{detail}"


def _error_code(gst: Any, error: Any) -> Optional[str]:
    """``auth`` / ``not_found`` / ``missing_element`` / ``None`` from a GStreamer error."""
    if error is None:
        return None
    if error.matches(gst.ResourceError.quark(), gst.ResourceError.NOT_AUTHORIZED):
        return "auth"
    if error.matches(gst.ResourceError.quark(), gst.ResourceError.NOT_FOUND):
        return "not_found"
    if error.matches(gst.CoreError.quark(), gst.CoreError.MISSING_PLUGIN):
        return "missing_element"
    return None


def _element(gst: Any, factory: str, name: Optional[str] = None) -> Any:
    element = gst.ElementFactory.make(factory, name)
    if element is None:
        raise SourceConfigError(f"GStreamer element {factory!r} is not installed. {_INSTALL_HINT}")
    return element


BranchFactory = Callable[[str], Tuple[str, Callable[[Any], None]]]
"""codec -> (the branch's description, a callback given the built branch bin)."""


def _start_rtsp(
    url: str,
    *,
    transport: str,
    latency_ms: int,
    open_timeout_s: float,
    read_timeout_s: float,
    what: str,
    branch_for: BranchFactory,
) -> Tuple[Any, Dict[str, Any], Dict[str, BaseException]]:
    """An ``rtspsrc`` pipeline whose video branch is built from ``branch_for(codec)`` when the camera describes
    its stream; returns (pipeline, what was built: ``sink``, failures found while building: ``error``)."""
    gst, _glib = gst_modules()
    location, user, password = split_credentials(url)
    pipeline = gst.Pipeline.new(None)
    source = _element(gst, "rtspsrc", "src")
    source.set_property("location", location)
    if user is not None:
        source.set_property("user-id", user)
    if password is not None:
        source.set_property("user-pw", password)
    gst.util_set_object_arg(source, "protocols", transport)  # a flags value by nick: no GstRtsp typelib needed
    source.set_property("latency", int(latency_ms))
    source.set_property("tcp-timeout", int(open_timeout_s * 1_000_000))
    source.set_property("timeout", int(read_timeout_s * 1_000_000))  # UDP: no packet this long -> TCP retry
    source.set_property("drop-on-latency", True)
    source.set_property("do-rtsp-keep-alive", True)
    pipeline.add(source)
    built: Dict[str, Any] = {}
    failure: Dict[str, BaseException] = {}
    lock = threading.Lock()

    def pad_added(_src: Any, pad: Any) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        structure = caps.get_structure(0)
        media = structure.get_string("media") or ""
        with lock:
            if media != "video" or "sink" in built:
                sink = gst.ElementFactory.make("fakesink", None)  # audio, metadata, a second video stream
                sink.set_property("sync", False)
                pipeline.add(sink)
                sink.sync_state_with_parent()
                pad.link(sink.get_static_pad("sink"))
                return
            codec = codec_of_encoding(structure.get_string("encoding-name") or "")
            try:
                if codec is None:
                    raise SourceConfigError(
                        f"{what}: the camera sends {structure.get_string('encoding-name')}; "
                        "only H.264 and H.265 are decoded"
                    )
                description, attach = branch_for(codec)
                branch = gst.parse_bin_from_description(description, True)
            except (SourceConfigError, ValueError) as exc:
                failure["error"] = exc if isinstance(exc, SourceConfigError) else SourceConfigError(str(exc))
                return
            except Exception as exc:  # GLib.Error from the parser: an element or property missing
                failure["error"] = SourceConfigError(f"{what}: cannot build the pipeline: {exc}")
                return
            pipeline.add(branch)
            branch.sync_state_with_parent()
            pad.link(branch.get_static_pad("sink"))
            attach(branch)
            built["codec"] = codec
            built["sink"] = branch.get_by_name("sink")
            built["ready"] = True

    source.connect("pad-added", pad_added)
    return pipeline, built, failure


def open_rtsp(
    url: str,
    *,
    transport: str = "tcp",
    latency_ms: int = 200,
    decoder: str = "auto",
    threads: int = 1,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    what: str = "",
) -> GstFrameReader:
    """Connect to an RTSP camera and wait for its first decoded frame (a keyframe: up to a GOP).

    The codec comes from the stream itself (its SDP, when ``rtspsrc`` adds the pad), then the decoder
    (:func:`~agent.sources.pipelines.choose_decoder`). Credentials in the URL go to ``rtspsrc`` as properties;
    its location, and so every GStreamer message, holds none.

    Raises:
        SourceConfigError: GStreamer, an element or the configured decoder is missing; the stream's codec is
            not H.264 / H.265.
        SourceUnavailableError: the camera did not deliver a frame within ``open_timeout_s``; the reason says
            why (``retry_after_s`` is set for a refused login or a wrong path).
    """
    gst, _glib = gst_modules()
    what = what or redact_url(url)
    facts = machine_facts() if decoder == "auto" else MachineFacts()
    probes = _Probes(gst)

    def branch_for(codec: str) -> Tuple[str, Callable[[Any], None]]:
        choice = choose_decoder(decoder, codec, facts)
        if gst.ElementFactory.find(choice.element) is None:
            raise SourceConfigError(
                f"{what}: decoder {choice.decoder!r} needs GStreamer element {choice.element!r}, which this "
                "machine lacks (decoder: auto picks what is present)"
            )
        probes.codec, probes.decoder = codec, choice.describe()
        return decode_branch(codec, choice.decoder, threads=threads), lambda branch: probes.attach(
            branch.get_by_name("depay"), branch.get_by_name("sink")
        )

    pipeline, built, failure = _start_rtsp(
        url,
        transport=transport,
        latency_ms=latency_ms,
        open_timeout_s=open_timeout_s,
        read_timeout_s=read_timeout_s,
        what=what,
        branch_for=branch_for,
    )
    return _play(
        pipeline,
        lambda: GstFrameReader(pipeline, _LateSink(built), what, read_timeout_s=read_timeout_s, probes=probes),
        built,
        failure,
        open_timeout_s=open_timeout_s,
        url=url,
        what=what,
    )


_Reader = TypeVar("_Reader", bound="GstFrameReader")


def _play(
    pipeline: Any,
    make_reader: Callable[[], _Reader],
    built: Dict[str, Any],
    failure: Dict[str, BaseException],
    *,
    open_timeout_s: float,
    url: str,
    what: str,
) -> _Reader:
    """Start an RTSP pipeline and wait for its first sample; the pipeline is stopped again on any failure."""
    gst, _glib = gst_modules()
    reader: Optional[_Reader] = None
    try:
        if pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
            raise SourceUnavailableError(f"{what}: the pipeline did not start")
        reader = make_reader()
        _wait_first(reader, built, failure, open_timeout_s, url, what, gst)
        return reader
    except BaseException:
        if reader is not None:
            reader.close()
        else:
            pipeline.set_state(gst.State.NULL)
        raise


class GstUnitReader(GstFrameReader):
    """Access units from an RTSP stream's demux-only pipeline (:func:`open_rtsp_units`); ``codec`` is known."""

    def __init__(self, pipeline: Any, sink: Any, what: str, *, read_timeout_s: float, built: Dict[str, Any]) -> None:
        super().__init__(pipeline, sink, what, read_timeout_s=read_timeout_s)
        self._built = built

    @property
    def codec(self) -> str:
        return str(self._built.get("codec", ""))

    def read_unit(self) -> Optional[AccessUnit]:
        """The next access unit (blocks up to the read timeout; raises SourceReadError then or on an error)."""
        sample = self._pull(self._read_timeout)
        if sample is None:
            return None
        buffer = sample.get_buffer()
        return AccessUnit(
            buffer.extract_dup(0, buffer.get_size()),
            int(buffer.pts),
            not buffer.has_flags(self._gst.BufferFlags.DELTA_UNIT),
            time.monotonic(),
            time.time(),
        )


def open_rtsp_units(
    url: str,
    *,
    transport: str = "tcp",
    latency_ms: int = 200,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    what: str = "",
) -> GstUnitReader:
    """Connect to an RTSP stream and receive its access units without decoding them (a main stream: a still is
    decoded from its last keyframe only when one is wanted, :func:`decode_still`).

    Raises: as :func:`open_rtsp`.
    """
    gst_modules()  # a clear error before anything is built when the bindings are missing
    what = what or redact_url(url)
    pipeline, built, failure = _start_rtsp(
        url,
        transport=transport,
        latency_ms=latency_ms,
        open_timeout_s=open_timeout_s,
        read_timeout_s=read_timeout_s,
        what=what,
        branch_for=lambda codec: (demux_branch(codec), lambda _branch: None),
    )
    return _play(
        pipeline,
        lambda: GstUnitReader(pipeline, _LateSink(built), what, read_timeout_s=read_timeout_s, built=built),
        built,
        failure,
        open_timeout_s=open_timeout_s,
        url=url,
        what=what,
    )


def decode_still(codec: str, units: Sequence[AccessUnit], timeout_s: float = 10.0) -> Image:
    """Decode a run of access units that starts at a keyframe; returns the last frame, BGR.

    A pipeline of its own for each still (``appsrc`` → parser → CPU decoder → ``appsink``): made, fed and
    discarded in the calling thread; a few milliseconds to set up beside the decoding itself.

    Raises:
        ValueError: an empty run, or one that does not start at a keyframe.
        SourceReadError: the decoder produced no frame.
    """
    if not units or not units[0].keyframe:
        raise ValueError("a still is decoded from a run of access units that starts at a keyframe")
    gst, _glib = gst_modules()
    pipeline = gst.parse_launch(still_decoder(codec, threads=1))
    source, sink = pipeline.get_by_name("src"), pipeline.get_by_name("sink")
    last: Any = None
    try:
        pipeline.set_state(gst.State.PLAYING)
        for unit in units:
            buffer = gst.Buffer.new_wrapped(unit.data)
            buffer.pts = unit.pts
            if not unit.keyframe:
                buffer.set_flags(gst.BufferFlags.DELTA_UNIT)
            source.emit("push-buffer", buffer)
        source.emit("end-of-stream")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sample = sink.try_pull_sample(int(0.2 * _NS))
            if sample is not None:
                last = sample
                continue
            if sink.is_eos():
                break
            message = pipeline.get_bus().pop_filtered(gst.MessageType.ERROR)
            if message is not None:
                raise SourceReadError(f"decoding a still failed: {message.parse_error()[0].message}")
    finally:
        pipeline.set_state(gst.State.NULL)
    if last is None:
        raise SourceReadError("decoding a still produced no frame")
    return sample_to_bgr(last, "a still")


class _LateSink:
    """The appsink of a branch that is built only when the stream's pad appears."""

    def __init__(self, built: Dict[str, Any]) -> None:
        self._built = built

    def try_pull_sample(self, timeout_ns: int) -> Any:
        sink = self._built.get("sink")
        if sink is None:
            time.sleep(timeout_ns / _NS)
            return None
        return sink.try_pull_sample(timeout_ns)


def _wait_first(
    reader: GstFrameReader,
    built: Dict[str, Any],
    failure: Dict[str, BaseException],
    timeout_s: float,
    url: str,
    what: str,
    gst: Any,
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if "error" in failure:
            raise failure["error"]
        try:
            reader.wait_first(min(_POLL_S * 2, max(0.0, deadline - time.monotonic())))
            return
        except _PipelineError as exc:
            if "error" in failure:
                raise failure["error"] from None
            raise _open_failure(gst, exc, url, what, timeout_s) from None
        except _NoFrame:
            if time.monotonic() >= deadline:
                why = diagnose_stream_url(url, timeout_s=min(3.0, timeout_s))
                waiting = "" if built.get("ready") else " (the camera did not describe a video stream)"
                raise SourceUnavailableError(
                    f"{what}: no frame within {timeout_s:.0f} s{waiting}" + (f": {why}" if why else "")
                ) from None


def _open_failure(gst: Any, exc: _PipelineError, url: str, what: str, timeout_s: float) -> SourceUnavailableError:
    code = _error_code(gst, exc.error)
    _bare, user, _password = split_credentials(url)
    if code == "auth":
        refused = "the camera refused the configured user / password" if user else "the camera wants credentials"
        return SourceUnavailableError(f"{what}: RTSP 401 Unauthorized: {refused}", retry_after_s=AUTH_RETRY_S)
    if code == "not_found":
        return SourceUnavailableError(
            f"{what}: RTSP 404 Not Found: no stream at this path (check the camera's stream URL)",
            retry_after_s=NOT_FOUND_RETRY_S,
        )
    if code == "missing_element":
        return SourceUnavailableError(f"{exc}. {_INSTALL_HINT}")
    why = diagnose_stream_url(url, timeout_s=min(3.0, timeout_s))
    if why and "401" not in why:  # an unauthenticated probe always hears 401 from a camera that wants a login
        return SourceUnavailableError(f"{what}: {why}")
    return SourceUnavailableError(str(exc))


def open_pipeline(
    description: str,
    *,
    what: str,
    nominal_fps: Optional[float] = None,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
) -> GstFrameReader:
    """A complete pipeline ending in an ``appsink`` (CSI sensors, a user's own pipeline) delivering BGR.

    Raises:
        SourceConfigError: the description does not parse (a missing element, a typo) or has no appsink.
        SourceUnavailableError: no frame within ``open_timeout_s``.
    """
    gst, glib = gst_modules()
    try:
        pipeline = gst.parse_launch(description)
    except glib.Error as exc:
        raise SourceConfigError(f"{what}: the pipeline does not parse: {exc.message}") from exc
    sink = pipeline.get_by_name("sink") if hasattr(pipeline, "get_by_name") else None
    if sink is None:
        sink = _find_appsink(gst, pipeline)
    if sink is None:
        pipeline.set_state(gst.State.NULL)
        raise SourceConfigError(f"{what}: the pipeline has no appsink for the agent to read")
    if pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
        message = pipeline.get_bus().pop_filtered(gst.MessageType.ERROR)
        pipeline.set_state(gst.State.NULL)
        detail = f": {message.parse_error()[0].message}" if message is not None else ""
        raise SourceUnavailableError(f"{what}: the pipeline did not start{detail}")
    reader = GstFrameReader(pipeline, sink, what, read_timeout_s=read_timeout_s, nominal_fps=nominal_fps)
    try:
        reader.wait_first(open_timeout_s)
    except _PipelineError as exc:
        reader.close()
        raise SourceUnavailableError(str(exc)) from None
    except _NoFrame as exc:
        reader.close()
        raise SourceUnavailableError(str(exc)) from None
    return reader


def _find_appsink(gst: Any, pipeline: Any) -> Any:
    iterator = pipeline.iterate_recurse()
    while True:
        result, element = iterator.next()
        if result != gst.IteratorResult.OK:
            return None
        factory = element.get_factory()
        if factory is not None and factory.get_name() == "appsink":
            return element


def environment_summary() -> Dict[str, Any]:
    """GStreamer's version and the decoders present (for ``edge-agent status`` and the bench)."""
    gst, _glib = gst_modules()
    facts = machine_facts()
    return {
        "gstreamer": gst.version_string(),
        "decoders": sorted(facts.elements),
        "jetson": facts.jetson,
        "nvidia_gpu": facts.nvidia_gpu,
        "render_node": facts.render_node,
        "plugin_path": os.environ.get("GST_PLUGIN_PATH", ""),
    }
