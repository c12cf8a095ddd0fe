"""Letterbox frames into the model's NCHW input tensor, in preallocated buffers.

Same pixels as Ultralytics' predictor: ``cv2.resize`` (bilinear) to the letterbox size, grey 114 padding,
BGR to RGB, ``/ 255`` in float32 (or float16).
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from agent.core.letterbox import PAD_VALUE, Letterbox, compute_letterbox
from agent.engine.errors import InputError

_cv2: Any = None
_255 = np.float32(255.0)


def _opencv() -> Any:
    global _cv2
    if _cv2 is None:
        import cv2

        _cv2 = cv2
    return _cv2


def as_bgr(frame: NDArray[Any]) -> NDArray[Any]:
    """Return ``frame`` as ``(H, W, 3)`` uint8 BGR; grey and BGRA frames are converted.

    Raises:
        InputError: not an image array (wrong dtype or number of dimensions, empty).
    """
    if not isinstance(frame, np.ndarray):
        raise InputError("a frame must be a numpy array", expected="ndarray", got=type(frame).__name__)
    if frame.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {frame.dtype}", expected="uint8", got=str(frame.dtype))
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[:, :, :3]
    elif frame.ndim == 3 and frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputError(f"frames must be (H, W, 3) BGR, got shape {frame.shape}", got=frame.shape)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(f"empty frame {frame.shape}", got=frame.shape)
    return frame


def letterbox_into(frame: NDArray[Any], out: NDArray[Any], previous: Optional[Letterbox] = None) -> Letterbox:
    """Letterbox one BGR uint8 frame into ``out`` of shape ``(3, H, W)`` (float32 or float16), RGB, 0..1.

    When ``previous`` has the same geometry, the padding already in ``out`` is left as it is.
    """
    cv2 = _opencv()
    frame = as_bgr(frame)
    _, dst_h, dst_w = out.shape
    lb = compute_letterbox((int(frame.shape[0]), int(frame.shape[1])), (dst_h, dst_w))
    new_h, new_w = lb.resized_hw
    if (new_h, new_w) != frame.shape[:2]:
        resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    else:
        resized = frame
    if previous != lb:
        out.fill(PAD_VALUE / 255.0)
    region = out[:, lb.top : lb.top + new_h, lb.left : lb.left + new_w]
    # cv2.split gives contiguous planes: dividing those is about twice as fast as strided channel views.
    planes = cv2.split(resized)
    for channel in range(3):  # RGB plane c comes from BGR channel 2 - c
        np.divide(planes[2 - channel], _255, out=region[channel], casting="unsafe")
    return lb


class Preprocessor:
    """Reusable input tensor for up to ``max_batch`` frames of one model input size."""

    def __init__(self, imgsz: Tuple[int, int], max_batch: int, dtype: Any = np.float32) -> None:
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.max_batch = int(max_batch)
        self.buffer = np.empty((self.max_batch, 3, *self.imgsz), dtype=dtype)
        self._last: List[Optional[Letterbox]] = [None] * self.max_batch

    def __call__(self, frames: Sequence[NDArray[Any]]) -> Tuple[NDArray[Any], List[Letterbox]]:
        """Fill the buffer with ``frames``; returns the ``(n, 3, H, W)`` view and each frame's geometry."""
        n = len(frames)
        if not 1 <= n <= self.max_batch:
            raise InputError(
                f"batch of {n} frames; this model takes 1 to {self.max_batch}", expected=self.max_batch, got=n
            )
        boxes: List[Letterbox] = []
        for i, frame in enumerate(frames):
            lb = letterbox_into(frame, self.buffer[i], self._last[i])
            self._last[i] = lb
            boxes.append(lb)
        return self.buffer[:n], boxes
