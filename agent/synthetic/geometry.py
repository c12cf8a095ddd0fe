"""Camera geometry of the scene (pure numpy).

Coordinates are continuous pixel-edge coordinates: the image covers ``[0, W] x [0, H]`` and pixel
``(row j, column i)`` covers ``[i, i+1) x [j, j+1)``; boxes use the same convention, as YOLO labels do.
OpenCV puts pixel centres on integers, so drawing code subtracts 0.5 (see ``to_cv_points``).

The belt plane uses the same pixel units as the image; the camera maps it to the image with a
homography (tilt = perspective foreshortening of the far edge, roll = rotation).
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
CV_SHIFT = 4
"""Fractional bits for cv2.fillPoly / cv2.line points: 1/16-pixel precision."""


def camera_homography(width: int, height: int, tilt: float, roll_deg: float) -> FloatArray:
    """(3, 3) homography from belt-plane to image edge coordinates.

    The plane rectangle ``[0, W] x [0, H]`` maps to a trapezoid whose top edge is ``tilt`` narrower,
    rotated by ``roll_deg`` about the image centre. There is no zoom: what the image shows beyond the
    rectangle is the belt running on, rails and floor (the background is rendered with a margin).
    """
    w, h = float(width), float(height)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    inset = 0.5 * tilt * w
    dst = np.array([[inset, 0], [w - inset, 0], [w, h], [0, h]], dtype=np.float64)
    center = np.array([w / 2, h / 2])
    roll = math.radians(roll_deg)
    c, s = math.cos(roll), math.sin(roll)
    rotated = (dst - center) @ np.array([[c, s], [-s, c]]) + center
    return perspective_transform(src, rotated)


def perspective_transform(src: FloatArray, dst: FloatArray) -> FloatArray:
    """(3, 3) homography mapping the four ``src`` points onto the four ``dst`` points."""
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    solution = np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64))
    return np.append(solution, 1.0).reshape(3, 3)


def apply_homography(matrix: FloatArray, points: FloatArray) -> FloatArray:
    """Map (N, 2) points through a (3, 3) homography."""
    homogeneous = np.concatenate([points, np.ones((points.shape[0], 1))], axis=1) @ matrix.T
    mapped: FloatArray = homogeneous[:, :2] / homogeneous[:, 2:3]
    return mapped


def translation(dx: float, dy: float) -> FloatArray:
    """(3, 3) translation matrix."""
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=np.float64)


def place(points: FloatArray, cx: float, cy: float, angle: float) -> FloatArray:
    """Rotate local (N, 2) points by ``angle`` radians and move their origin to ``(cx, cy)``."""
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * points[:, 0] - s * points[:, 1] + cx, s * points[:, 0] + c * points[:, 1] + cy], axis=1)


def bounds(points: FloatArray) -> FloatArray:
    """(4,) ``x0, y0, x1, y1`` of (N, 2) points."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


def clip_box(box: FloatArray, width: int, height: int) -> Tuple[FloatArray, float]:
    """Clip an ``x0, y0, x1, y1`` box to the image; return it and the fraction of its area still inside."""
    clipped = np.array(
        [
            min(max(box[0], 0.0), width),
            min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width),
            min(max(box[3], 0.0), height),
        ]
    )
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    inside = max(clipped[2] - clipped[0], 0.0) * max(clipped[3] - clipped[1], 0.0)
    return clipped, (inside / area if area > 0 else 0.0)


def to_cv_points(points: FloatArray) -> npt.NDArray[np.int32]:
    """Edge-coordinate (N, 2) points as OpenCV fixed-point (CV_SHIFT bits) pixel-centre coordinates."""
    fixed: npt.NDArray[np.int32] = np.round((points - 0.5) * (1 << CV_SHIFT)).astype(np.int32)
    return fixed
