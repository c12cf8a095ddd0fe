"""Domain parameters: everything about a scene that can drift between a training set and a factory floor.

A domain is a frozen, hashable dataclass. Ranges are ``(low, high)`` tuples: every rendered dataset frame
draws its own value inside the range, a stream (camera, video) draws one value per ``(domain, seed)``.
Lengths are given for a 256-pixel short image side and scale with the frame, so a domain looks the same at
256x256 and at 1920x1080.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

from agent.synthetic.errors import UnknownDomainError
from agent.synthetic.parts import CLASS_NAMES

Range = Tuple[float, float]
BELT_TEXTURES = ("rubber", "mesh", "slats")


@dataclass(frozen=True)
class DomainParams:
    """How a scene looks: lighting, belt, optics, camera pose, compression, part sizes and mix."""

    name: str
    brightness: Range = (0.9, 1.1)
    """Global light level (multiplier on all colours)."""
    light_gradient: float = 0.15
    """Strength of a linear light fall-off across the frame (0 = even light), random direction per frame."""
    vignette: float = 0.15
    """Darkening towards the corners (0 = none, 1 = black corners)."""
    color_cast: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Per-channel BGR gain of the light source (white balance)."""
    saturation: float = 1.0
    """Colour saturation (0 = grey, 1 = as painted)."""
    belt_texture: str = "rubber"
    """Belt surface: ``rubber`` (grain, wear streaks, seams), ``mesh`` (modular plastic grid), ``slats``."""
    belt_color: Tuple[int, int, int] = (62, 62, 66)
    """Belt base colour, BGR."""
    texture_contrast: float = 0.5
    """Amplitude of the belt texture (0 = flat colour, 1 = strong)."""
    blur_sigma: Range = (0.0, 0.5)
    """Gaussian defocus sigma in pixels (at a 256-pixel short side)."""
    motion_blur: float = 0.0
    """Length in pixels (at a 256-pixel short side) of the belt-direction motion smear; below 1.5 none."""
    noise_sigma: float = 2.5
    """Sensor noise standard deviation in 8-bit levels."""
    scale: Range = (0.14, 0.25)
    """Longest side of the largest part kinds as a fraction of the image's short side."""
    tilt: Range = (0.0, 0.05)
    """Perspective tilt: how much narrower the far (top) edge of the belt looks (0 = straight down)."""
    rotation_deg: Range = (-3.0, 3.0)
    """Camera roll in degrees."""
    jpeg_quality: Optional[Tuple[int, int]] = (85, 95)
    """JPEG encode/decode round trip quality range; None = no compression."""
    shadow: float = 0.35
    """Darkness of the parts' cast shadows (0 = none)."""
    objects: Tuple[int, int] = (1, 8)
    """Number of parts per dataset frame (inclusive range)."""
    class_weights: Tuple[float, ...] = (1.0,) * len(CLASS_NAMES)
    """Relative frequency of each class, in CLASS_NAMES order."""
    belt_speed: float = 1.2
    """Belt travel per stream frame in pixels (at a 256-pixel short side)."""

    def __post_init__(self) -> None:
        for field_name in ("brightness", "blur_sigma", "scale", "tilt", "rotation_deg"):
            low, high = getattr(self, field_name)
            if not low <= high:
                raise ValueError(f"domain {self.name!r}: {field_name} range ({low}, {high}) has low > high")
        if self.brightness[0] <= 0:
            raise ValueError(f"domain {self.name!r}: brightness must be > 0")
        if self.scale[0] < 0.01 or self.scale[1] > 0.5:
            raise ValueError(f"domain {self.name!r}: scale must lie within [0.01, 0.5] of the short side")
        if self.tilt[0] < 0.0 or self.tilt[1] > 0.45:
            raise ValueError(f"domain {self.name!r}: tilt must lie within [0, 0.45]")
        if self.rotation_deg[0] < -30.0 or self.rotation_deg[1] > 30.0:
            raise ValueError(f"domain {self.name!r}: rotation_deg must lie within [-30, 30]")
        if self.blur_sigma[0] < 0 or self.motion_blur < 0 or self.noise_sigma < 0:
            raise ValueError(f"domain {self.name!r}: blur, motion blur and noise must be >= 0")
        for field_name in ("light_gradient", "vignette", "shadow", "texture_contrast"):
            if not 0.0 <= getattr(self, field_name) <= 1.0:
                raise ValueError(f"domain {self.name!r}: {field_name} must lie within [0, 1]")
        if self.belt_texture not in BELT_TEXTURES:
            raise ValueError(f"domain {self.name!r}: belt_texture {self.belt_texture!r} is not one of {BELT_TEXTURES}")
        if self.jpeg_quality is not None:
            q_low, q_high = self.jpeg_quality
            if not 1 <= q_low <= q_high <= 100:
                raise ValueError(f"domain {self.name!r}: jpeg_quality must satisfy 1 <= low <= high <= 100")
        if not 0 <= self.objects[0] <= self.objects[1] <= 32:
            raise ValueError(f"domain {self.name!r}: objects must satisfy 0 <= low <= high <= 32")
        if len(self.class_weights) != len(CLASS_NAMES) or min(self.class_weights) < 0 or sum(self.class_weights) <= 0:
            raise ValueError(
                f"domain {self.name!r}: class_weights needs {len(CLASS_NAMES)} non-negative weights, not all zero"
            )
        if self.belt_speed < 0:
            raise ValueError(f"domain {self.name!r}: belt_speed must be >= 0")


