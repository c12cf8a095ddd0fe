"""A tiny end-to-end training run on CPU: render -> train 1 epoch -> export FP32 + INT8 -> the agent loads both.

It proves the wiring (offline Ultralytics, our data set format, export metadata, quantisation with the head
kept in float), not accuracy: one epoch on a few dozen images detects little.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.engine import Detector, OnnxRuntimeConfig
from agent.synthetic import CLASS_NAMES, render_frame, write_yolo_dataset

pytestmark = [pytest.mark.trainer]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from trainer.export import export_all
    from trainer.train import train

    root = tmp_path_factory.mktemp("e2e")
    data = write_yolo_dataset(root / "data", "factory", 5, 32, size=(128, 128), val_fraction=0.25)
    summary = train(data=data, model="tiny", out=root / "run", epochs=1, imgsz=128, batch=8, workers=0)
    # A model already next to the weights (as models/demo/demo.onnx beside demo.pt) must survive an export.
    (root / "run" / "weights" / "last.onnx").write_bytes(b"shipped model")
    report = export_all(
        weights=root / "run" / "weights" / "last.pt",
        out_dir=root / "export",
        imgsz=128,
        version="0.0.1-test",
        calib_dirs=[root / "data" / "images" / "train"],
        calib_count=8,
        holdout=None,
        name="tiny",
        training_data="factory seed 5",
    )
    return root, summary, report


def test_training_summary(tiny_run):
    _, summary, _ = tiny_run
    assert summary["epochs"] == 1 and summary["train_images"] == 24
    assert summary["device"] == "cpu" and summary["amp_active"] is False  # AMP is a GPU feature
    assert summary["images_per_second"] > 0


def test_exported_variants_load_and_run_in_the_agent(tiny_run):
    root, _, report = tiny_run
    frame = render_frame("factory", 5, 0, (128, 128)).image
    for key in ("onnx_fp32", "onnx_int8"):
        det = Detector.open(report["files"][key], OnnxRuntimeConfig(intra_op_threads=1))
        try:
            assert det.names == dict(enumerate(CLASS_NAMES))
            assert det.imgsz == (128, 128)
            assert det.model.metadata.extra["edge_model_version"] == "0.0.1-test"
            out = det.detect([frame])[0]
            assert out.xyxy.dtype == np.float32
        finally:
            det.close()
    assert (root / "run" / "weights" / "last.onnx").read_bytes() == b"shipped model"
    assert len(list((root / "export" / "calibration").iterdir())) == 8
    import tarfile

    with tarfile.open(report["files"]["calibration_images"]) as tar:
        assert len(tar.getnames()) == 8  # the archive the release format ships
    saved = json.loads((root / "export" / "export_report.json").read_text())
    assert saved["files"]["trt_calibration_cache"] is None  # no TensorRT here: said so, not faked
    assert "TensorRT is not importable" in saved["tensorrt_cache_note"]
