"""mAP50 and mAP50-95 computed by Ultralytics' own code, fed with any detector's boxes.

The gate scores the artefact that ships (an INT8 ONNX model run through the agent's engine), so the boxes
come from us; the matching (``DetectionValidator``'s: each ground truth claimed once per IoU threshold, by
detections in descending confidence) and the average precision (``DetMetrics`` → ``ap_per_class``, COCO
101-point interpolation) are Ultralytics', the code `yolo val` runs. One implementation, kept by its
maintainers: our figures and theirs differ only by the detections, never by the arithmetic.

Shapes: ``N`` detections, ``M`` ground-truth boxes; boxes ``(x1, y1, x2, y2)`` in pixels.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class ScoreResult:
    """Scores over every image added. ``per_class``: class id → (mAP50, mAP50-95), classes with ground truth;
    ``pr_curves``: class id → {recall, precision} at IoU 0.5 (Ultralytics' 1,000-point curve)."""

    map50: float
    map50_95: float
    per_class: Mapping[int, Sequence[float]]
    gt_counts: Mapping[int, int]
    pr_curves: Mapping[int, Mapping[str, List[float]]]


class DetectionScorer:
    """Accumulate per-image detections and ground truth, then :meth:`compute`."""

    def __init__(self, names: Mapping[int, str]) -> None:
        import torch  # noqa: PLC0415 (torch: trainer extra only, seconds to import)
        from ultralytics.models.yolo.detect import DetectionValidator  # noqa: PLC0415 (Ultralytics (torch): trainer extra only, seconds to import)
        from ultralytics.utils.metrics import DetMetrics  # noqa: PLC0415 (Ultralytics (torch): trainer extra only, seconds to import)

        self._torch = torch
        self.names = dict(names)
        self._scratch = tempfile.TemporaryDirectory(prefix="scorer-")
        # only its matcher is used (no data loader, no model); save_dir keeps it from making runs/ folders
        self._validator = DetectionValidator(save_dir=Path(self._scratch.name), args={"plots": False})
        self._metrics = DetMetrics(names=self.names)
        self._images = 0

    def add(
        self,
        pred_xyxy: np.ndarray,
        pred_conf: np.ndarray,
        pred_cls: np.ndarray,
        gt_xyxy: np.ndarray,
        gt_cls: np.ndarray,
    ) -> None:
        """One image: detections ``(N, 4)``, ``(N,)``, ``(N,)`` and ground truth ``(M, 4)``, ``(M,)``."""
        torch = self._torch
        conf = np.asarray(pred_conf, np.float32).reshape(-1)
        order = np.argsort(-conf, kind="stable")  # the matcher expects descending confidence
        boxes = np.asarray(pred_xyxy, np.float32).reshape(-1, 4)[order]
        classes = np.asarray(pred_cls).reshape(-1)[order].astype(np.float32)
        gt_boxes = np.asarray(gt_xyxy, np.float32).reshape(-1, 4)
        gt_classes = np.asarray(gt_cls).reshape(-1).astype(np.float32)
        preds = {
            "bboxes": torch.from_numpy(boxes),
            "cls": torch.from_numpy(classes),
            "conf": torch.from_numpy(conf[order]),
        }
        batch = {"bboxes": torch.from_numpy(gt_boxes), "cls": torch.from_numpy(gt_classes)}
        tp = self._validator._process_batch(preds, batch)["tp"]
        self._metrics.update_stats(
            {
                "tp": tp,
                "conf": conf[order],
                "pred_cls": classes,
                "target_cls": gt_classes,
                "target_img": np.unique(gt_classes),
                "im_name": str(self._images),
            }
        )
        self._images += 1

    def compute(self) -> ScoreResult:
        if not self._images:
            raise ValueError("no images were scored")
        self._metrics.process(save_dir=Path(self._scratch.name), plot=False)
        box = self._metrics.box
        present = [int(c) for c in np.unique(np.concatenate(self._metrics.stats["target_cls"]).astype(int))]
        index = {int(c): i for i, c in enumerate(box.ap_class_index)}
        per_class: Dict[int, Sequence[float]] = {}
        curves: Dict[int, Mapping[str, List[float]]] = {}
        recall_grid = np.asarray(box.px if hasattr(box, "px") else np.linspace(0, 1, 1000))
        for c in present:
            if c in index:
                row = box.all_ap[index[c]]
                per_class[c] = (float(row[0]), float(row.mean()))
                precision = (
                    np.asarray(box.prec_values)[index[c]] if len(box.prec_values) else np.zeros_like(recall_grid)
                )
                step = max(1, len(recall_grid) // 100)
                curves[c] = {"recall": recall_grid[::step].tolist(), "precision": precision[::step].tolist()}
            else:
                per_class[c] = (0.0, 0.0)
                curves[c] = {"recall": [0.0], "precision": [0.0]}
        counts = np.bincount(np.concatenate(self._metrics.stats["target_cls"]).astype(int), minlength=len(self.names))
        # the means are Ultralytics' own (over the classes the holdout contains), as `yolo val` prints them
        return ScoreResult(
            map50=float(box.map50),
            map50_95=float(box.map),
            per_class=per_class,
            gt_counts={c: int(counts[c]) for c in present},
            pr_curves=curves,
        )

    def close(self) -> None:
        self._scratch.cleanup()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self._scratch.cleanup()
        except Exception:
            pass
