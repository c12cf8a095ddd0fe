"""Rendering: parts on a conveyor belt seen from above, with exact ground-truth boxes (numpy + OpenCV).

Two ways to get frames, both deterministic in ``(domain, seed, index, size)`` whatever the call order:

- ``render_frame``: independent scenes for data sets. Every frame draws its own parts, light, camera pose,
  blur and JPEG quality from ``np.random.default_rng`` seeded with the domain's name, ``seed`` and ``index``.
- ``render_stream_frame`` / ``iter_frames``: a running conveyor for cameras and videos. Light, camera
  pose and belt surface are fixed per ``(domain, seed, size)`` and cached; parts are items on an endless belt
  (item ``k`` always has the same look) that move ``belt_speed`` pixels per frame, so consecutive frames
  share objects shifted along the belt. To stay fast at 1080p the stream blurs only the parts (the
  cached belt is blurred once), takes its noise from a cached noise field at a per-frame offset, and
  skips the JPEG round trip (a camera stream is decoded before the model sees it; data sets keep it).
  The belt surface of a stream (grain, seams, grid) is painted once and stays put; the parts move.

Boxes are ``x0, y0, x1, y1`` float32 pixel-edge coordinates (see ``geometry``): the bounds of the
camera-transformed silhouette polygon of each part, which is also exactly the polygon that is drawn.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import numpy.typing as npt

from agent.synthetic.domains import DomainParams, get_domain
from agent.synthetic.geometry import (
    CV_SHIFT,
    apply_homography,
    bounds,
    camera_homography,
    clip_box,
    place,
    to_cv_points,
    translation,
)
from agent.synthetic.parts import BASE_COLOR, CLASS_NAMES, SIZE_FACTOR, PartShape, make_part

UInt8Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
Size = Tuple[int, int]

REFERENCE_SIDE = 256.0
"""Domain lengths (blur, motion, belt speed) are given for this short image side."""
MIN_VISIBLE_FRACTION = 0.4
"""A stream part cut by the image border keeps its label while this much of its box is inside."""

_TAG_FRAME, _TAG_ITEM, _TAG_STREAM_FRAME, _TAG_STREAM = 1, 2, 3, 4
_ROLE_SHADE = {"body": 0.72, "face": 1.0, "highlight": 1.28, "dark": 0.55}
_FLOOR_COLOR = (34.0, 34.0, 38.0)
_RAIL_COLOR = (138.0, 140.0, 146.0)
_BELT_TOP, _BELT_BOTTOM, _RAIL_WIDTH = 0.1, 0.9, 0.045  # fractions of the height, belt plane


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    """One rendered frame and its ground truth.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        boxes: (N, 4) float32 ``x0, y0, x1, y1`` in pixels (pixel-edge coordinates, inside the image).
        class_ids: (N,) int64 indices into CLASS_NAMES.
        domain: the domain's name.
        seed, index: what the frame was rendered from.
    """

    image: UInt8Image
    boxes: Float32Array
    class_ids: npt.NDArray[np.int64]
    domain: str
    seed: int
    index: int

    def yolo_labels(self) -> str:
        """The YOLO txt label file: one ``class cx cy w h`` line per box, normalised, 6 decimals."""
        height, width = self.image.shape[:2]
        lines = []
        for (x0, y0, x1, y1), class_id in zip(self.boxes.tolist(), self.class_ids.tolist()):
            lines.append(
                f"{class_id} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f}"
                f" {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"
            )
        return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class _Look:
    """One realisation of a domain's ranges."""

    brightness: float
    gradient_angle: float
    tilt: float
    roll_deg: float
    blur_sigma: float
    jpeg_quality: int  # 0: no JPEG round trip


@dataclass(frozen=True, eq=False)
class _Background:
    image: UInt8Image  # (H, W, 3) lit belt, rails and floor
    seam_image: UInt8Image  # (H, W, 3) the same, darker: shows through where seams are drawn
    light: Float32Array  # (H, W) light level
    plane_to_image: FloatArray  # (3, 3)
    hole_color: Tuple[float, float, float]  # unlit colour of the belt seen through a hole
    seam_period: float  # belt-plane pixels between moving transverse seams; 0 = none
    seam_width: int  # image pixels


