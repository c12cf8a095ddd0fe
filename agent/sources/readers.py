"""Frame readers: one open connection to a camera, file, folder or renderer (GStreamer's are in gst.py).

A reader is opened by an *opener* (a zero-argument callable) and used by exactly one
:class:`agent.sources.camera.CameraSource` thread. OpenCV is imported when a reader is opened, never at
import time, so the pure modules of the agent import on machines without it.

Readers raise :class:`SourceUnavailableError` when they cannot open (retried with backoff),
:class:`SourceConfigError` when they never will (the camera goes to FAILED), and :class:`SourceReadError`
when an open stream breaks. ``read()`` returns ``None`` at the *end* of a finite source (file, folder).
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt
from typing_extensions import Protocol

from agent.memory import release_free_memory
from agent.sources.diagnose import diagnose_stream_url
from agent.sources.errors import SourceConfigError, SourceReadError, SourceUnavailableError
from agent.sources.frame import SyntheticOrigin

Image = npt.NDArray[Any]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Prerendering builds a stream's belt, light and noise (about 100 MB of temporaries at 1080p): one camera at
# a time, so four cameras starting together do not need four times that at once.
_PRERENDER_LOCK = threading.Lock()

# OPENCV_FFMPEG_CAPTURE_OPTIONS is process-wide and read by FFmpeg when a capture opens: every FFmpeg open
# holds this lock while the variable holds that open's options. Only files and HTTP cameras open through
# FFmpeg; RTSP cameras, which a site has many of, open through GStreamer (agent/sources/gst.py) in parallel.
_FFMPEG_OPEN_LOCK = threading.Lock()


class FrameReader(Protocol):
    """One open source. ``live`` sources are never paced (frames come at the camera's rate)."""

    live: bool
    nominal_fps: Optional[float]

    def read(self) -> Optional[Image]:
        """The next frame, BGR uint8 ``(H, W, 3)``; ``None`` at the end of a finite source."""

    def grab(self) -> bool:
        """Advance one frame without decoding it (fps limit on live streams); False at the end."""

    def close(self) -> None:
        """Release the source; safe to call twice."""


Opener = Callable[[], FrameReader]


def cv2_module() -> Any:
    """OpenCV, imported on first use (the system build on a Jetson, the pip wheel elsewhere)."""
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:  # pragma: no cover - OpenCV is installed wherever sources run
        raise SourceConfigError(
            "OpenCV is not installed: install the 'opencv' extra, or on a Jetson make the system OpenCV "
            "visible to the virtualenv (--system-site-packages)"
        ) from exc


def as_bgr(image: Image) -> Image:
    """Grey, BGRA or 16-bit images as 3-channel BGR uint8 (what the engine expects)."""
    cv2 = cv2_module()
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    if image.ndim == 3 and image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    return image


# ---------------------------------------------------------------------------------------------- OpenCV


class OpenCvReader:
    """A ``cv2.VideoCapture`` (FFmpeg or V4L2 backend)."""

    def __init__(self, capture: Any, live: bool, nominal_fps: Optional[float], what: str) -> None:
        self._capture = capture
        self.live = live
        self.nominal_fps = nominal_fps
        self._what = what

    def read(self) -> Optional[Image]:
        ok, image = self._capture.read()
        if not ok or image is None:
            if self.live:
                raise SourceReadError(f"{self._what}: read failed (stream ended or timed out)")
            return None
        return as_bgr(image)

    def grab(self) -> bool:
        ok = bool(self._capture.grab())
        if not ok and self.live:
            raise SourceReadError(f"{self._what}: grab failed (stream ended or timed out)")
        return ok

    def close(self) -> None:
        self._capture.release()


def _reported_fps(capture: Any) -> Optional[float]:
    cv2 = cv2_module()
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    # Streams report 0, NaN or the 90 kHz RTP clock when they do not know; only believe plausible rates.
    return fps if 0.5 <= fps <= 240.0 else None


def open_ffmpeg(
    url_or_path: str,
    *,
    live: bool,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    capture_options: str = "",
    what: str = "",
) -> OpenCvReader:
    """Open a URL or file with OpenCV's FFmpeg backend.

    ``capture_options`` is the ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` value for this open (``key;value|key;value``,
    e.g. ``rtsp_transport;tcp``).
    """
    cv2 = cv2_module()
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(read_timeout_s * 1000),
    ]
    with _FFMPEG_OPEN_LOCK:
        saved = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
        try:
            if capture_options:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = capture_options
            else:
                os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
            capture = cv2.VideoCapture(url_or_path, cv2.CAP_FFMPEG, params)
        finally:
            if saved is None:
                os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
            else:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = saved
    if not capture.isOpened():
        capture.release()
        # OpenCV says only that it failed: ask the network why (DNS, refused, timeout, 401, 404, ...)
        why = diagnose_stream_url(url_or_path, timeout_s=min(3.0, open_timeout_s)) if live else None
        raise SourceUnavailableError(f"{what or url_or_path}: cannot open" + (f": {why}" if why else ""))
    return OpenCvReader(capture, live=live, nominal_fps=_reported_fps(capture), what=what or url_or_path)


