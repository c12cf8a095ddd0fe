"""The live preview: a camera's newest :class:`PreviewSource` -> scaled, annotated JPEG.

Runs in the console's request threads, never in the inference thread. Each camera's image is rendered at
most ``fps`` times a second however many browsers watch (the others get the cached JPEG), so a page left open
in ten tabs costs what one costs. The cost it does have (a resize, some drawing, one JPEG encode: a few ms per
image at 960 px) is measured against the four-camera pipeline in bench/bench_console_preview.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from agent.core.detections import Detections
from agent.imaging import annotate, encode_jpeg, opencv
from agent.sources.frame import Frame

__all__ = ["PreviewImage", "PreviewRenderer", "PreviewSource", "render_preview"]


class PreviewSource(Protocol):
    """What a preview is drawn from: a frame, what the model saw in it, and the alert zones to outline
    (the daemon's pipeline publishes one per camera: ``agent.app.pipeline.PreviewFrame``)."""

    @property
    def frame(self) -> Frame: ...

    @property
    def detections(self) -> Detections: ...

    @property
    def names(self) -> Mapping[int, str]: ...

    @property
    def zones(self) -> Sequence[Tuple[str, Sequence[Tuple[float, float]]]]: ...


@dataclass(frozen=True)
class PreviewImage:
    jpeg: bytes
    frame_index: int
    captured_wall: float
    detections: int


def render_preview(preview: PreviewSource, width: int, quality: int) -> bytes:
    """``preview`` scaled down to at most ``width`` pixels wide, zones outlined, detections drawn, as JPEG."""
    cv2 = opencv()
    image = preview.frame.image
    height, full_width = image.shape[:2]
    scale = min(1.0, width / float(full_width))
    if scale < 1.0:
        # bilinear: INTER_AREA costs 7 ms at a non-integer ratio (1920 -> 800) against 0.8 ms
        size = (int(round(full_width * scale)), int(round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    dets = preview.detections
    scaled = Detections(dets.xyxy * np.float32(scale), dets.confidence, dets.class_id)
    out = annotate(image, scaled, preview.names)
    for name, points in preview.zones:
        polygon = (np.asarray(points, np.float32) * scale).round().astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [polygon], True, (255, 200, 0), 2)
        x, y = (int(v) for v in polygon[0, 0])
        cv2.putText(out, name, (x + 4, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 200, 0), 1)
    return encode_jpeg(out, quality)


class PreviewRenderer:
    """Rate-capped, shared previews of every camera. ``newest(camera)`` gives the camera's current
    :class:`PreviewSource` (``None`` before its first frame); ``clock`` is for tests."""

    def __init__(
        self,
        newest: Callable[[str], Optional[PreviewSource]],
        fps: float,
        width: int,
        quality: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._newest = newest
        self._period = 1.0 / fps
        self._width = width
        self._quality = quality
        self._clock = clock
        self._lock = threading.Lock()  # one render at a time: viewers of the same moment share it
        self._cache: Dict[str, Tuple[float, PreviewImage]] = {}  # camera -> (rendered at, PreviewImage)
        self.renders = 0
        self.render_cpu_s = 0.0  # CPU time of the renders (thread time: the request threads are short-lived)

    def image(self, camera: str) -> Optional[PreviewImage]:
        """The camera's preview, rendered now if the cached one is older than the rate allows."""
        with self._lock:
            now = self._clock()
            cached = self._cache.get(camera)
            if cached is not None and now - cached[0] < self._period:
                return cached[1]
            preview = self._newest(camera)
            if preview is None:
                return None
            if cached is not None and cached[1].frame_index == preview.frame.index:
                self._cache[camera] = (now, cached[1])  # nothing new from the camera: keep the image
                return cached[1]
            began = time.thread_time()
            image = PreviewImage(
                render_preview(preview, self._width, self._quality),
                preview.frame.index,
                preview.frame.captured_wall,
                len(preview.detections),
            )
            self.renders += 1
            self.render_cpu_s += time.thread_time() - began
            self._cache[camera] = (now, image)
            return image

    def forget(self, camera: str) -> None:
        with self._lock:
            self._cache.pop(camera, None)
