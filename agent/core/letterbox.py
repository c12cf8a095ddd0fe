"""Letterbox geometry: how a frame is fitted into the model's input, and how boxes go back.

The arithmetic matches Ultralytics' ``LetterBox`` (``auto=False``, ``center=True``) and ``scale_boxes``
exactly, rounding included, so that our boxes and Ultralytics' agree to the pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np
from numpy.typing import NDArray

PAD_VALUE = 114
"""Grey used for the padding, as in Ultralytics training and prediction."""


@dataclass(frozen=True)
class Letterbox:
    """Where a ``src`` frame lands inside a ``dst`` model input.

    Attributes:
        src_hw: ``(height, width)`` of the original frame.
        dst_hw: ``(height, width)`` of the model input.
        resized_hw: ``(height, width)`` of the frame after resizing, before padding.
        top, left: padding above and left of the resized frame (bottom/right take the rest).
        gain_y, gain_x: ``resized / src`` per axis (equal up to rounding of the resized size).
    """

    src_hw: Tuple[int, int]
    dst_hw: Tuple[int, int]
    resized_hw: Tuple[int, int]
    top: int
    left: int
    gain_y: float
    gain_x: float

    @property
    def bottom(self) -> int:
        return self.dst_hw[0] - self.resized_hw[0] - self.top

    @property
    def right(self) -> int:
        return self.dst_hw[1] - self.resized_hw[1] - self.left


def _round_half_even(x: float) -> int:
    # Python's round() is what Ultralytics uses (banker's rounding); keep it explicit.
    return int(round(x))


def compute_letterbox(src_hw: Tuple[int, int], dst_hw: Tuple[int, int], scaleup: bool = True) -> Letterbox:
    """Geometry of fitting a ``src_hw`` frame into ``dst_hw``, aspect ratio kept, padding centred.

    Raises:
        ValueError: a side is not positive.
    """
    sh, sw = int(src_hw[0]), int(src_hw[1])
    dh, dw = int(dst_hw[0]), int(dst_hw[1])
    if min(sh, sw, dh, dw) <= 0:
        raise ValueError(f"letterbox needs positive sizes, got src {src_hw} dst {dst_hw}")
    r = min(dh / sh, dw / sw)
    if not scaleup:
        r = min(r, 1.0)
    new_w = max(_round_half_even(sw * r), 1)
    new_h = max(_round_half_even(sh * r), 1)
    pad_w = (dw - new_w) / 2
    pad_h = (dh - new_h) / 2
    top = _round_half_even(pad_h - 0.1)
    left = _round_half_even(pad_w - 0.1)
    return Letterbox(
        src_hw=(sh, sw),
        dst_hw=(dh, dw),
        resized_hw=(new_h, new_w),
        top=top,
        left=left,
        gain_y=new_h / sh,
        gain_x=new_w / sw,
    )


def boxes_to_source(xyxy: NDArray[Any], lb: Letterbox) -> NDArray[Any]:
    """Map ``(N, 4)`` xyxy boxes from model-input pixels back to the original frame, clipped to it.

    Same arithmetic as Ultralytics ``scale_boxes(..., padding=True)`` followed by ``clip_boxes``.
    Returns a new float32 array.
    """
    out = np.array(xyxy, dtype=np.float32, copy=True).reshape(-1, 4)
    out[:, [0, 2]] -= lb.left
    out[:, [1, 3]] -= lb.top
    out[:, [0, 2]] /= lb.gain_x
    out[:, [1, 3]] /= lb.gain_y
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, lb.src_hw[1])
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, lb.src_hw[0])
    return out
