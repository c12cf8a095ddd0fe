"""Our evaluation against Ultralytics' own ``val`` on the same model and data, and the regression gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.metrics import DetectionMetrics, average_precision, match_predictions

pytestmark = pytest.mark.trainer


def test_match_predictions_one_to_one():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [20, 20, 30, 30]], np.float32)
    correct = match_predictions(pred, np.array([0, 0, 1, 0]), gt, np.array([0, 1]))
    # gt0 matched once (by the exact box), gt1 only by the class-1 prediction
    assert correct[:, 0].tolist() == [True, False, True, False]


@pytest.mark.parametrize(
    ("recall", "precision", "ap"),
    [([1.0], [1.0], 0.995), ([0.5], [1.0], 0.75), ([0.0], [0.0], 0.0)],  # COCO 101-point interpolation
)
def test_average_precision(recall, precision, ap):
    assert average_precision(np.array(recall), np.array(precision)) == pytest.approx(ap, abs=1e-3)


def test_perfect_predictions_score_one():
    m = DetectionMetrics(num_classes=2)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    m.add(boxes, np.array([0.9, 0.8]), np.array([0, 1]), boxes, np.array([0, 1]))
    result = m.compute()
    # 0.995, not 1: the interpolated curve drops to 0 right at recall 1, as in COCO and Ultralytics
    assert result.map50 == pytest.approx(0.995, abs=1e-3) and result.map50_95 == pytest.approx(0.995, abs=1e-3)


@pytest.fixture(scope="module")
def holdout(tmp_path_factory):
    from agent.synthetic import write_yolo_dataset

    return write_yolo_dataset(tmp_path_factory.mktemp("holdout"), "factory", 777, 48, size=(256, 256))


def test_matches_ultralytics_val(holdout, demo_model_path):
    from trainer.evaluate import evaluate
    from trainer.offline import offline_environment

    ours = evaluate(demo_model_path, holdout, "val", progress=False)
    with offline_environment(strict=False):
        from ultralytics import YOLO

        ref = YOLO(str(demo_model_path), task="detect").val(
            data=str(holdout),
            imgsz=256,
            batch=1,
            conf=0.001,
            iou=0.7,
            device="cpu",
            plots=False,
            verbose=False,
            project=str(holdout.parent / "val"),
            name="run",
        )
    assert ours["map50_95"] == pytest.approx(ref.box.map, abs=0.01)
    assert ours["map50"] == pytest.approx(ref.box.map50, abs=0.01)
    assert ours["map50_95"] > 0.3, "the demo model must actually detect on its own domain"


def test_gate_exit_codes_and_report(holdout, demo_model_path, demo_int8_model_path, tmp_path):
    from trainer.cli import main

    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--model",
            str(demo_int8_model_path),
            "--data",
            str(holdout),
            "--baseline",
            str(demo_model_path),
            "--max-regression",
            "0.05",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert {Path(p).name for p in report["plots"]} == {"pr_curve.png", "per_class.png"}
    # An impossible threshold turns the same comparison into a failing gate.
    code = main(
        [
            "evaluate",
            "--model",
            str(demo_int8_model_path),
            "--data",
            str(holdout),
            "--baseline",
            str(demo_model_path),
            "--max-regression",
            "-1",
            "--out",
            str(out),
        ]
    )
    assert code == 1


def test_bad_inputs(tmp_path, demo_model_path):
    from trainer.cli import main

    assert main(["evaluate", "--model", str(tmp_path / "x.onnx"), "--data", str(tmp_path / "d.yaml")]) == 2
    assert main(["evaluate", "--model", str(demo_model_path), "--data", str(tmp_path / "d.yaml")]) == 2
