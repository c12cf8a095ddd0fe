"""Polygon zones: which boxes stand inside an area of the image.

A box belongs to a zone when its *anchor point* lies inside the zone's polygon. For objects on the floor
(people, forklifts, pallets) the bottom-centre of the box is where the object touches the ground and is the
right anchor; for things seen from above or hanging, the centre is.

Pure numpy; coordinates are pixels of the original frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence, Tuple

import numpy as np
import numpy.typing as npt


class Anchor(str, Enum):
    """Which point of a box decides whether it is inside a zone."""

    BOTTOM_CENTER = "bottom_center"
    CENTER = "center"


@dataclass(frozen=True)
class Zone:
    """A named simple polygon (at least three vertices, implicitly closed), in frame pixels."""

    name: str
    points: Tuple[Tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 3:
            raise ValueError(f"zone {self.name!r}: a polygon needs at least 3 points, got {len(self.points)}")
        for point in self.points:
            if len(point) != 2 or not all(math.isfinite(v) for v in point):
                raise ValueError(f"zone {self.name!r}: every point must be two finite numbers, got {point!r}")

    @classmethod
    def from_points(cls, name: str, points: Sequence[Sequence[float]]) -> Zone:
        return cls(name, tuple((float(p[0]), float(p[1])) for p in points))

    def as_array(self) -> npt.NDArray[Any]:
        """``(M, 2)`` float64 vertices."""
        return np.asarray(self.points, np.float64)

    def contains(self, points: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``(N,)`` bool: which of the ``(N, 2)`` points lie inside this zone."""
        return points_in_polygon(points, self.as_array())


def anchor_points(xyxy: npt.NDArray[Any], anchor: Anchor = Anchor.BOTTOM_CENTER) -> npt.NDArray[Any]:
    """Anchor points of ``(N, 4)`` xyxy boxes, shape ``(N, 2)`` float64."""
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    x = (boxes[:, 0] + boxes[:, 2]) / 2.0
    if anchor is Anchor.BOTTOM_CENTER:
        y = boxes[:, 3]
    else:
        y = (boxes[:, 1] + boxes[:, 3]) / 2.0
    return np.stack([x, y], axis=1)


def points_in_polygon(points: npt.NDArray[Any], polygon: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Even-odd (ray casting) test of ``(N, 2)`` points against an ``(M, 2)`` polygon; ``(N,)`` bool.

    Points exactly on an edge may fall either side (the usual half-open convention of ray casting): zones are
    drawn by people, a pixel of tolerance does not matter, and the rule stays vectorised and branch-free.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros((0,), bool)
    px = pts[:, 0:1]  # (N, 1)
    py = pts[:, 1:2]
    x1 = poly[:, 0][None, :]  # (1, M): edge i goes from vertex i to vertex i+1
    y1 = poly[:, 1][None, :]
    x2 = np.roll(poly[:, 0], -1)[None, :]
    y2 = np.roll(poly[:, 1], -1)[None, :]
    straddles = (y1 > py) != (y2 > py)  # the horizontal ray through the point crosses this edge's span
    dy = np.where(y2 == y1, 1.0, y2 - y1)  # never used where the edge is horizontal (straddles is False)
    x_cross = x1 + (py - y1) * (x2 - x1) / dy
    crossings = np.count_nonzero(straddles & (px < x_cross), axis=1)
    inside: npt.NDArray[Any] = (crossings % 2) == 1
    return inside


def in_any_zone(
    xyxy: npt.NDArray[Any], zones: Sequence[Zone], anchor: Anchor = Anchor.BOTTOM_CENTER
) -> npt.NDArray[Any]:
    """``(N,)`` bool: boxes whose anchor lies in at least one zone; all True when ``zones`` is empty."""
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    if not zones:
        return np.ones((len(boxes),), bool)
    anchors = anchor_points(boxes, anchor)
    inside = np.zeros((len(boxes),), bool)
    for zone in zones:
        inside |= zone.contains(anchors)
    return inside
