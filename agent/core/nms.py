"""Box geometry and non-maximum suppression in numpy (no torch, no OpenCV)."""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
from numpy.typing import NDArray


def box_area(xyxy: NDArray[Any]) -> NDArray[Any]:
    """Areas of ``(N, 4)`` xyxy boxes, shape ``(N,)``; degenerate boxes have area 0."""
    area: NDArray[Any] = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    return area


def box_iou(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    """Pairwise IoU of ``a`` ``(N, 4)`` and ``b`` ``(M, 4)`` xyxy boxes, shape ``(N, M)``."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    out: NDArray[Any] = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
    return out


def xywh_to_xyxy(xywh: NDArray[Any]) -> NDArray[Any]:
    """Centre-size boxes ``(..., 4)`` to corner boxes ``(..., 4)``."""
    out = np.empty_like(xywh)
    half_w = xywh[..., 2] / 2
    half_h = xywh[..., 3] / 2
    out[..., 0] = xywh[..., 0] - half_w
    out[..., 1] = xywh[..., 1] - half_h
    out[..., 2] = xywh[..., 0] + half_w
    out[..., 3] = xywh[..., 1] + half_h
    return out


# Boxes of different classes are moved this far apart before a single NMS pass, so they never overlap:
# the same trick as torchvision's batched_nms / Ultralytics' ``max_wh`` offset.
_CLASS_OFFSET = 7680.0


def nms(
    xyxy: NDArray[Any],
    scores: NDArray[Any],
    iou_threshold: float,
    class_id: Optional[NDArray[Any]] = None,
    max_det: int = 300,
) -> NDArray[Any]:
    """Greedy NMS; class-aware when ``class_id`` is given.

    Args:
        xyxy: ``(N, 4)`` boxes.
        scores: ``(N,)`` scores.
        iou_threshold: a box is suppressed when its IoU with a kept, higher-scoring box is above this.
        class_id: ``(N,)`` class ids; boxes of different classes never suppress each other.
        max_det: keep at most this many.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by descending score (ties keep input order).
    """
    n = len(xyxy)
    if n == 0 or max_det <= 0:
        return np.zeros((0,), np.int64)
    boxes = np.asarray(xyxy, np.float32)
    if class_id is not None:
        boxes = boxes + (np.asarray(class_id, np.float32) * _CLASS_OFFSET)[:, None]
    order = np.argsort(-np.asarray(scores), kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: List[int] = []
    while order.size and len(keep) < max_det:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)
