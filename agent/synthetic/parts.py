"""The part catalogue: class names and the outline geometry of each kind of part (pure numpy).

A part is a stack of filled polygons (``Layer``) in local coordinates (pixels, centred on 0, +x right,
+y down). Layers with role ``body`` form the silhouette and define the ground-truth box; all other
layers (faces, highlights, holes, threads, cracks) lie inside the body, so they never widen the box.

Classes (ids are the positions in CLASS_NAMES):

- ``bolt``           hex head and a threaded shaft
- ``nut``            dark hexagon, chamfer ring, small threaded hole
- ``washer``         bright thin ring with a large hole
- ``bracket``        yellow-painted L-shaped plate with two holes
- ``bent_bolt``      defect: a bolt whose shaft is bent by 30-50 degrees
- ``cracked_washer`` defect: a washer with a broken-out wedge and a crack
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np
import numpy.typing as npt

CLASS_NAMES: Tuple[str, ...] = ("bolt", "nut", "washer", "bracket", "bent_bolt", "cracked_washer")

FloatArray = npt.NDArray[np.float64]

ROLES = ("body", "face", "highlight", "dark", "hole")
"""Drawing roles, each with its own shade of the part colour (``hole`` shows the shadowed belt)."""

SIZE_FACTOR: Tuple[float, ...] = (1.0, 0.56, 0.62, 0.9, 1.0, 0.62)
"""Longest side of each class relative to the frame's sampled part scale (CLASS_NAMES order)."""

BASE_COLOR: Tuple[Tuple[float, float, float], ...] = (
    (172.0, 166.0, 160.0),  # bolt: bright steel
    (92.0, 100.0, 112.0),  # nut: dark oiled steel
    (212.0, 210.0, 204.0),  # washer: bright zinc
    (38.0, 168.0, 214.0),  # bracket: yellow paint
    (172.0, 166.0, 160.0),  # bent_bolt: same steel as a bolt; only the shape differs
    (212.0, 210.0, 204.0),  # cracked_washer: same zinc as a washer
)
"""Colour of each class in BGR before lighting (each part jitters it a little)."""


@dataclass(frozen=True)
class Layer:
    """One filled polygon of a part: ``points`` (N, 2) float64 local pixel coordinates."""

    points: FloatArray
    role: str


@dataclass(frozen=True)
class PartShape:
    """All layers of one part, drawn in order."""

    class_id: int
    layers: Tuple[Layer, ...]

    def body_points(self) -> FloatArray:
        """(M, 2) all silhouette points: their bounds are the part's box."""
        return np.concatenate([layer.points for layer in self.layers if layer.role == "body"], axis=0)

    def radius(self) -> float:
        """Distance from the local origin to the farthest silhouette point."""
        return float(np.sqrt((self.body_points() ** 2).sum(axis=1)).max())


def regular_polygon(
    radius: float, sides: int, phase: float = 0.0, center: Tuple[float, float] = (0.0, 0.0)
) -> FloatArray:
    """(sides, 2) vertices of a regular polygon; a circle is a polygon with many sides."""
    angles = phase + np.arange(sides) * (2.0 * math.pi / sides)
    return np.stack([center[0] + radius * np.cos(angles), center[1] + radius * np.sin(angles)], axis=1)


def circle(radius: float, center: Tuple[float, float] = (0.0, 0.0)) -> FloatArray:
    """(N, 2) circle outline with enough vertices that the polygon stays within 0.1 px of the circle."""
    sides = int(min(96, max(16, math.ceil(math.pi / math.acos(max(0.0, 1.0 - 0.1 / max(radius, 0.2)))))))
    return regular_polygon(radius, sides, 0.0, center)


