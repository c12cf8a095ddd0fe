"""Image and video I/O shared by the CLI and the daemon: reading with clear errors, JPEG, annotation.

OpenCV is imported lazily: on a Jetson it is the system build (with GStreamer), elsewhere the pip wheel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
from numpy.typing import NDArray

from agent.core.detections import Detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg")


class MediaError(Exception):
    """An image, video or folder cannot be used as a source; ``path`` says which."""

    def __init__(self, message: str, path: Union[str, Path]) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


def opencv() -> Any:
    import cv2

    return cv2


def read_image(path: Union[str, Path]) -> NDArray[Any]:
    """Read an image file as BGR uint8.

    Raises:
        MediaError: missing, unreadable, or not an image OpenCV can decode.
    """
    cv2 = opencv()
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise MediaError("file not found", path) from None
    except OSError as exc:
        raise MediaError(f"cannot read: {exc.strerror}", path) from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise MediaError("not an image OpenCV can decode", path)
    return np.asarray(image)


def encode_jpeg(image: NDArray[Any], quality: int = 90) -> bytes:
    """Encode a BGR uint8 image as JPEG bytes."""
    cv2 = opencv()
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buf.tobytes())


def _colour(class_id: int) -> Tuple[int, int, int]:
    # A fixed, well-spread palette (golden-ratio hue steps), so a class keeps its colour across runs.
    hue = (class_id * 0.618033988749895) % 1.0
    h6 = hue * 6
    i = int(h6)
    f = h6 - i
    v, s = 255, 0.85
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i % 6]
    return int(b), int(g), int(r)


def annotate(image: NDArray[Any], detections: Detections, names: Mapping[int, str]) -> NDArray[Any]:
    """Return a copy of ``image`` with boxes and ``name conf`` labels drawn."""
    cv2 = opencv()
    out = image.copy()
    thickness = max(1, round(max(out.shape[:2]) / 500))
    scale = max(0.4, max(out.shape[:2]) / 1600)
    for box, conf, cls in zip(detections.xyxy, detections.confidence, detections.class_id):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        colour = _colour(int(cls))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = f"{names.get(int(cls), str(int(cls)))} {float(conf):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        ty = max(y1, th + base)
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(out, label, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return out


class VideoFile:
    """Frames of a video file, with a clear error when it cannot be opened or decoded."""

    def __init__(self, path: Union[str, Path]) -> None:
        cv2 = opencv()
        self.path = Path(path)
        if not self.path.is_file():
            raise MediaError("video file not found", self.path)
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise MediaError("cannot open video (unknown container or codec)", self.path)
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise MediaError("video has no decodable frame", self.path)
        self._first: Optional[NDArray[Any]] = first
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS)) or 0.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.size = (int(first.shape[0]), int(first.shape[1]))

    def __iter__(self) -> Iterator[NDArray[Any]]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return
            yield frame

    def close(self) -> None:
        self._cap.release()


def list_source(path: Union[str, Path]) -> Tuple[str, List[Path]]:
    """Classify a detect source: ``("image", [file])``, ``("video", [file])`` or ``("dir", [images...])``.

    Raises:
        MediaError: missing path, a file that is neither image nor video, or a folder with no images.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not files and not videos:
            raise MediaError(
                f"folder has no images ({', '.join(IMAGE_SUFFIXES)}) or videos ({', '.join(VIDEO_SUFFIXES)})", path
            )
        return "dir", files + videos
    if not path.exists():
        raise MediaError("source not found", path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video", [path]
    if suffix in IMAGE_SUFFIXES:
        return "image", [path]
    # Unknown suffix: decide by content rather than refuse a valid image named oddly.
    cv2 = opencv()
    data = np.fromfile(str(path), dtype=np.uint8, count=64 * 1024 * 1024)
    if data.size and cv2.imdecode(data, cv2.IMREAD_COLOR) is not None:
        return "image", [path]
    raise MediaError("not an image or a video this tool can read", path)


def describe_frame(
    source: Path,
    index: int,
    image: NDArray[Any],
    detections: Detections,
    names: Mapping[int, str],
    timing: Optional[Dict[str, float]] = None,
) -> Dict[str, Any]:
    """The JSON object printed per frame by ``edge-agent detect --json``."""
    record: Dict[str, Any] = {
        "source": str(source),
        "frame": index,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "detections": detections.to_records(names),
    }
    if timing is not None:
        record["timing_ms"] = {k: round(v, 3) for k, v in timing.items()}
    return record