@dataclass(frozen=True, eq=False)
class _Placed:
    shape: PartShape
    cx: float  # belt-plane coordinates
    cy: float
    angle: float
    color: Tuple[float, float, float]  # unlit BGR


@dataclass(frozen=True, eq=False)
class _StreamContext:
    look: _Look
    background: _Background  # sharp belt, seams painted in
    blurred: Optional[UInt8Image]  # the same, defocused and smeared; None when the domain has no blur
    sigma: float  # Gaussian blur in image pixels
    motion: Optional[Float32Array]  # motion-blur kernel
    noise_positive: Optional[UInt8Image]
    noise_negative: Optional[UInt8Image]


def _check(seed: int, index: int, size: Size) -> Tuple[int, int]:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if len(size) != 2 or min(size) < 16 or max(size) > 8192:
        raise ValueError(f"size must be (height, width) with each side in 16..8192, got {size}")
    return int(size[0]), int(size[1])


def _domain_key(domain: DomainParams) -> int:
    """Stable number for the domain's name: two domains with the same seed get unrelated scenes."""
    return zlib.crc32(domain.name.encode("utf-8"))


def _sample_look(domain: DomainParams, rng: np.random.Generator) -> _Look:
    quality = (
        0 if domain.jpeg_quality is None else int(rng.integers(domain.jpeg_quality[0], domain.jpeg_quality[1] + 1))
    )
    return _Look(
        brightness=float(rng.uniform(*domain.brightness)),
        gradient_angle=float(rng.uniform(0, 2 * math.pi)),
        tilt=float(rng.uniform(*domain.tilt)),
        roll_deg=float(rng.uniform(*domain.rotation_deg)),
        blur_sigma=float(rng.uniform(*domain.blur_sigma)),
        jpeg_quality=quality,
    )


def _light_map(height: int, width: int, look: _Look, domain: DomainParams) -> Float32Array:
    """(H, W) light level: brightness, a linear fall-off in a random direction, a vignette."""
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height - 0.5
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width - 0.5
    along = math.cos(look.gradient_angle) * xs[None, :] + math.sin(look.gradient_angle) * ys[:, None]
    radius2 = (xs[None, :] ** 2 + ys[:, None] ** 2) * 2.0  # 1 at the corners
    light = look.brightness * (1.0 + domain.light_gradient * 2.0 * along) * (1.0 - domain.vignette * radius2)
    return np.maximum(light, 0.02).astype(np.float32)


def _apply_color(image: Float32Array, domain: DomainParams) -> Float32Array:
    """Colour cast then saturation, on a (..., 3) BGR float array."""
    cast: Float32Array = image * np.asarray(domain.color_cast, dtype=np.float32)
    if domain.saturation == 1.0:
        return cast
    grey = cast @ np.array([0.114, 0.587, 0.299], dtype=np.float32)
    saturated: Float32Array = grey[..., None] + np.float32(domain.saturation) * (cast - grey[..., None])
    return saturated


def _shade(color: Sequence[float], light: float, domain: DomainParams) -> Tuple[float, float, float]:
    lit = _apply_color(np.asarray(color, dtype=np.float32) * np.float32(light), domain)
    b, g, r = np.clip(lit, 0, 255).tolist()
    return (b, g, r)


def _motion_kernel(length: float, angle_deg: float) -> Optional[Float32Array]:
    if length < 1.5:
        return None
    size = math.ceil(length) | 1
    kernel = np.zeros((size, size), dtype=np.float32)
    half = (size - 1) / 2
    dx, dy = math.cos(math.radians(angle_deg)) * length / 2, math.sin(math.radians(angle_deg)) * length / 2
    cv2.line(
        kernel,
        (round(half - dx), round(half - dy)),
        (round(half + dx), round(half + dy)),
        1.0,
        1,
        cv2.LINE_AA,
    )
    normalised: Float32Array = kernel / kernel.sum()
    return normalised


def _blur(image: UInt8Image, sigma: float, motion: Optional[Float32Array]) -> UInt8Image:
    out: UInt8Image = image
    if sigma >= 0.3:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), sigma), dtype=np.uint8)
    if motion is not None:
        out = np.asarray(cv2.filter2D(out, -1, motion), dtype=np.uint8)
    return out