FACTORY = DomainParams(name="factory")
"""The line the demo model is trained on: even, neutral light; dark rubber belt; camera straight down."""

DRIFTED = DomainParams(
    name="drifted",
    brightness=(0.7, 0.9),
    light_gradient=0.4,
    vignette=0.35,
    color_cast=(1.3, 1.05, 0.65),
    saturation=0.85,
    belt_texture="mesh",
    belt_color=(150, 160, 140),
    texture_contrast=0.6,
    blur_sigma=(0.5, 1.0),
    motion_blur=2.5,
    noise_sigma=6.0,
    scale=(0.1, 0.17),
    tilt=(0.15, 0.3),
    rotation_deg=(-12.0, 12.0),
    jpeg_quality=(50, 75),
    shadow=0.55,
    belt_speed=2.0,
)
"""A new line after a site move: cold LED light with a blue cast and strong fall-off, a light modular
plastic mesh belt, a camera mounted at an angle and slightly out of focus, smaller parts, harder JPEG."""

NIGHT = DomainParams(
    name="night",
    brightness=(0.45, 0.6),
    light_gradient=0.3,
    vignette=0.5,
    color_cast=(1.0, 1.1, 0.9),
    saturation=0.35,
    belt_texture="slats",
    belt_color=(80, 80, 84),
    texture_contrast=0.6,
    blur_sigma=(0.3, 0.8),
    noise_sigma=11.0,
    scale=(0.12, 0.22),
    tilt=(0.05, 0.12),
    rotation_deg=(-5.0, 5.0),
    jpeg_quality=(70, 85),
    shadow=0.2,
)
"""The factory line at night: dim, noisy, nearly grey, on a slat conveyor."""

DOMAINS: Mapping[str, DomainParams] = {domain.name: domain for domain in (FACTORY, DRIFTED, NIGHT)}


def get_domain(domain: Union[str, DomainParams]) -> DomainParams:
    """Return the registered domain of that name (a DomainParams passes through unchanged).

    Raises:
        UnknownDomainError: no domain of that name; the message lists the known ones.
    """
    if isinstance(domain, DomainParams):
        return domain
    registry: Dict[str, DomainParams] = dict(DOMAINS)
    try:
        return registry[domain]
    except KeyError:
        raise UnknownDomainError(domain, list(registry)) from None
