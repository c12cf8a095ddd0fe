"""``edge-trainer evaluate``: mAP50 / mAP50-95 of a model on a holdout, and the regression gate.

ONNX models run through the agent's own engine (:class:`agent.engine.Detector`), so the figure is what the
edge box will do; ``.pt`` models run through Ultralytics' predictor. Both are scored by Ultralytics' own
matching and average precision (:mod:`trainer.scoring`). ``--baseline`` evaluates a second model on the same
data and exits 1 when the candidate's mAP50-95 drops by more than ``--max-regression``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import yaml

from agent.engine import DecodeParams, Detector, OnnxRuntimeConfig
from agent.imaging import read_image
from trainer.offline import offline_environment
from trainer.scoring import DetectionScorer, ScoreResult
from trainer.train import _images_of, _names

EVAL_CONF = 0.001  # as Ultralytics val: score the whole precision/recall curve
EVAL_IOU = 0.7


class EvaluateError(Exception):
    """Unusable evaluation inputs."""


@dataclass(frozen=True)
class Sample:
    image: Path
    gt_xyxy: np.ndarray  # (M, 4) pixels
    gt_cls: np.ndarray  # (M,)


def label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def load_samples(data_yaml: Path, split: str) -> Tuple[List[Sample], Dict[int, str]]:
    """Images of ``split`` with their ground-truth boxes in pixels."""
    import cv2  # noqa: PLC0415 (OpenCV: heavy, and the edge install may have its own build)

    if not data_yaml.is_file():
        raise EvaluateError(f"data set file not found: {data_yaml}")
    names = _names(yaml.safe_load(data_yaml.read_text()))
    samples = []
    for image in _images_of(data_yaml, split):
        shape = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
        if shape is None:
            raise EvaluateError(f"unreadable image in the holdout: {image}")
        h, w = shape.shape[:2]
        rows = np.zeros((0, 5), np.float64)
        lp = label_path(image)
        if lp.is_file() and lp.read_text().strip():
            rows = np.loadtxt(lp, ndmin=2)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        samples.append(Sample(image, xyxy.astype(np.float32), rows[:, 0].astype(np.int64)))
    if not samples:
        raise EvaluateError(f"{data_yaml}: split '{split}' has no images")
    return samples, names


Predictor = Callable[[List[Path]], List[Tuple[np.ndarray, np.ndarray, np.ndarray]]]


def onnx_predictor(model: Path, threads: int = 0) -> Tuple[Predictor, Dict[int, str]]:
    detector = Detector.open(model, OnnxRuntimeConfig(intra_op_threads=threads))
    params = DecodeParams(conf=EVAL_CONF, iou=EVAL_IOU, max_det=300, multi_label=True)

    def predict(paths: List[Path]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for path in paths:
            det = detector.detect([read_image(path)], params)[0]
            out.append((det.xyxy, det.confidence, det.class_id))
        return out

    return predict, detector.names


def pt_predictor(model: Path, imgsz: Optional[int]) -> Tuple[Predictor, Dict[int, str]]:
    with offline_environment():
        from ultralytics import YOLO  # noqa: PLC0415 (Ultralytics (torch): trainer extra only, seconds to import)

        yolo = YOLO(str(model), task="detect")

    def predict(paths: List[Path]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        with offline_environment():
            results = yolo.predict(
                [str(p) for p in paths],
                conf=EVAL_CONF,
                iou=EVAL_IOU,
                max_det=300,
                imgsz=imgsz or yolo.overrides.get("imgsz", 640),
                verbose=False,
                device="cpu",
            )
        return [(r.boxes.xyxy.numpy(), r.boxes.conf.numpy(), r.boxes.cls.numpy().astype(np.int64)) for r in results]

    return predict, dict(yolo.names)


def evaluate(
    model: Path, data: Path, split: str = "val", imgsz: Optional[int] = None, threads: int = 0, progress: bool = True
) -> Dict[str, Any]:
    """Score ``model`` on ``data``'s ``split``; returns the JSON-ready report."""
    if not model.is_file():
        raise EvaluateError(f"model not found: {model}")
    samples, names = load_samples(data, split)
    if model.suffix == ".onnx":
        predict, model_names = onnx_predictor(model, threads)
    elif model.suffix == ".pt":
        predict, model_names = pt_predictor(model, imgsz)
    else:
        raise EvaluateError(f"model must be .onnx or .pt, got {model.name}")
    if {int(k): v for k, v in model_names.items()} != names:
        raise EvaluateError(f"model classes {model_names} differ from the data set's {names}")
    metrics = DetectionScorer(names)
    started = time.perf_counter()
    batch = 16
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        for sample, (xyxy, conf, cls) in zip(chunk, predict([s.image for s in chunk])):
            metrics.add(xyxy, conf, cls, sample.gt_xyxy, sample.gt_cls)
        done = min(start + batch, len(samples))
        if progress and (done == len(samples) or (done // batch) % 8 == 0):
            print(f"evaluate {model.name}: {done}/{len(samples)} images", file=sys.stderr)
    elapsed = time.perf_counter() - started
    result = metrics.compute()
    metrics.close()
    return report_dict(model, data, split, names, result, len(samples), elapsed)


def report_dict(
    model: Path, data: Path, split: str, names: Dict[int, str], result: ScoreResult, images: int, seconds: float
) -> Dict[str, Any]:
    return {
        "model": str(model),
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "data": str(data),
        "split": split,
        "images": images,
        "seconds": round(seconds, 2),
        "map50": round(result.map50, 5),
        "map50_95": round(result.map50_95, 5),
        "per_class": {
            names[c]: {"map50": round(v[0], 5), "map50_95": round(v[1], 5), "instances": result.gt_counts[c]}
            for c, v in result.per_class.items()
        },
        "pr_curves": {names[c]: curve for c, curve in result.pr_curves.items()},
    }


def write_plots(report: Dict[str, Any], out_dir: Path, baseline: Optional[Dict[str, Any]] = None) -> List[Path]:
    """PR curves (IoU 0.5) per class and per-class mAP bars; returns the files written."""
    import matplotlib  # noqa: PLC0415 (matplotlib: trainer extra only, slow to import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (matplotlib: trainer extra only, slow to import)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, curve in report["pr_curves"].items():
        ap = report["per_class"][name]["map50"]
        ax.plot(curve["recall"], curve["precision"], label=f"{name} (AP50 {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"PR curves at IoU 0.5 — {Path(report['model']).name}: mAP50 {report['map50']:.3f}")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    files.append(out_dir / "pr_curve.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    classes = list(report["per_class"])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(classes)), 4.5))
    x = np.arange(len(classes))
    width = 0.38 if baseline else 0.6
    cand = [report["per_class"][c]["map50_95"] for c in classes]
    ax.bar(x - (width / 2 if baseline else 0), cand, width, label=f"candidate {Path(report['model']).name}")
    if baseline:
        base = [baseline["per_class"].get(c, {}).get("map50_95", 0.0) for c in classes]
        ax.bar(x + width / 2, base, width, label=f"baseline {Path(baseline['model']).name}")
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=20)
    ax.set_ylabel("mAP50-95")
    ax.set_ylim(0, 1)
    ax.set_title(f"per-class mAP50-95 (overall {report['map50_95']:.3f})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    files.append(out_dir / "per_class.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files