def _belt_texture(
    domain: DomainParams, rng: np.random.Generator, height: int, width: int, margin: int
) -> Tuple[Float32Array, float, int]:
    """Unlit belt-plane canvas covering ``[-margin, W+margin] x [-margin, H+margin]``.

    Returns the (H + 2m, W + 2m, 3) float32 canvas, the period of the moving transverse seams in plane
    pixels and their width in image pixels. Only features along the belt are painted here: they look the
    same while the belt moves, so the stream can cache the canvas and draw moving seams per frame.
    """
    short = min(height, width)
    canvas_h, canvas_w = height + 2 * margin, width + 2 * margin
    canvas = np.empty((canvas_h, canvas_w, 3), dtype=np.float32)
    canvas[:] = _FLOOR_COLOR
    ys = np.arange(canvas_h, dtype=np.float32) + 0.5 - margin
    top, bottom, rail = _BELT_TOP * height, _BELT_BOTTOM * height, _RAIL_WIDTH * height
    belt_rows = (ys >= top) & (ys < bottom)
    contrast = domain.texture_contrast

    grain_h, grain_w = max(2, canvas_h // 2), max(2, canvas_w // 2)
    grain_sigma = {"rubber": 14.0, "mesh": 6.0, "slats": 9.0}[domain.belt_texture] * contrast
    coarse = rng.normal(0.0, grain_sigma, (grain_h, grain_w)).astype(np.float32)
    grain = np.asarray(cv2.resize(coarse, (canvas_w, canvas_h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    belt = np.asarray(domain.belt_color, dtype=np.float32)[None, None, :] + grain[belt_rows][:, :, None]
    canvas[belt_rows] = belt

    if domain.belt_texture == "rubber":
        for _ in range(max(1, short // 24)):  # wear streaks along the belt
            row = float(rng.uniform(top, bottom))
            thickness = int(rng.integers(1, max(2, short // 128) + 1))
            delta = float(rng.uniform(-14.0, 14.0)) * contrast
            lo = int(row + margin)
            canvas[lo : lo + thickness] += delta
        seam_period, seam_width = 0.45 * short, max(1, round(0.008 * short))
    elif domain.belt_texture == "mesh":
        pitch = 0.055 * short
        width_px = max(1, round(0.012 * short))
        row = top
        while row < bottom:  # the grid's lines along the belt
            lo = int(row + margin)
            canvas[lo : lo + width_px] *= 1.0 - 0.45 * contrast
            row += pitch
        seam_period, seam_width = pitch, width_px
    else:  # slats
        seam_period, seam_width = 0.11 * short, max(1, round(0.02 * short))
    canvas[~belt_rows & (ys >= top - 1.5 * rail) & (ys < bottom + 1.5 * rail)] = _FLOOR_COLOR
    for start in (top - rail, bottom):  # guard rails with a bright bevel
        lo, hi = int(start + margin), int(start + rail + margin)
        canvas[lo:hi] = _RAIL_COLOR
        canvas[lo + (hi - lo) // 3 : lo + (hi - lo) // 2] = (200.0, 202.0, 206.0)
    # A smooth canvas warps without aliasing; the grain keeps its look.
    return canvas, seam_period, seam_width


def _build_background(
    domain: DomainParams, look: _Look, rng: np.random.Generator, height: int, width: int
) -> _Background:
    margin = int(0.5 * max(height, width))
    canvas, seam_period, seam_width = _belt_texture(domain, rng, height, width, margin)
    plane_to_image = camera_homography(width, height, look.tilt, look.roll_deg)
    # canvas pixel centres -> image pixel centres (OpenCV puts centres on integers)
    canvas_to_image = translation(-0.5, -0.5) @ plane_to_image @ translation(0.5 - margin, 0.5 - margin)
    warped = cv2.warpPerspective(
        canvas, canvas_to_image, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    light = _light_map(height, width, look, domain)
    lit = _apply_color(warped * light[:, :, None], domain)
    image = np.clip(lit, 0, 255).astype(np.uint8)
    seam_image = np.clip(lit * 0.55, 0, 255).astype(np.uint8)
    hole = np.asarray(domain.belt_color, dtype=np.float32) * 0.45
    return _Background(
        image=image,
        seam_image=seam_image,
        light=light,
        plane_to_image=plane_to_image,
        hole_color=(float(hole[0]), float(hole[1]), float(hole[2])),
        seam_period=seam_period,
        seam_width=seam_width,
    )


def _draw_seams(image: UInt8Image, background: _Background, phase: float, height: int, width: int) -> None:
    """Moving transverse seams: copy the darker belt through a mask of lines across the belt."""
    if background.seam_period <= 0:
        return
    margin = 0.5 * max(height, width)
    first = phase % background.seam_period - margin - background.seam_period
    xs = np.arange(first, width + margin, background.seam_period)
    ends = np.stack(
        [
            np.stack([xs, np.full_like(xs, _BELT_TOP * height)], axis=1),
            np.stack([xs, np.full_like(xs, _BELT_BOTTOM * height)], axis=1),
        ],
        axis=1,
    ).reshape(-1, 2)
    points = to_cv_points(apply_homography(background.plane_to_image, ends)).reshape(-1, 2, 2)
    mask = np.zeros((height, width), dtype=np.uint8)
    limit = 1 << 28  # keep cv2's fixed-point arithmetic away from overflow for far-off ends
    for (x0, y0), (x1, y1) in np.clip(points, -limit, limit).tolist():
        cv2.line(mask, (x0, y0), (x1, y1), 255, background.seam_width, cv2.LINE_8, CV_SHIFT)
    cv2.copyTo(background.seam_image, mask, image)


def _shadow_offset(size: float) -> Tuple[float, float]:
    return (0.05 * size, 0.07 * size)


def _draw_parts(
    image: UInt8Image,
    placed: Sequence[_Placed],
    background: _Background,
    domain: DomainParams,
) -> Tuple[Float32Array, npt.NDArray[np.int64], List[Tuple[int, int, int, int]]]:
    """Draw parts (shadows first); return their clipped boxes, class ids and the drawn regions.

    The regions are ``x0, y0, x1, y1`` integer pixel rectangles (exclusive ends) covering each part that
    touches the image, its shadow included.
    """
    height, width = image.shape[:2]
    boxes: List[FloatArray] = []
    class_ids: List[int] = []
    drawn: List[Tuple[List[Tuple[str, FloatArray]], FloatArray, _Placed]] = []
    regions: List[Tuple[int, int, int, int]] = []
    for part in placed:
        layers = [
            (
                layer.role,
                apply_homography(background.plane_to_image, place(layer.points, part.cx, part.cy, part.angle)),
            )
            for layer in part.shape.layers
        ]
        body = np.concatenate([points for role, points in layers if role == "body"], axis=0)
        box = bounds(body)
        clipped, visible = clip_box(box, width, height)
        if visible <= 0.0:
            continue
        drawn.append((layers, box, part))
        dx, dy = _shadow_offset(float(max(box[2] - box[0], box[3] - box[1])))
        regions.append(
            (
                max(int(box[0]) - 2, 0),
                max(int(box[1]) - 2, 0),
                min(int(box[2] + dx) + 3, width),
                min(int(box[3] + dy) + 3, height),
            )
        )
        if visible >= MIN_VISIBLE_FRACTION and clipped[2] - clipped[0] >= 2 and clipped[3] - clipped[1] >= 2:
            boxes.append(clipped)
            class_ids.append(part.shape.class_id)

    if domain.shadow > 0:
        for layers, box, _part in drawn:
            extent = float(max(box[2] - box[0], box[3] - box[1]))
            dx, dy = _shadow_offset(extent)
            x0, y0 = max(int(box[0]) - 2, 0), max(int(box[1]) - 2, 0)
            x1, y1 = min(int(box[2] + dx) + 3, width), min(int(box[3] + dy) + 3, height)
            if x1 <= x0 or y1 <= y0:
                continue
            roi = image[y0:y1, x0:x1]
            mask = np.zeros(roi.shape[:2], dtype=np.uint8)
            polys = [to_cv_points(points + np.array([dx - x0, dy - y0])) for role, points in layers if role == "body"]
            cv2.fillPoly(mask, polys, 255, cv2.LINE_AA, CV_SHIFT)
            soft = cv2.GaussianBlur(mask, (0, 0), max(0.6, 0.03 * extent))
            factor = 1.0 - domain.shadow * soft.astype(np.float32) / 255.0
            roi[:] = (roi.astype(np.float32) * factor[:, :, None]).astype(np.uint8)

    for layers, box, part in drawn:
        cx = min(max(int((box[0] + box[2]) / 2), 0), width - 1)
        cy = min(max(int((box[1] + box[3]) / 2), 0), height - 1)
        light = float(background.light[cy, cx])
        x0, y0 = max(math.floor(box[0]) - 1, 0), max(math.floor(box[1]) - 1, 0)
        x1, y1 = min(math.ceil(box[2]) + 2, width), min(math.ceil(box[3]) + 2, height)
        roi = image[y0:y1, x0:x1]
        canvas = roi.copy()
        silhouette = np.zeros(roi.shape[:2], dtype=np.uint8)
        origin = np.array([x0, y0], dtype=np.float64)
        for role, points in layers:
            if role == "hole":
                color = _shade(background.hole_color, light, domain)
            else:
                color = _shade([c * _ROLE_SHADE[role] for c in part.color], light, domain)
            polygon = [to_cv_points(points - origin)]
            if role == "body":
                cv2.fillPoly(silhouette, polygon, 255, cv2.LINE_8, CV_SHIFT)
                cv2.fillPoly(canvas, polygon, color, cv2.LINE_8, CV_SHIFT)
            else:
                cv2.fillPoly(canvas, polygon, color, cv2.LINE_AA, CV_SHIFT)
        # Only the silhouette's pixels change: anti-aliased inner layers near the edge (and OpenCV's AA,
        # which spills about 1.5 px past a polygon) never reach outside the part's box.
        cv2.copyTo(canvas, silhouette, roi)

    if not boxes:
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.int64), regions
    return np.asarray(boxes, dtype=np.float32), np.asarray(class_ids, dtype=np.int64), regions


def _part_color(class_id: int, rng: np.random.Generator) -> Tuple[float, float, float]:
    base = np.asarray(BASE_COLOR[class_id]) * float(rng.uniform(0.9, 1.1)) + rng.normal(0.0, 5.0, 3)
    b, g, r = np.clip(base, 0, 255).tolist()
    return (b, g, r)


def _sample_part(
    domain: DomainParams, rng: np.random.Generator, short: int
) -> Tuple[PartShape, float, Tuple[float, float, float]]:
    weights = np.asarray(domain.class_weights, dtype=np.float64)
    class_id = int(rng.choice(len(CLASS_NAMES), p=weights / weights.sum()))
    size = float(rng.uniform(*domain.scale)) * short * SIZE_FACTOR[class_id]
    shape = make_part(class_id, size, rng)
    angle = float(rng.uniform(0, 2 * math.pi))
    return shape, angle, _part_color(class_id, rng)


def _layout(
    domain: DomainParams, rng: np.random.Generator, height: int, width: int, plane_to_image: FloatArray
) -> List[_Placed]:
    """Parts for an independent frame: inside the belt and the image, not touching each other."""
    short = min(height, width)
    count = int(rng.integers(domain.objects[0], domain.objects[1] + 1))
    placed: List[_Placed] = []
    radii: List[float] = []
    for _ in range(count):
        shape, angle, color = _sample_part(domain, rng, short)
        radius = shape.radius()
        body = shape.body_points()
        for _attempt in range(40):
            cx = float(rng.uniform(radius, width - radius))
            cy = float(rng.uniform(_BELT_TOP * height + radius, _BELT_BOTTOM * height - radius))
            if any(math.hypot(cx - p.cx, cy - p.cy) < radius + r + 2.0 for p, r in zip(placed, radii)):
                continue
            box = bounds(apply_homography(plane_to_image, place(body, cx, cy, angle)))
            if box[0] < 1.0 or box[1] < 1.0 or box[2] > width - 1.0 or box[3] > height - 1.0:
                continue
            placed.append(_Placed(shape, cx, cy, angle, color))
            radii.append(radius)
            break
    return placed


def render_frame(domain: Union[str, DomainParams], seed: int, index: int, size: Size = (256, 256)) -> SyntheticFrame:
    """Render independent scene ``index`` of the data set ``(domain, seed)``.

    Args:
        domain: a registered name (see DOMAINS) or a DomainParams.
        seed, index: >= 0; the frame depends on nothing else (not on call order).
        size: (height, width) in pixels.

    Returns:
        SyntheticFrame with image (H, W, 3) uint8 BGR, boxes (N, 4) float32, class_ids (N,) int64.

    Raises:
        UnknownDomainError: unknown domain name.  ValueError: bad seed, index or size.
    """
    params = get_domain(domain)
    height, width = _check(seed, index, size)
    short = min(height, width)
    # Independent generators per concern: the background does not change when the parts do.
    rng_look, rng_belt, rng_parts, rng_noise = (
        np.random.default_rng([_TAG_FRAME, _domain_key(params), seed, index, k]) for k in range(4)
    )
    look = _sample_look(params, rng_look)
    background = _build_background(params, look, rng_belt, height, width)
    image = background.image.copy()
    _draw_seams(image, background, float(rng_look.uniform(0, max(background.seam_period, 1.0))), height, width)
    placed = _layout(params, rng_parts, height, width, background.plane_to_image)
    boxes, class_ids, _regions = _draw_parts(image, placed, background, params)
    scale = short / REFERENCE_SIDE
    image = _blur(image, look.blur_sigma * scale, _motion_kernel(params.motion_blur * scale, look.roll_deg))
    if params.noise_sigma > 0:
        noise = rng_noise.normal(0.0, params.noise_sigma, image.shape).astype(np.float32)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if look.jpeg_quality:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
        if not ok:  # pragma: no cover - OpenCV's JPEG encoder does not fail on a valid uint8 image
            raise RuntimeError("cv2.imencode failed to encode a rendered frame as JPEG")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        if decoded is None:  # pragma: no cover - decoding what imencode just wrote
            raise RuntimeError("cv2.imdecode failed to decode a JPEG it had just encoded")
        image = decoded
    return SyntheticFrame(image, boxes, class_ids, params.name, seed, index)


@functools.lru_cache(maxsize=4)
def _stream_context(domain: DomainParams, seed: int, height: int, width: int) -> _StreamContext:
    rng = np.random.default_rng([_TAG_STREAM, _domain_key(domain), seed])
    look = _sample_look(domain, rng)
    background = _build_background(domain, look, rng, height, width)
    _draw_seams(background.image, background, 0.0, height, width)
    scale = min(height, width) / REFERENCE_SIDE
    sigma = look.blur_sigma * scale
    motion = _motion_kernel(domain.motion_blur * scale, look.roll_deg)
    blurred = _blur(background.image, sigma, motion) if sigma >= 0.3 or motion is not None else None
    positive: Optional[UInt8Image] = None
    negative: Optional[UInt8Image] = None
    if domain.noise_sigma > 0:
        noise = rng.normal(0.0, domain.noise_sigma, (height + 64, width + 64, 3)).astype(np.float32)
        positive = np.clip(noise, 0, 255).astype(np.uint8)
        negative = np.clip(-noise, 0, 255).astype(np.uint8)
    for array in (background.image, blurred, positive, negative):
        if array is not None:
            array.setflags(write=False)  # shared by every frame of the stream
    return _StreamContext(look, background, blurred, sigma, motion, positive, negative)


def _stream_items(domain: DomainParams, seed: int, index: int, height: int, width: int) -> List[_Placed]:
    """Items on the endless belt that are near the image at frame ``index``.

    Item ``k`` sits ``k`` slots upstream; its class, size, look, lateral position and rotation come from
    its own generator, so it looks the same in every frame; the belt moves ``belt_speed`` per frame.
    """
    short = min(height, width)
    speed = domain.belt_speed * short / REFERENCE_SIDE
    largest = domain.scale[1] * short * max(SIZE_FACTOR)
    slot = 1.45 * largest  # with 15 % jitter, neighbours (radius <= 0.6 * largest) never touch
    travel = index * speed + width + slot  # frame 0 starts with a full belt
    first = max(0, math.floor((travel - width - largest - slot) / slot))
    last = math.floor((travel + largest) / slot)
    placed: List[_Placed] = []
    for item in range(first, last + 1):
        rng = np.random.default_rng([_TAG_ITEM, _domain_key(domain), seed, item])
        present = rng.random() < 0.85
        jitter = float(rng.uniform(0.0, 0.15)) * slot
        lane = float(rng.random())
        shape, angle, color = _sample_part(domain, rng, short)
        if not present:
            continue
        radius = shape.radius()
        top, bottom = _BELT_TOP * height + radius, _BELT_BOTTOM * height - radius
        cy = top + lane * max(bottom - top, 0.0)
        placed.append(_Placed(shape, travel - item * slot - jitter, cy, angle, color))
    return placed


def render_stream_frame(
    domain: Union[str, DomainParams], seed: int, index: int, size: Size = (1080, 1920)
) -> SyntheticFrame:
    """Render frame ``index`` of the conveyor stream ``(domain, seed)`` (see the module docstring).

    Raises:
        UnknownDomainError: unknown domain name.  ValueError: bad seed, index or size.
    """
    params = get_domain(domain)
    height, width = _check(seed, index, size)
    return _render_stream(params, seed, index, height, width, _stream_context(params, seed, height, width))


def render_stream_frames(
    domain: Union[str, DomainParams], seed: int, indices: Sequence[int], size: Size = (1080, 1920)
) -> List[SyntheticFrame]:
    """Frames ``indices`` of the conveyor stream ``(domain, seed)``, equal to ``render_stream_frame``'s.

    The belt, noise and light of the stream (about 40 MB at 1080p) are built for this call and dropped after
    it, not cached: for a camera that renders a short loop once and replays it.

    Raises:
        UnknownDomainError: unknown domain name.  ValueError: bad seed, index or size.
    """
    params = get_domain(domain)
    height, width = _check(seed, 0, size)
    for index in indices:
        _check(seed, index, size)
    context = _stream_context.__wrapped__(params, seed, height, width)
    return [_render_stream(params, seed, index, height, width, context) for index in indices]


def _render_stream(
    params: DomainParams, seed: int, index: int, height: int, width: int, context: _StreamContext
) -> SyntheticFrame:
    background = context.background
    placed = _stream_items(params, seed, index, height, width)
    if context.blurred is None:
        image = background.image.copy()
        boxes, class_ids, _regions = _draw_parts(image, placed, background, params)
    else:
        # Blur only around the parts: draw them on a sharp copy, blur each region (with a margin so the
        # blur sees the same neighbourhood as the cached full-frame blur) and paste it into the blurred belt.
        sharp = background.image.copy()
        boxes, class_ids, regions = _draw_parts(sharp, placed, background, params)
        image = context.blurred.copy()
        pad = math.ceil(3 * context.sigma) + (context.motion.shape[0] if context.motion is not None else 0) + 1
        for rx0, ry0, rx1, ry1 in regions:
            x0, y0, x1, y1 = (
                max(rx0 - pad, 0),
                max(ry0 - pad, 0),
                min(rx1 + pad, width),
                min(ry1 + pad, height),
            )
            ox0, oy0 = max(x0 - pad, 0), max(y0 - pad, 0)
            ox1, oy1 = min(x1 + pad, width), min(y1 + pad, height)
            blurred = _blur(sharp[oy0:oy1, ox0:ox1], context.sigma, context.motion)
            image[y0:y1, x0:x1] = blurred[y0 - oy0 : y1 - oy0, x0 - ox0 : x1 - ox0]
    if context.noise_positive is not None and context.noise_negative is not None:
        rng = np.random.default_rng([_TAG_STREAM_FRAME, _domain_key(params), seed, index])
        oy, ox = (int(v) for v in rng.integers(0, 64, 2))
        cv2.add(image, context.noise_positive[oy : oy + height, ox : ox + width], dst=image)
        cv2.subtract(image, context.noise_negative[oy : oy + height, ox : ox + width], dst=image)
    return SyntheticFrame(image, boxes, class_ids, params.name, seed, index)


def iter_frames(
    domain: Union[str, DomainParams], seed: int, size: Size = (1080, 1920), start: int = 0
) -> Iterator[SyntheticFrame]:
    """Endless conveyor stream from frame ``start``: ``render_stream_frame`` for start, start+1, ..."""
    params = get_domain(domain)
    _check(seed, start, size)
    index = start
    while True:
        yield render_stream_frame(params, seed, index, size)
        index += 1
