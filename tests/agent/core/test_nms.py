"""IoU and class-aware NMS, table-driven, plus a randomised comparison with a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.nms import box_iou, nms, xywh_to_xyxy


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [10, 10, 20, 20], 0.0),
        ([0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # degenerate boxes never divide by zero
    ],
)
def test_box_iou(a, b, iou):
    assert box_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(iou, abs=1e-6)


def test_box_iou_shape():
    assert box_iou(np.zeros((3, 4)), np.zeros((5, 4))).shape == (3, 5)


def test_xywh_to_xyxy():
    np.testing.assert_allclose(xywh_to_xyxy(np.array([[10.0, 20.0, 4.0, 6.0]])), [[8, 17, 12, 23]])


@pytest.mark.parametrize(
    ("boxes", "scores", "classes", "iou", "expected"),
    [
        # overlapping same class: the lower score goes
        ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.9, 0.8], [0, 0], 0.5, [0]),
        # overlapping different classes: both stay (class-aware)
        ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.9, 0.8], [0, 1], 0.5, [0, 1]),
        # below the threshold: both stay, ordered by score
        ([[0, 0, 10, 10], [8, 8, 18, 18]], [0.3, 0.8], [0, 0], 0.5, [1, 0]),
        # IoU exactly at the threshold is kept (suppression needs IoU > threshold, as torchvision)
        ([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], [0, 0], 50 / 150, [0, 1]),
        ([], [], [], 0.5, []),
    ],
)
def test_nms_table(boxes, scores, classes, iou, expected):
    keep = nms(
        np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), iou, np.array(classes, np.int64)
    )
    assert keep.tolist() == expected


def test_nms_agnostic_and_max_det():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.5, None).tolist() == [0, 2]
    assert nms(boxes, scores, 0.5, np.array([0, 1, 0]), max_det=2).tolist() == [0, 1]


def _reference_nms(boxes, scores, iou_thr, classes):
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(classes[i] != classes[k] or box_iou(boxes[i : i + 1], boxes[k : k + 1])[0, 0] <= iou_thr for k in keep):
            keep.append(i)
    return keep


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40), st.integers(0, 2**31 - 1), st.floats(0.1, 0.9))
def test_nms_matches_reference(n, seed, iou_thr):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(1, 40, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / max(n, 1)  # distinct scores: order is unambiguous
    classes = rng.integers(0, 3, n)
    assert nms(boxes, scores, iou_thr, classes).tolist() == _reference_nms(boxes, scores, iou_thr, classes)