def open_video_file(path: Union[str, Path], realtime: bool) -> OpenCvReader:
    """A video file: finite, paced at its own frame rate when ``realtime``."""
    file = Path(path)
    if not file.is_file():
        raise SourceUnavailableError(f"{file}: no such video file")
    reader = open_ffmpeg(str(file), live=False, what=str(file))
    if not realtime:
        reader.nominal_fps = None
    elif reader.nominal_fps is None:
        reader.nominal_fps = 25.0  # a file without a usable rate still plays at a plausible speed
    return reader


def open_usb(
    device: Union[int, str],
    width: Optional[int] = None,
    height: Optional[int] = None,
    fps: Optional[float] = None,
    fourcc: Optional[str] = None,
) -> OpenCvReader:
    """A V4L2 device by index or path. The driver may pick the nearest mode it supports."""
    cv2 = cv2_module()
    if isinstance(device, str) and not Path(device).exists():
        raise SourceUnavailableError(f"{device}: no such device (unplugged?)")
    capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
    if not capture.isOpened():
        capture.release()
        raise SourceUnavailableError(f"V4L2 device {device}: cannot open")
    # FOURCC first: the sizes and rates a UVC camera offers depend on the pixel format.
    if fourcc:
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
    if width:
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    if height:
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    if fps:
        capture.set(cv2.CAP_PROP_FPS, fps)
    capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones (where supported)
    return OpenCvReader(capture, live=True, nominal_fps=_reported_fps(capture), what=f"V4L2 device {device}")


# ----------------------------------------------------------------------------------------- image folder


