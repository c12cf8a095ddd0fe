"""Detection metrics: COCO-style mAP50 and mAP50-95 with the same matching and 101-point interpolation
as Ultralytics' validator, so that our figures and ``yolo val`` agree.

Pure numpy. Shapes: ``N`` predictions, ``M`` ground-truth boxes, ``T`` IoU thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence

import numpy as np

from agent.core.nms import box_iou

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def match_predictions(
    pred_xyxy: np.ndarray,
    pred_cls: np.ndarray,
    gt_xyxy: np.ndarray,
    gt_cls: np.ndarray,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> np.ndarray:
    """Which predictions are true positives at each IoU threshold: ``(N, T)`` bool.

    Each ground-truth box matches at most one prediction of its class and vice versa; pairs are taken by
    descending IoU.
    """
    correct = np.zeros((len(pred_xyxy), len(iou_thresholds)), dtype=bool)
    if len(pred_xyxy) == 0 or len(gt_xyxy) == 0:
        return correct
    iou = box_iou(gt_xyxy, pred_xyxy).astype(np.float64)  # (M, N)
    iou = iou * (gt_cls[:, None] == pred_cls[None, :])
    for t, threshold in enumerate(iou_thresholds):
        gt_idx, pred_idx = np.nonzero(iou >= threshold)
        if not len(gt_idx):
            continue
        order = np.argsort(-iou[gt_idx, pred_idx], kind="stable")
        gt_idx, pred_idx = gt_idx[order], pred_idx[order]
        # Best pair per prediction, then (in prediction order, as Ultralytics does) one pair per ground truth.
        _, first_pred = np.unique(pred_idx, return_index=True)
        gt_idx, pred_idx = gt_idx[first_pred], pred_idx[first_pred]
        _, first_gt = np.unique(gt_idx, return_index=True)
        correct[pred_idx[first_gt], t] = True
    return correct


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, 101-point interpolation (COCO)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


@dataclass
class DetectionMetrics:
    """Accumulate per-image results, then :meth:`compute`."""

    num_classes: int
    _correct: List[np.ndarray] = field(default_factory=list)
    _conf: List[np.ndarray] = field(default_factory=list)
    _pred_cls: List[np.ndarray] = field(default_factory=list)
    _gt_cls: List[np.ndarray] = field(default_factory=list)

    def add(
        self,
        pred_xyxy: np.ndarray,
        pred_conf: np.ndarray,
        pred_cls: np.ndarray,
        gt_xyxy: np.ndarray,
        gt_cls: np.ndarray,
    ) -> None:
        pred_cls = np.asarray(pred_cls, np.int64)
        gt_cls = np.asarray(gt_cls, np.int64)
        self._correct.append(match_predictions(np.asarray(pred_xyxy), pred_cls, np.asarray(gt_xyxy), gt_cls))
        self._conf.append(np.asarray(pred_conf, np.float64))
        self._pred_cls.append(pred_cls)
        self._gt_cls.append(gt_cls)

    def compute(self) -> "MetricsResult":
        correct = np.concatenate(self._correct) if self._correct else np.zeros((0, 10), bool)
        conf = np.concatenate(self._conf) if self._conf else np.zeros(0)
        pred_cls = np.concatenate(self._pred_cls) if self._pred_cls else np.zeros(0, np.int64)
        gt_cls = np.concatenate(self._gt_cls) if self._gt_cls else np.zeros(0, np.int64)
        order = np.argsort(-conf, kind="stable")
        correct, conf, pred_cls = correct[order], conf[order], pred_cls[order]
        ap = np.zeros((self.num_classes, len(IOU_THRESHOLDS)))
        pr_curves: Dict[int, Dict[str, List[float]]] = {}
        present = []
        for c in range(self.num_classes):
            n_gt = int((gt_cls == c).sum())
            mask = pred_cls == c
            if n_gt == 0:
                continue
            present.append(c)
            if not mask.any():
                pr_curves[c] = {"recall": [0.0], "precision": [0.0]}
                continue
            tp = np.cumsum(correct[mask], axis=0)
            fp = np.cumsum(~correct[mask], axis=0)
            recall = tp / (n_gt + 1e-16)
            precision = tp / (tp + fp)
            for t in range(len(IOU_THRESHOLDS)):
                ap[c, t] = average_precision(recall[:, t], precision[:, t])
            pr_curves[c] = {"recall": recall[:, 0].tolist(), "precision": precision[:, 0].tolist()}
        used = ap[present] if present else np.zeros((1, len(IOU_THRESHOLDS)))
        return MetricsResult(
            map50=float(used[:, 0].mean()),
            map50_95=float(used.mean()),
            per_class={c: (float(ap[c, 0]), float(ap[c].mean())) for c in present},
            gt_counts={c: int((gt_cls == c).sum()) for c in present},
            pr_curves=pr_curves,
        )


@dataclass(frozen=True)
class MetricsResult:
    map50: float
    map50_95: float
    per_class: Mapping[int, Sequence[float]]
    gt_counts: Mapping[int, int]
    pr_curves: Mapping[int, Mapping[str, List[float]]]
