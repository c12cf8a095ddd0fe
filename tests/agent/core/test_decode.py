"""Decoders of the three output layouts, table-driven on hand-built tensors."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.decode import (
    DecodeError,
    DecodeParams,
    OutputLayout,
    decode_efficient_nms,
    decode_end2end,
    decode_outputs,
    decode_raw,
    detect_layout,
)


def raw_head(boxes_xywh, class_scores, n_total=20):
    """(1, 4 + nc, n_total) with the given candidates first and zero-score padding after."""
    boxes_xywh = np.asarray(boxes_xywh, np.float32)
    class_scores = np.asarray(class_scores, np.float32)
    nc = class_scores.shape[1]
    out = np.zeros((1, 4 + nc, n_total), np.float32)
    out[0, :4, : len(boxes_xywh)] = boxes_xywh.T
    out[0, 4:, : len(boxes_xywh)] = class_scores.T
    return out


def test_raw_best_class_threshold_and_nms():
    pred = raw_head(
        [[50, 50, 20, 20], [51, 51, 20, 20], [150, 150, 10, 10], [10, 10, 4, 4]],
        [[0.9, 0.1], [0.8, 0.2], [0.3, 0.6], [0.25, 0.1]],
    )
    (dets,) = decode_raw(pred, DecodeParams(conf=0.25, iou=0.5))
    assert dets.class_id.tolist() == [0, 1]  # box 1 suppressed by box 0; box 3 is not strictly above 0.25
    np.testing.assert_allclose(dets.confidence, [0.9, 0.6])
    np.testing.assert_allclose(dets.xyxy[0], [40, 40, 60, 60])


@pytest.mark.parametrize(
    ("params", "expected_classes"),
    [
        (DecodeParams(conf=0.1, iou=0.5), [0, 1]),
        (DecodeParams(conf=0.1, iou=0.5, classes=(1,)), [1]),
        (DecodeParams(conf=0.1, iou=0.5, max_det=1), [0]),
        (DecodeParams(conf=0.95, iou=0.5), []),
    ],
)
def test_raw_filters(params, expected_classes):
    pred = raw_head([[50, 50, 20, 20], [150, 150, 10, 10]], [[0.9, 0.1], [0.3, 0.6]])
    (dets,) = decode_raw(pred, params)
    assert dets.class_id.tolist() == expected_classes


def test_raw_batch_and_max_nms():
    pred = np.concatenate([raw_head([[50, 50, 20, 20]], [[0.9]]), raw_head([], np.zeros((0, 1)))])
    a, b = decode_raw(pred, DecodeParams(max_nms=1))
    assert len(a) == 1 and len(b) == 0


def test_end2end():
    rows = np.array([[[1, 2, 3, 4, 0.9, 2], [5, 6, 7, 8, 0.2, 0], [9, 9, 9, 9, 0.5, 1]]], np.float32)
    (dets,) = decode_end2end(rows, DecodeParams(conf=0.25))
    assert dets.class_id.tolist() == [2, 1]
    np.testing.assert_allclose(dets.xyxy[0], [1, 2, 3, 4])
    (only,) = decode_end2end(rows, DecodeParams(conf=0.25, classes=(1,)))
    assert only.class_id.tolist() == [1]


def test_efficient_nms_respects_num_dets():
    num = np.array([[2]], np.int32)
    boxes = np.array([[[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 1, 1]]], np.float32)
    scores = np.array([[0.9, 0.5, 0.99]], np.float32)  # the third row is padding beyond num_dets
    classes = np.array([[3, 1, 0]], np.int32)
    (dets,) = decode_efficient_nms(num, boxes, scores, classes, DecodeParams(conf=0.25))
    assert dets.class_id.tolist() == [3, 1]
    by_name = decode_outputs(
        OutputLayout.EFFICIENT_NMS,
        [classes, scores, boxes, num],
        DecodeParams(conf=0.25),
        ["det_classes", "det_scores", "det_boxes", "num_dets"],
    )
    assert by_name[0].class_id.tolist() == [3, 1]


@pytest.mark.parametrize(
    ("names", "dims", "nc", "end2end", "layout"),
    [
        (["output0"], [(1, 84, 8400)], 80, False, OutputLayout.RAW),
        (["output0"], [("batch", 10, "anchors")], 6, False, OutputLayout.RAW),
        (["output0"], [(1, 300, 6)], 80, False, OutputLayout.END2END),
        (["output0"], [(1, 300, 6)], 2, True, OutputLayout.END2END),
        (
            ["num_dets", "det_boxes", "det_scores", "det_classes"],
            [(1, 1), (1, 100, 4), (1, 100), (1, 100)],
            80,
            False,
            OutputLayout.EFFICIENT_NMS,
        ),
    ],
)
def test_detect_layout(names, dims, nc, end2end, layout):
    assert detect_layout(names, dims, nc, end2end) is layout


@pytest.mark.parametrize(
    ("dims", "nc", "message"),
    [([(1, 84, 8400)], 6, "metadata names 6 classes"), ([(1, 84)], 80, "3-D"), ([], 2, "no outputs")],
)
def test_detect_layout_errors(dims, nc, message):
    with pytest.raises(DecodeError, match=message):
        detect_layout(["o"] * len(dims), dims, nc)


@pytest.mark.parametrize("kwargs", [{"conf": 1.5}, {"iou": -0.1}, {"max_det": 0}])
def test_params_validation(kwargs):
    with pytest.raises(ValueError):
        DecodeParams(**kwargs)
