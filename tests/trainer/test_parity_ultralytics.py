"""Parity with Ultralytics: its own predictor and our engine on the same ONNX model and frames.

Same detections required: same classes, boxes within 1 px, confidences within 1e-3. Several frame sizes
and aspect ratios, because letterbox rounding is where implementations drift apart.
"""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.decode import DecodeParams
from agent.engine import Detector, OnnxRuntimeConfig
from agent.synthetic import render_frame

pytestmark = pytest.mark.trainer

SIZES = [(256, 256), (1080, 1920), (480, 640), (900, 500), (333, 777)]


@pytest.fixture(scope="module")
def ultralytics_model(demo_model_path):
    from trainer.offline import offline_environment

    with offline_environment(strict=False):
        from ultralytics import YOLO

        return YOLO(str(demo_model_path), task="detect")


@pytest.fixture(scope="module")
def ours(demo_model_path):
    det = Detector.open(demo_model_path, OnnxRuntimeConfig(intra_op_threads=2))
    yield det
    det.close()


def _sorted(xyxy, conf, cls):
    order = np.lexsort((xyxy[:, 1], xyxy[:, 0], cls, -np.round(conf, 3)))
    return xyxy[order], conf[order], cls[order]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("conf", "iou"), [(0.25, 0.7), (0.05, 0.45)])
def test_same_detections_as_ultralytics(ultralytics_model, ours, size, conf, iou):
    compared = 0
    for index in range(4):
        image = render_frame("factory", 31337 + index, index, size).image
        ref = ultralytics_model.predict(image, conf=conf, iou=iou, imgsz=ours.imgsz, verbose=False, device="cpu")[0]
        ref_xyxy = ref.boxes.xyxy.numpy()
        ref_conf = ref.boxes.conf.numpy()
        ref_cls = ref.boxes.cls.numpy().astype(np.int64)
        got = ours.detect([image], DecodeParams(conf=conf, iou=iou))[0]
        assert len(got) == len(ref_xyxy), f"{size} frame {index}: {len(got)} boxes vs Ultralytics {len(ref_xyxy)}"
        a = _sorted(got.xyxy, got.confidence, got.class_id)
        b = _sorted(ref_xyxy, ref_conf, ref_cls)
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_allclose(a[1], b[1], atol=1e-3)
        np.testing.assert_allclose(a[0], b[0], atol=1.0)
        compared += len(got)
    assert compared > 0, "no detections compared: the test would prove nothing"