class ImageFolderReader:
    """The images of a folder in sorted name order; the folder is listed when the reader opens."""

    live = False

    def __init__(self, folder: Union[str, Path], fps: Optional[float]) -> None:
        self.folder = Path(folder)
        self.nominal_fps = fps
        if not self.folder.is_dir():
            raise SourceUnavailableError(f"{self.folder}: no such folder")
        self._files: List[Path] = sorted(
            p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self._files:
            raise SourceUnavailableError(f"{self.folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self._position = 0
        self.unreadable: List[Path] = []

    def read(self) -> Optional[Image]:
        cv2 = cv2_module()
        while self._position < len(self._files):
            path = self._files[self._position]
            self._position += 1
            try:
                data = np.fromfile(str(path), np.uint8)
            except OSError as exc:
                if not self.folder.is_dir():
                    raise SourceReadError(f"{self.folder}: folder disappeared") from exc
                self.unreadable.append(path)  # removed between listing and reading: skip it
                continue
            image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            if image is None:
                self.unreadable.append(path)  # a corrupt or half-written image must not stop the camera
                continue
            return as_bgr(image)
        if len(self.unreadable) >= len(self._files):
            raise SourceReadError(f"{self.folder}: none of the {len(self._files)} images could be decoded")
        return None

    def grab(self) -> bool:
        if self._position >= len(self._files):
            return False
        self._position += 1
        return True

    def close(self) -> None:
        self._position = len(self._files)


# -------------------------------------------------------------------------------------------- synthetic


def _synthetic_module() -> Any:
    try:
        return importlib.import_module("agent.synthetic")
    except ImportError as exc:
        raise SourceConfigError(f"the synthetic scene renderer cannot be imported: {exc}") from exc


def _render_function() -> Callable[..., Any]:
    """``render_stream_frame`` (a coherent conveyor: parts move from frame to frame, as a tracker expects),
    else ``render_frame`` (independent scenes)."""
    module = _synthetic_module()
    for name in ("render_stream_frame", "render_frame"):
        render = getattr(module, name, None)
        if callable(render):
            return render  # type: ignore[no-any-return]
    raise SourceConfigError("agent.synthetic has no render_stream_frame/render_frame")


def bounce_order(count: int) -> List[int]:
    """One period of a forward-then-backward replay of ``count`` frames: ``0 .. count-1 .. 1``.

    Played in a loop, parts move along the belt and back without ever jumping, so a tracker sees the same
    tracks it would on a live conveyor (a plain loop would end every track at the wrap).

    >>> bounce_order(4)
    [0, 1, 2, 3, 2, 1]
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return list(range(count)) + list(range(count - 2, 0, -1))


class SyntheticReader:
    """Frames of the synthetic scene renderer: ``render_stream_frame(domain, seed, i, size=(h, w)).image``.

    Two modes:

    - ``prerender=0``: every frame is rendered when it is read (about 13 ms of numpy/OpenCV work per 1080p
      frame in the camera's thread; much of it holds the GIL). A test load for the renderer, not a camera.
    - ``prerender=N``: N consecutive frames are rendered once, at open, and replayed forward and backward
      (:func:`bounce_order`) as read-only arrays, without a copy. A read then costs next to nothing, like a
      camera whose frames are decoded by hardware, at the price of ``N * H * W * 3`` bytes held for the
      source's lifetime (6.2 MB per 1080p frame).

    After each :meth:`read`, :attr:`last_origin` names what was rendered (domain, seed, stream index, size),
    which travels in the lineage of samples so the cloud can re-render the frame for its ground truth.
    """

    live = False

    def __init__(
        self,
        domain: str,
        seed: int,
        size: Sequence[int],
        fps: float,
        start_index: int = 0,
        prerender: int = 0,
    ) -> None:
        if prerender < 0:
            raise SourceConfigError(f"synthetic source: prerender must be >= 0, got {prerender}")
        self.domain = domain
        self.seed = seed
        self.size = (int(size[0]), int(size[1]))
        self.nominal_fps: Optional[float] = fps
        self.index = start_index
        self._start = start_index
        self._loop: List[Image] = []
        self._order: List[int] = []
        self._first: Optional[Image] = None
        self.last_origin: Optional[SyntheticOrigin] = None
        try:  # render now so a bad domain fails at open, as a configuration error
            if prerender:
                self._loop = self._prerender(prerender)
                self._order = bounce_order(len(self._loop))
            else:
                self._render = _render_function()
                self._first = self._render_index(self.index)
        except (KeyError, ValueError) as exc:
            raise SourceConfigError(f"synthetic source: {exc}") from exc

    @property
    def held_bytes(self) -> int:
        """Bytes of the replayed frames (0 when rendering live)."""
        return sum(int(image.nbytes) for image in self._loop)

    def _prerender(self, count: int) -> List[Image]:
        render_many = _synthetic_module().render_stream_frames
        with _PRERENDER_LOCK:
            # builds the stream's belt for this call only: the renderer's cache does not keep it
            frames = render_many(self.domain, self.seed, range(self.index, self.index + count), size=self.size)
            images = []
            for frame in frames:
                image = np.ascontiguousarray(as_bgr(np.asarray(frame.image)))
                image.setflags(write=False)  # handed out by reference to every consumer: nobody may draw on it
                images.append(image)
            del frames
            release_free_memory()
        return images

    def _render_index(self, index: int) -> Image:
        frame = self._render(self.domain, self.seed, index, size=self.size)
        return as_bgr(np.asarray(frame.image))

    def read(self) -> Optional[Image]:
        if self._loop:
            stream_index = self._start + self._order[(self.index - self._start) % len(self._order)]
            image = self._loop[stream_index - self._start]
        elif self._first is not None:
            stream_index = self.index
            image, self._first = self._first, None
        else:
            stream_index = self.index
            image = self._render_index(self.index)
        self.index += 1
        self.last_origin = SyntheticOrigin(self.domain, self.seed, stream_index, self.size[1], self.size[0])
        return image

    def grab(self) -> bool:
        self._first = None
        self.index += 1
        return True

    def close(self) -> None:
        self._first = None
        self._loop = []