def rectangle(x0: float, y0: float, x1: float, y1: float) -> FloatArray:
    """(4, 2) axis-aligned rectangle."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def rotate(points: FloatArray, angle: float, origin: Tuple[float, float] = (0.0, 0.0)) -> FloatArray:
    """Rotate (N, 2) points by ``angle`` radians about ``origin``."""
    c, s = math.cos(angle), math.sin(angle)
    shifted = points - np.asarray(origin)
    turned: FloatArray = np.stack(
        [c * shifted[:, 0] - s * shifted[:, 1], s * shifted[:, 0] + c * shifted[:, 1]], axis=1
    )
    moved: FloatArray = turned + np.asarray(origin, dtype=np.float64)
    return moved


def annulus_sector(outer: float, inner: float, start: float, end: float) -> FloatArray:
    """(N, 2) outline of the ring between radii ``inner`` and ``outer`` from angle ``start`` to ``end``."""
    steps = max(8, int(abs(end - start) / (2 * math.pi) * 64))
    angles = np.linspace(start, end, steps)
    outer_arc = np.stack([outer * np.cos(angles), outer * np.sin(angles)], axis=1)
    inner_arc = np.stack([inner * np.cos(angles[::-1]), inner * np.sin(angles[::-1])], axis=1)
    return np.concatenate([outer_arc, inner_arc], axis=0)


def _threads(start: Tuple[float, float], direction: float, length: float, width: float) -> Tuple[Layer, ...]:
    """Dark thread grooves across a shaft that starts at ``start`` and runs ``length`` along ``direction``."""
    pitch = max(1.6, 0.085 * length)
    groove = max(0.6, 0.35 * pitch)
    layers = []
    offset = 0.25 * pitch
    while offset + groove < length - 0.5:
        groove_rect = rectangle(offset, -0.75 * width, offset + groove, 0.75 * width)
        placed = rotate(groove_rect, direction) + np.asarray(start)
        layers.append(Layer(placed, "dark"))
        offset += pitch
    return tuple(layers)


def _bolt(size: float, rng: np.random.Generator, bent: bool) -> Tuple[Layer, ...]:
    head_r = 0.17 * size
    head_center = (-0.5 * size + head_r, 0.0)
    half_w = 0.07 * size
    head_phase = float(rng.uniform(0, math.pi / 3))
    head = regular_polygon(head_r, 6, head_phase, head_center)
    layers = [Layer(head, "body")]
    shaft_start = head_center[0] + 0.6 * head_r
    if not bent:
        length = 0.5 * size - shaft_start
        layers.append(Layer(rectangle(shaft_start - 0.6 * head_r, -half_w, 0.5 * size, half_w), "body"))
        layers.append(
            Layer(rectangle(shaft_start, -half_w * 0.7, 0.5 * size - 0.02 * size, -half_w * 0.15), "highlight")
        )
        layers.extend(_threads((shaft_start + 0.35 * length, 0.0), 0.0, 0.65 * length, half_w))
    else:
        total = 0.5 * size - shaft_start
        first = total * float(rng.uniform(0.35, 0.5))
        second = total - first
        bend = math.radians(float(rng.uniform(30.0, 50.0))) * (1 if rng.random() < 0.5 else -1)
        knee = (shaft_start + first, 0.0)
        layers.append(Layer(rectangle(shaft_start - 0.6 * head_r, -half_w, knee[0], half_w), "body"))
        tail = rotate(rectangle(0.0, -half_w, second, half_w), bend) + np.asarray(knee)
        layers.append(Layer(tail, "body"))
        layers.append(Layer(circle(half_w, knee), "body"))
        layers.append(Layer(rectangle(shaft_start, -half_w * 0.7, knee[0], -half_w * 0.15), "highlight"))
        layers.extend(
            _threads(
                (knee[0] + math.cos(bend) * 0.1 * second, math.sin(bend) * 0.1 * second),
                bend,
                0.9 * second,
                half_w,
            )
        )
    layers.append(Layer(regular_polygon(head_r * 0.78, 6, head_phase, head_center), "face"))
    layers.append(
        Layer(circle(head_r * 0.35, (head_center[0] - 0.2 * head_r, head_center[1] - 0.2 * head_r)), "highlight")
    )
    return tuple(layers)


def _nut(size: float, rng: np.random.Generator) -> Tuple[Layer, ...]:
    radius = 0.5 * size
    phase = float(rng.uniform(0, math.pi / 3))
    return (
        Layer(regular_polygon(radius, 6, phase), "body"),
        Layer(circle(0.8 * radius), "face"),
        Layer(circle(0.47 * radius), "dark"),
        Layer(circle(0.36 * radius), "hole"),
    )


def _washer(size: float, rng: np.random.Generator, cracked: bool) -> Tuple[Layer, ...]:
    outer = 0.5 * size
    inner = 0.56 * outer
    if not cracked:
        return (
            Layer(circle(outer), "body"),
            Layer(circle(0.9 * outer), "face"),
            Layer(circle(inner * 1.08), "dark"),
            Layer(circle(inner), "hole"),
        )
    gap = math.radians(float(rng.uniform(60.0, 90.0)))
    gap_center = float(rng.uniform(0, 2 * math.pi))
    start, end = gap_center + gap / 2, gap_center + 2 * math.pi - gap / 2
    crack_angle = gap_center + math.pi + float(rng.uniform(-0.6, 0.6))
    crack = rotate(rectangle(inner * 1.02, -0.045 * outer, outer * 0.97, 0.045 * outer), crack_angle)
    return (
        Layer(annulus_sector(outer, inner, start, end), "body"),
        Layer(annulus_sector(0.9 * outer, inner * 1.08, start + 0.04, end - 0.04), "face"),
        Layer(crack, "hole"),
    )


def _bracket(size: float, rng: np.random.Generator) -> Tuple[Layer, ...]:
    long_arm = size
    short_arm = size * float(rng.uniform(0.55, 0.8))
    thick = 0.27 * size
    inset = 0.05 * size
    outline = np.array(
        [[0, 0], [long_arm, 0], [long_arm, thick], [thick, thick], [thick, short_arm], [0, short_arm]],
        dtype=np.float64,
    )
    face = np.array(
        [
            [inset, inset],
            [long_arm - inset, inset],
            [long_arm - inset, thick - inset],
            [thick - inset, thick - inset],
            [thick - inset, short_arm - inset],
            [inset, short_arm - inset],
        ],
        dtype=np.float64,
    )
    hole_r = 0.065 * size
    holes = [
        circle(hole_r, (long_arm - 0.17 * size, thick / 2)),
        circle(hole_r, (thick / 2, short_arm - 0.15 * size)),
    ]
    shift = np.array([long_arm / 2, short_arm / 2])
    mirror = np.array([1.0, -1.0 if rng.random() < 0.5 else 1.0])
    layers = [Layer((outline - shift) * mirror, "body"), Layer((face - shift) * mirror, "face")]
    layers.extend(Layer((hole - shift) * mirror, "hole") for hole in holes)
    return tuple(layers)


_BUILDERS: Dict[str, Callable[[float, np.random.Generator], Tuple[Layer, ...]]] = {
    "bolt": lambda size, rng: _bolt(size, rng, bent=False),
    "nut": _nut,
    "washer": lambda size, rng: _washer(size, rng, cracked=False),
    "bracket": _bracket,
    "bent_bolt": lambda size, rng: _bolt(size, rng, bent=True),
    "cracked_washer": lambda size, rng: _washer(size, rng, cracked=True),
}


def make_part(class_id: int, size: float, rng: np.random.Generator) -> PartShape:
    """Build the outline of a part of class ``class_id`` whose longest side is about ``size`` pixels.

    The shape is centred on its silhouette's bounding box, unrotated; ``rng`` draws its details (head
    orientation, bend angle, crack position, bracket arm length).
    """
    if not 0 <= class_id < len(CLASS_NAMES):
        raise ValueError(f"class_id {class_id} is outside 0..{len(CLASS_NAMES) - 1}")
    if size <= 0:
        raise ValueError(f"part size must be > 0, got {size}")
    layers = _BUILDERS[CLASS_NAMES[class_id]](size, rng)
    body = np.concatenate([layer.points for layer in layers if layer.role == "body"], axis=0)
    center = (body.min(axis=0) + body.max(axis=0)) / 2.0
    return PartShape(class_id, tuple(Layer(layer.points - center, layer.role) for layer in layers))
