"""Decoders for the YOLO output layouts that matter on the edge, plus the NMS that raw heads need.

Layouts (``B`` batch, ``nc`` classes, ``N`` candidate boxes, ``K`` kept boxes):

- ``RAW``: YOLOv8/11 detection head, one output ``(B, 4 + nc, N)``: centre-size boxes in model-input
  pixels, then one sigmoid score per class. Needs confidence filtering and class-aware NMS.
- ``END2END``: NMS-free heads (YOLOv10, YOLO26), one output ``(B, K, 6)``: ``x1 y1 x2 y2 score class``.
- ``EFFICIENT_NMS``: TensorRT's EfficientNMS plugin, four outputs ``num_dets (B, 1)``,
  ``det_boxes (B, K, 4)``, ``det_scores (B, K)``, ``det_classes (B, K)``.

All boxes come out in model-input pixels; :mod:`agent.core.letterbox` maps them back to the frame.
The filtering follows Ultralytics ``non_max_suppression`` (strict ``>`` on confidence, best class per box,
``max_nms`` pre-cut, class offset NMS, ``max_det`` cut) so results match it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import NDArray

from agent.core.detections import Detections
from agent.core.nms import nms, xywh_to_xyxy

Dim = Union[int, str, None]


class DecodeError(ValueError):
    """Model outputs do not match any supported layout, or not the one expected."""


class OutputLayout(enum.Enum):
    RAW = "raw"
    END2END = "end2end"
    EFFICIENT_NMS = "efficient_nms"


@dataclass(frozen=True)
class DecodeParams:
    """Thresholds applied when decoding.

    Attributes:
        conf: keep boxes whose score is strictly above this.
        iou: NMS IoU threshold (raw heads only).
        max_det: at most this many boxes per image.
        classes: keep only these class ids (None: all).
        max_nms: at most this many candidates enter NMS (highest scores first).
        agnostic: class-agnostic NMS.
        multi_label: a box may carry every class scoring above ``conf`` (raw heads; what Ultralytics'
            validator does for mAP). Off for deployment: one label per object.
    """

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: Optional[Tuple[int, ...]] = None
    max_nms: int = 30000
    agnostic: bool = False
    multi_label: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {self.conf}")
        if not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"iou must be in [0, 1], got {self.iou}")
        if self.max_det < 1:
            raise ValueError(f"max_det must be at least 1, got {self.max_det}")


_EFFICIENT_NMS_NAMES = ("num_dets", "det_boxes", "det_scores", "det_classes")


def detect_layout(
    output_names: Sequence[str],
    output_dims: Sequence[Sequence[Dim]],
    num_classes: int,
    end2end: bool = False,
) -> OutputLayout:
    """Recognise the output layout from the graph's outputs.

    Raises:
        DecodeError: no supported layout fits, or a fixed dimension contradicts ``num_classes``.
    """
    if len(output_names) == 4 and set(output_names) == set(_EFFICIENT_NMS_NAMES):
        return OutputLayout.EFFICIENT_NMS
    if len(output_dims) < 1:
        raise DecodeError("the model has no outputs")
    dims = list(output_dims[0])
    if len(dims) != 3:
        raise DecodeError(f"detection output must be 3-D, got {len(dims)}-D {dims}")
    channels, last = dims[1], dims[2]
    if end2end or (last == 6 and channels != 4 + num_classes):
        if isinstance(last, int) and last != 6:
            raise DecodeError(f"end-to-end output must be (B, K, 6), got {dims}")
        return OutputLayout.END2END
    if isinstance(channels, int) and channels != 4 + num_classes:
        raise DecodeError(
            f"raw head output has {channels} channels but the metadata names {num_classes} classes "
            f"(expected 4 + {num_classes} = {4 + num_classes})"
        )
    return OutputLayout.RAW


def _finish(xyxy: NDArray[Any], conf: NDArray[Any], cls: NDArray[Any]) -> Detections:
    return Detections(np.ascontiguousarray(xyxy, np.float32), conf.astype(np.float32), cls.astype(np.int64))


def decode_raw(pred: NDArray[Any], params: DecodeParams) -> List[Detections]:
    """Decode a raw head ``(B, 4 + nc, N)``: confidence filter, best class, class-aware NMS.

    Returns one :class:`Detections` per image, boxes in model-input pixels, by descending score.
    """
    if pred.ndim != 3 or pred.shape[1] < 5:
        raise DecodeError(f"raw head output must be (B, 4 + nc, N), got {pred.shape}")
    out: List[Detections] = []
    for image_pred in pred:
        class_scores = image_pred[4:]
        best = class_scores.max(axis=0)
        keep = np.flatnonzero(best > params.conf)
        if keep.size == 0:
            out.append(Detections.empty())
            continue
        if params.multi_label and class_scores.shape[0] > 1:
            label_idx, col = np.nonzero(class_scores[:, keep] > params.conf)
            order = np.argsort(col, kind="stable")  # box-major, as Ultralytics' torch.where
            cls, keep = label_idx[order], keep[col[order]]
            conf = class_scores[cls, keep]
        else:
            conf = best[keep]
            cls = class_scores[:, keep].argmax(axis=0)
        if params.classes is not None:
            chosen = np.isin(cls, np.asarray(params.classes))
            keep, conf, cls = keep[chosen], conf[chosen], cls[chosen]
        if keep.size > params.max_nms:
            top = np.argsort(-conf, kind="stable")[: params.max_nms]
            keep, conf, cls = keep[top], conf[top], cls[top]
        xyxy = xywh_to_xyxy(image_pred[:4, keep].T.astype(np.float32))
        kept = nms(xyxy, conf, params.iou, None if params.agnostic else cls, params.max_det)
        out.append(_finish(xyxy[kept], conf[kept], cls[kept]))
    return out


def decode_end2end(pred: NDArray[Any], params: DecodeParams) -> List[Detections]:
    """Decode an NMS-free head ``(B, K, 6)`` of ``x1 y1 x2 y2 score class`` rows."""
    if pred.ndim != 3 or pred.shape[2] < 6:
        raise DecodeError(f"end-to-end output must be (B, K, 6), got {pred.shape}")
    out: List[Detections] = []
    for rows in pred:
        mask = rows[:, 4] > params.conf
        if params.classes is not None:
            mask &= np.isin(rows[:, 5].astype(np.int64), np.asarray(params.classes))
        rows = rows[mask][: params.max_det]
        out.append(_finish(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64)))
    return out


def decode_efficient_nms(
    num_dets: NDArray[Any],
    boxes: NDArray[Any],
    scores: NDArray[Any],
    classes: NDArray[Any],
    params: DecodeParams,
) -> List[Detections]:
    """Decode TensorRT EfficientNMS outputs: ``(B, 1)``, ``(B, K, 4)`` xyxy, ``(B, K)``, ``(B, K)``."""
    batch = boxes.shape[0]
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.shape[:2] != boxes.shape[:2]:
        raise DecodeError(f"EfficientNMS outputs do not fit: boxes {boxes.shape}, scores {scores.shape}")
    counts = np.asarray(num_dets).reshape(batch, -1)[:, 0]
    out: List[Detections] = []
    for b in range(batch):
        n = int(min(max(int(counts[b]), 0), boxes.shape[1]))
        conf = scores[b, :n].astype(np.float32)
        cls = classes[b, :n].astype(np.int64)
        mask = conf > params.conf
        if params.classes is not None:
            mask &= np.isin(cls, np.asarray(params.classes))
        idx = np.flatnonzero(mask)[: params.max_det]
        out.append(_finish(boxes[b, idx], conf[idx], cls[idx]))
    return out


def decode_outputs(
    layout: OutputLayout, outputs: Sequence[NDArray[Any]], params: DecodeParams, output_names: Sequence[str] = ()
) -> List[Detections]:
    """Dispatch to the decoder of ``layout``. For EfficientNMS, ``output_names`` orders the four outputs."""
    if layout is OutputLayout.RAW:
        return decode_raw(np.asarray(outputs[0]), params)
    if layout is OutputLayout.END2END:
        return decode_end2end(np.asarray(outputs[0]), params)
    by_name = dict(zip(output_names, outputs)) if output_names else dict(zip(_EFFICIENT_NMS_NAMES, outputs))
    try:
        parts = [np.asarray(by_name[name]) for name in _EFFICIENT_NMS_NAMES]
    except KeyError as exc:
        raise DecodeError(f"EfficientNMS output {exc.args[0]!r} missing") from exc
    return decode_efficient_nms(parts[0], parts[1], parts[2], parts[3], params)
