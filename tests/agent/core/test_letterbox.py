"""Letterbox geometry against hand-computed Ultralytics values, and the round trip of boxes."""

from __future__ import annotations

import numpy as np
import pytest

from agent.core.letterbox import boxes_to_source, compute_letterbox

# (src_hw, dst_hw, resized_hw, top, left) — worked by hand with Ultralytics' LetterBox formulas.
CASES = [
    ((1080, 1920), (640, 640), (360, 640), 140, 0),
    ((480, 640), (640, 640), (480, 640), 80, 0),
    ((900, 500), (640, 640), (640, 356), 0, 142),
    ((256, 256), (256, 256), (256, 256), 0, 0),
    ((720, 1280), (256, 256), (144, 256), 56, 0),
    ((1, 1000), (640, 640), (1, 640), 319, 0),  # thin frames keep at least one pixel
    ((501, 640), (640, 640), (501, 640), 69, 0),  # odd padding: top rounds down, bottom takes the rest
    ((333, 777), (320, 640), (274, 640), 23, 0),
]


@pytest.mark.parametrize(("src", "dst", "resized", "top", "left"), CASES)
def test_geometry_matches_ultralytics(src, dst, resized, top, left):
    lb = compute_letterbox(src, dst)
    assert lb.resized_hw == resized
    assert (lb.top, lb.left) == (top, left)
    assert lb.top + lb.resized_hw[0] + lb.bottom == dst[0]
    assert lb.left + lb.resized_hw[1] + lb.right == dst[1]


@pytest.mark.parametrize(("src", "dst", "resized", "top", "left"), CASES[:5])
def test_boxes_round_trip(src, dst, resized, top, left):
    lb = compute_letterbox(src, dst)
    h, w = src
    boxes = np.array([[0, 0, w, h], [w * 0.25, h * 0.25, w * 0.5, h * 0.75]], np.float32)
    forward = boxes.copy()
    forward[:, [0, 2]] = forward[:, [0, 2]] * lb.gain_x + lb.left
    forward[:, [1, 3]] = forward[:, [1, 3]] * lb.gain_y + lb.top
    np.testing.assert_allclose(boxes_to_source(forward, lb), boxes, atol=1e-3)


def test_boxes_are_clipped_to_the_frame():
    lb = compute_letterbox((480, 640), (640, 640))
    out = boxes_to_source(np.array([[-50, 0, 700, 700]], np.float32), lb)
    np.testing.assert_allclose(out, [[0, 0, 640, 480]])


def test_no_scaleup_keeps_small_frames_small():
    lb = compute_letterbox((100, 200), (640, 640), scaleup=False)
    assert lb.resized_hw == (100, 200)


@pytest.mark.parametrize("bad", [((0, 10), (640, 640)), ((10, 10), (0, 640)), ((-1, 5), (64, 64))])
def test_rejects_non_positive_sizes(bad):
    with pytest.raises(ValueError, match="positive"):
        compute_letterbox(*bad)
