"""The Detector on the shipped demo model: real ONNX Runtime sessions, synthetic frames with known boxes."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.decode import DecodeParams
from agent.core.nms import box_iou
from agent.engine import Detector, InputError, ModelFileError, ModelMetadataError, OnnxRuntimeConfig
from agent.synthetic import CLASS_NAMES, render_frame
from tests.agent.onnx_builder import DEFAULT_METADATA, model_bytes


@pytest.fixture(scope="module")
def detector(demo_model_path):
    det = Detector.open(demo_model_path, OnnxRuntimeConfig(intra_op_threads=1))
    yield det
    det.close()


def test_metadata_of_the_demo_model(detector):
    assert detector.names == dict(enumerate(CLASS_NAMES))
    assert detector.model.layout.value == "raw"
    assert len(detector.model.sha256) == 64
    assert detector.describe()["providers"] == ["CPUExecutionProvider"]


@pytest.mark.parametrize("size", [(256, 256), (720, 1280), (600, 400)])
def test_finds_rendered_parts_in_frame_pixels(detector, size):
    """Boxes come back in the frame's own pixels for any aspect ratio: most ground-truth boxes are found."""
    hits = total = 0
    for index in range(6):
        frame = render_frame("factory", 4242, index, size)
        dets = detector.detect([frame.image], DecodeParams(conf=0.25))[0]
        assert np.all(dets.xyxy[:, [0, 2]] <= size[1]) and np.all(dets.xyxy[:, [1, 3]] <= size[0])
        if len(frame.boxes) == 0:
            continue
        iou = box_iou(frame.boxes, dets.xyxy) if len(dets) else np.zeros((len(frame.boxes), 1))
        same = frame.class_ids[:, None] == (dets.class_id[None, :] if len(dets) else -1)
        hits += int(((iou > 0.5) & same).any(axis=1).sum())
        total += len(frame.boxes)
    assert total > 0
    assert hits / total > 0.8, f"only {hits}/{total} rendered parts found"


def test_static_batch_model_refuses_a_larger_batch(detector):
    """The demo model has a static batch of 1 (parity with Ultralytics needs the square letterbox)."""
    frames = [render_frame("factory", 7, i, (256, 256)).image for i in range(2)]
    assert detector.max_batch == 1
    with pytest.raises(InputError, match="batch of 2"):
        detector.detect(frames)


def test_preprocessor_batch_slots_are_independent():
    """Each batch slot keeps its own letterbox geometry: a frame of another shape never leaks padding."""
    from agent.engine.preprocess import Preprocessor, letterbox_into

    pre = Preprocessor((64, 64), max_batch=2)
    wide = render_frame("factory", 1, 0, (32, 64)).image
    tall = render_frame("factory", 1, 1, (64, 32)).image
    batch, boxes = pre([wide, tall])
    assert batch.shape == (2, 3, 64, 64)
    assert (boxes[0].top, boxes[0].left, boxes[1].top, boxes[1].left) == (16, 0, 0, 16)
    for frame, slot in zip([wide, tall], batch):
        single = np.empty((3, 64, 64), np.float32)
        letterbox_into(frame, single)
        np.testing.assert_array_equal(slot, single)
    batch2, _ = pre([tall, wide])  # geometry swaps between slots: padding must be repainted
    single = np.empty((3, 64, 64), np.float32)
    letterbox_into(tall, single)
    np.testing.assert_array_equal(batch2[0], single)


def test_prepared_frames_give_the_same_result(detector):
    frame = render_frame("factory", 9, 0, (480, 640)).image
    direct = detector.detect([frame])[0]
    prepared = detector.detect_prepared([detector.prepare(frame)])[0]
    np.testing.assert_array_equal(direct.xyxy, prepared.xyxy)
    assert detector.last_times.inference_ms > 0


def test_grey_and_bgra_frames_are_accepted(detector):
    frame = render_frame("factory", 11, 0, (256, 256)).image
    grey = frame.mean(axis=2).astype(np.uint8)
    bgra = np.concatenate([frame, np.full((*frame.shape[:2], 1), 255, np.uint8)], axis=2)
    assert isinstance(detector.detect([grey])[0].xyxy, np.ndarray)
    np.testing.assert_array_equal(detector.detect([bgra])[0].xyxy, detector.detect([frame])[0].xyxy)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([np.zeros((10, 10, 3), np.float32)], "uint8"),
        ([np.zeros((10, 10, 5), np.uint8)], r"\(H, W, 3\)"),
        ([np.zeros((0, 10, 3), np.uint8)], "empty frame"),
        ([], "batch of 0"),
        (["not an array"], "numpy array"),
    ],
)
def test_bad_frames_raise_input_error(detector, frames, message):
    with pytest.raises(InputError, match=message):
        detector.detect(frames)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        Detector.open(tmp_path / "nope.onnx")


def test_corrupt_model_file(tmp_path, demo_model_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError, match="not a valid ONNX model"):
        Detector.open(bad)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(demo_model_path.read_bytes()[:-1000])
    with pytest.raises(ModelFileError):
        Detector.open(truncated)


def test_directory_as_model(tmp_path):
    with pytest.raises(ModelFileError, match="not a file"):
        Detector.open(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"metadata": {}}, ModelMetadataError, "no 'names' metadata"),
        (
            {"inputs": [("images", (1, 1, 64, 64))], "metadata": DEFAULT_METADATA},
            ModelMetadataError,
            "3 channels",
        ),
        ({"inputs": [("images", (1, 3, 64))], "metadata": DEFAULT_METADATA}, ModelMetadataError, "4-D"),
        (
            {"outputs": [("output0", (1, 85, 84))], "metadata": DEFAULT_METADATA},
            ModelMetadataError,
            "2 classes",
        ),
        # passes our checks, then ONNX Runtime refuses the node-less graph: still a clean ModelFileError
        ({"metadata": DEFAULT_METADATA}, ModelFileError, "ONNX Runtime cannot load"),
    ],
)
def test_inconsistent_models_are_refused(tmp_path, kwargs, exc, message):
    path = tmp_path / "model.onnx"
    path.write_bytes(model_bytes(**kwargs))
    with pytest.raises(exc, match=message):
        Detector.open(path)
