"""Release manifests: parsing and the pure checks the installer applies before it trusts a release.

A release manifest is a JSON TUF target (``release.json``) written by ``edge-trainer release``. The device
only parses it *after* its length and hashes were verified against signed TUF metadata; everything here is
pure (bytes in, dataclasses out, ``ReleaseError`` on anything invalid) and knows nothing of TUF, files or
runtimes.

Errors, split by fault (each has a stable ``reason`` code the daemon reports)::

    ReleaseError (ValueError)          reason
    ├── ManifestError                  "manifest_invalid"      the manifest is malformed
    ├── IncompatibleReleaseError       "incompatible"          not for this device (``.what`` says why)
    └── RollbackFloorError             "below_floor"           counter below the anti-rollback floor

Version constraints are small on purpose: ``">=8.5,<11"`` style comma-joined comparisons of dotted
numeric versions (TensorRT, JetPack), and semantic versions ``MAJOR.MINOR.PATCH[-pre][+build]`` for the
release and the agent.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from agent.core.nms import box_iou

MANIFEST_SCHEMA = 1
"""Version of the manifest format this agent reads."""

MAX_MANIFEST_BYTES = 1024 * 1024
"""A manifest above this size is refused before ``json.loads`` sees it."""

FILE_ROLES = ("onnx", "onnx_int8", "trt_calibration_cache", "calibration_images", "label_map")
"""Roles a release file can play; ``onnx`` is required."""

INTERFACE_CHANGES = ("classes", "input_size", "output_layout")
"""The model interface changes a manifest can declare (``model.changes``; see ``agent.core.interface``)."""

MAX_CLASSES = 10_000
MAX_GOLDEN_IMAGES = 64
MAX_EXPECTED_PER_IMAGE = 300

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TARGET_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SEMVER_RE = re.compile(
    r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_DOTTED_RE = re.compile(r"^\d{1,6}(?:\.\d{1,6}){0,3}$")
_CONSTRAINT_RE = re.compile(r"^(>=|<=|==|!=|>|<)\s*(\d{1,6}(?:\.\d{1,6}){0,3})$")


class ReleaseError(ValueError):
    """Base of release-manifest errors; ``reason`` is a stable code for reports."""

    reason = "release_invalid"


class ManifestError(ReleaseError):
    """The manifest is malformed (bad JSON, missing or out-of-range fields)."""

    reason = "manifest_invalid"


class IncompatibleReleaseError(ReleaseError):
    """The release is not meant for this device; ``what`` names the failed constraint."""

    reason = "incompatible"

    def __init__(self, message: str, what: str) -> None:
        super().__init__(message)
        self.what = what


class RollbackFloorError(ReleaseError):
    """The release counter is below the device's anti-rollback floor."""

    reason = "below_floor"

    def __init__(self, counter: int, floor: int) -> None:
        super().__init__(f"release counter {counter} is below the anti-rollback floor {floor}")
        self.counter = counter
        self.floor = floor


# --------------------------------------------------------------------------------------------- versions


@dataclass(frozen=True, order=False)
class SemVer:
    """A semantic version; ordering follows semver.org (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: Tuple[str, ...] = ()
    build: str = ""

    def _key(self) -> Tuple[Any, ...]:
        # A release sorts after its prereleases; numeric identifiers sort numerically, before alphanumerics.
        pre: Tuple[Any, ...] = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __lt__(self, other: SemVer) -> bool:
        return self._key() < other._key()

    def __le__(self, other: SemVer) -> bool:
        return self._key() <= other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + self.build
        return text


def parse_semver(text: str) -> SemVer:
    """Parse ``MAJOR.MINOR.PATCH[-pre][+build]``; raises :class:`ManifestError`."""
    m = _SEMVER_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ManifestError(f"not a semantic version: {text!r}")
    pre = tuple(m.group(4).split(".")) if m.group(4) else ()
    return SemVer(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, m.group(5) or "")


def _dotted(text: str) -> Tuple[int, ...]:
    if not _DOTTED_RE.match(text):
        raise ManifestError(f"not a dotted numeric version: {text!r}")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


@dataclass(frozen=True)
class VersionRange:
    """Comma-joined comparisons of dotted numeric versions, e.g. ``">=8.5,<11"``; empty matches all."""

    clauses: Tuple[Tuple[str, Tuple[int, ...]], ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        if not isinstance(text, str) or len(text) > 200:
            raise ManifestError(f"version constraint must be a short string, got {text!r}")
        clauses = []
        for raw in (c.strip() for c in text.split(",")):
            if not raw:
                continue
            m = _CONSTRAINT_RE.match(raw)
            if m is None:
                raise ManifestError(f"bad version constraint {raw!r} (expected e.g. '>=8.5')")
            clauses.append((m.group(1), _dotted(m.group(2))))
        return cls(tuple(clauses), text)

    def contains(self, version: str) -> bool:
        """Whether dotted ``version`` satisfies every clause; raises :class:`ManifestError` if malformed."""
        v = _dotted(version)
        ops = {
            ">=": v.__ge__,
            "<=": v.__le__,
            "==": v.__eq__,
            "!=": v.__ne__,
            ">": v.__gt__,
            "<": v.__lt__,
        }
        return all(ops[op](bound) for op, bound in self.clauses)


# --------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class TargetRef:
    """A file of the release: its TUF target path and the length and SHA-256 the manifest pins."""

    path: str
    length: int
    sha256: str


@dataclass(frozen=True)
class EngineRef:
    """A prebuilt TensorRT engine, valid only for one device type, TensorRT version and GPU."""

    target: TargetRef
    device_type: str
    tensorrt_version: str
    compute_capability: str


@dataclass(frozen=True)
class Compatibility:
    """Which devices may install the release (empty ``device_types``: any)."""

    device_types: Tuple[str, ...] = ()
    min_agent_version: Optional[SemVer] = None
    tensorrt: VersionRange = field(default_factory=VersionRange)
    jetpack: VersionRange = field(default_factory=VersionRange)


@dataclass(frozen=True)
class ExpectedDetection:
    """One detection the model must reproduce on a golden image (pixels of that image)."""

    xyxy: Tuple[float, float, float, float]
    class_id: int
    confidence: float


@dataclass(frozen=True)
class GoldenImage:
    """A golden input image (a TUF target) and the detections the release must produce on it."""

    target: TargetRef
    expected: Tuple[ExpectedDetection, ...]


@dataclass(frozen=True)
class HealthSpec:
    """How the device decides that an installed release works.

    Attributes:
        golden: images with their expected detections.
        conf: decode confidence threshold used for the golden run.
        iou: NMS IoU threshold used for the golden run.
        min_match_iou: an expected box is matched by a detection of the same class with at least this IoU.
        conf_tolerance: the matched detection's confidence may differ by at most this much.
        max_latency_ms: median inference time per golden image must stay below this (``None``: no limit).
        allow_extra: detections not in the expected list are tolerated (default: they fail the check).
    """

    golden: Tuple[GoldenImage, ...]
    conf: float = 0.25
    iou: float = 0.7
    min_match_iou: float = 0.9
    conf_tolerance: float = 0.05
    max_latency_ms: Optional[float] = None
    allow_extra: bool = False


@dataclass(frozen=True)
class ModelDeclaration:
    """What the manifest says about its model's interface (``model``; optional, absent in older manifests).

    Attributes:
        classes: the class names (index = id) the model file must carry; ``None``: not declared.
        input_size: the ``(height, width)`` the model file must take; ``None``: not declared.
        changes: interface changes against the previous release that the publisher made on purpose
            (subset of :data:`INTERFACE_CHANGES`); a device refuses any other change.
    """

    classes: Optional[Tuple[str, ...]] = None
    input_size: Optional[Tuple[int, int]] = None
    changes: FrozenSet[str] = frozenset()


@dataclass(frozen=True)
class ReleaseManifest:
    """A parsed, structurally valid release manifest (see :func:`parse_manifest`)."""

    name: str
    version: SemVer
    counter: int
    channel: str
    created: str
    files: Dict[str, TargetRef]
    engines: Tuple[EngineRef, ...]
    compatibility: Compatibility
    health: HealthSpec
    schema: int = MANIFEST_SCHEMA
    model: ModelDeclaration = field(default_factory=ModelDeclaration)

    def served_file(self, role: str) -> TargetRef:
        """The model file a device serves for ``role`` (``ota.health.model_role``), else the required ONNX."""
        return self.files.get(role) or self.files["onnx"]

    def targets(self) -> List[TargetRef]:
        """Every file the release consists of (models, engines, golden images), manifest excluded."""
        refs = list(self.files.values()) + [e.target for e in self.engines] + [g.target for g in self.health.golden]
        seen: Dict[str, TargetRef] = {}
        for ref in refs:
            seen.setdefault(ref.path, ref)
        return list(seen.values())


def _obj(raw: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Dict[str, Any]:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected an object")
    extra = sorted(set(raw) - set(allowed))
    if extra:
        raise ManifestError(f"{where}: unknown field(s) {extra}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {missing}")
    return raw


def _str(raw: Any, where: str, pattern: Optional[re.Pattern[str]] = None, max_len: int = 256) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > max_len:
        raise ManifestError(f"{where}: expected a non-empty string of at most {max_len} characters")
    if pattern is not None and not pattern.match(raw):
        raise ManifestError(f"{where}: {raw!r} has characters or a shape that are not allowed")
    return raw


def _int(raw: Any, where: str, lo: int = 0, hi: int = 2**62) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not lo <= raw <= hi:
        raise ManifestError(f"{where}: expected an integer in [{lo}, {hi}]")
    return int(raw)


def _float(raw: Any, where: str, lo: float, hi: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or not lo <= raw <= hi:
        raise ManifestError(f"{where}: expected a number in [{lo}, {hi}]")
    return float(raw)


def validate_target_path(path: Any, where: str = "target path") -> str:
    """A TUF target path: relative, ``/``-separated, plain segments (no ``..``, no empty segment)."""
    text = _str(path, where, max_len=512)
    segments = text.split("/")
    if any(not _TARGET_SEGMENT_RE.match(s) or s in (".", "..") for s in segments):
        raise ManifestError(f"{where}: {text!r} is not a plain relative path")
    return text


def _target(raw: Any, where: str) -> TargetRef:
    obj = _obj(raw, where, ("path", "length", "sha256"), ("path", "length", "sha256"))
    return TargetRef(
        path=validate_target_path(obj["path"], f"{where}.path"),
        length=_int(obj["length"], f"{where}.length", 0, 2**40),
        sha256=_str(obj["sha256"], f"{where}.sha256", _SHA256_RE, 64),
    )


def _expected(raw: Any, where: str) -> ExpectedDetection:
    obj = _obj(raw, where, ("xyxy", "class_id", "confidence"), ("xyxy", "class_id", "confidence"))
    box = obj["xyxy"]
    if not isinstance(box, list) or len(box) != 4:
        raise ManifestError(f"{where}.xyxy: expected 4 numbers")
    x1, y1, x2, y2 = (_float(v, f"{where}.xyxy", -1e6, 1e6) for v in box)
    if x2 < x1 or y2 < y1:
        raise ManifestError(f"{where}.xyxy: corners out of order")
    return ExpectedDetection(
        (x1, y1, x2, y2),
        _int(obj["class_id"], f"{where}.class_id", 0, 100_000),
        _float(obj["confidence"], f"{where}.confidence", 0.0, 1.0),
    )


def _health(raw: Any) -> HealthSpec:
    keys = ("golden", "conf", "iou", "min_match_iou", "conf_tolerance", "max_latency_ms", "allow_extra")
    obj = _obj(raw, "health", keys, ("golden",))
    golden_raw = obj["golden"]
    if not isinstance(golden_raw, list) or not 1 <= len(golden_raw) <= MAX_GOLDEN_IMAGES:
        raise ManifestError(f"health.golden: expected 1 to {MAX_GOLDEN_IMAGES} images")
    golden = []
    for i, g in enumerate(golden_raw):
        where = f"health.golden[{i}]"
        gobj = _obj(g, where, ("image", "expected"), ("image", "expected"))
        exp = gobj["expected"]
        if not isinstance(exp, list) or len(exp) > MAX_EXPECTED_PER_IMAGE:
            raise ManifestError(f"{where}.expected: expected a list of at most {MAX_EXPECTED_PER_IMAGE}")
        golden.append(
            GoldenImage(
                _target(gobj["image"], f"{where}.image"),
                tuple(_expected(e, f"{where}.expected[{j}]") for j, e in enumerate(exp)),
            )
        )
    latency = obj.get("max_latency_ms")
    allow_extra = obj.get("allow_extra", False)
    if not isinstance(allow_extra, bool):
        raise ManifestError("health.allow_extra: expected a boolean")
    return HealthSpec(
        golden=tuple(golden),
        conf=_float(obj.get("conf", 0.25), "health.conf", 0.0, 1.0),
        iou=_float(obj.get("iou", 0.7), "health.iou", 0.0, 1.0),
        min_match_iou=_float(obj.get("min_match_iou", 0.9), "health.min_match_iou", 0.0, 1.0),
        conf_tolerance=_float(obj.get("conf_tolerance", 0.05), "health.conf_tolerance", 0.0, 1.0),
        max_latency_ms=None if latency is None else _float(latency, "health.max_latency_ms", 0.0, 1e6),
        allow_extra=allow_extra,
    )


def _compatibility(raw: Any) -> Compatibility:
    obj = _obj(raw, "compatibility", ("device_types", "min_agent_version", "tensorrt", "jetpack"))
    types = obj.get("device_types", [])
    if not isinstance(types, list) or len(types) > 64:
        raise ManifestError("compatibility.device_types: expected a list of at most 64 names")
    mav = obj.get("min_agent_version")
    return Compatibility(
        device_types=tuple(_str(t, "compatibility.device_types[]", _NAME_RE, 128) for t in types),
        min_agent_version=None if mav is None else parse_semver(mav),
        tensorrt=VersionRange.parse(obj.get("tensorrt", "")),
        jetpack=VersionRange.parse(obj.get("jetpack", "")),
    )


def _model_declaration(raw: Any) -> ModelDeclaration:
    obj = _obj(raw, "model", ("classes", "input_size", "changes"))
    classes: Optional[Tuple[str, ...]] = None
    if "classes" in obj:
        names = obj["classes"]
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_CLASSES:
            raise ManifestError(f"model.classes: expected a list of 1 to {MAX_CLASSES} class names")
        classes = tuple(_str(n, "model.classes[]", max_len=128) for n in names)
    size: Optional[Tuple[int, int]] = None
    if "input_size" in obj:
        hw = obj["input_size"]
        if not isinstance(hw, list) or len(hw) != 2:
            raise ManifestError("model.input_size: expected [height, width]")
        size = (_int(hw[0], "model.input_size", 1, 16384), _int(hw[1], "model.input_size", 1, 16384))
    changes = obj.get("changes", [])
    if not isinstance(changes, list) or any(c not in INTERFACE_CHANGES for c in changes):
        raise ManifestError(f"model.changes: expected a list of {list(INTERFACE_CHANGES)}")
    return ModelDeclaration(classes, size, frozenset(changes))


def parse_manifest(data: bytes) -> ReleaseManifest:
    """Parse and validate manifest bytes (already hash-verified by the caller).

    Raises:
        ManifestError: too large, not UTF-8 JSON, unknown schema, or any field invalid.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(data)} bytes, above the {MAX_MANIFEST_BYTES} byte limit")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"manifest is not UTF-8 JSON: {exc}") from None
    keys = (
        "schema",
        "name",
        "version",
        "counter",
        "channel",
        "created",
        "files",
        "engines",
        "compatibility",
        "health",
        "model",
    )
    obj = _obj(raw, "manifest", keys, ("schema", "name", "version", "counter", "channel", "files", "health"))
    schema = _int(obj["schema"], "schema", 1, 1000)
    if schema != MANIFEST_SCHEMA:
        raise ManifestError(f"manifest schema {schema} is not supported (this agent reads {MANIFEST_SCHEMA})")
    files_raw = _obj(obj["files"], "files", FILE_ROLES, ("onnx",))
    files = {role: _target(ref, f"files.{role}") for role, ref in files_raw.items()}
    engines_raw = obj.get("engines", [])
    if not isinstance(engines_raw, list) or len(engines_raw) > 64:
        raise ManifestError("engines: expected a list of at most 64 engines")
    engines = []
    for i, e in enumerate(engines_raw):
        where = f"engines[{i}]"
        eobj = _obj(
            e,
            where,
            ("target", "device_type", "tensorrt_version", "compute_capability"),
            ("target", "device_type", "tensorrt_version", "compute_capability"),
        )
        engines.append(
            EngineRef(
                _target(eobj["target"], f"{where}.target"),
                _str(eobj["device_type"], f"{where}.device_type", _NAME_RE, 128),
                _str(eobj["tensorrt_version"], f"{where}.tensorrt_version", _DOTTED_RE, 32),
                _str(eobj["compute_capability"], f"{where}.compute_capability", _DOTTED_RE, 16),
            )
        )
    return ReleaseManifest(
        name=_str(obj["name"], "name", _NAME_RE, 128),
        version=parse_semver(obj["version"]),
        counter=_int(obj["counter"], "counter", 0, 2**62),
        channel=_str(obj["channel"], "channel", _NAME_RE, 128),
        created=_str(obj.get("created", "unknown"), "created", max_len=64),
        files=files,
        engines=tuple(engines),
        compatibility=_compatibility(obj.get("compatibility", {})),
        health=_health(obj["health"]),
        schema=schema,
        model=_model_declaration(obj.get("model", {})),
    )


def manifest_to_dict(m: ReleaseManifest) -> Dict[str, Any]:
    """The JSON-ready form of a manifest (the inverse of :func:`parse_manifest`)."""

    def ref(t: TargetRef) -> Dict[str, Any]:
        return {"path": t.path, "length": t.length, "sha256": t.sha256}

    c = m.compatibility
    compat: Dict[str, Any] = {
        "device_types": list(c.device_types),
        "tensorrt": c.tensorrt.text,
        "jetpack": c.jetpack.text,
    }
    if c.min_agent_version is not None:
        compat["min_agent_version"] = str(c.min_agent_version)
    h = m.health
    model: Dict[str, Any] = {}
    if m.model.classes is not None:
        model["classes"] = list(m.model.classes)
    if m.model.input_size is not None:
        model["input_size"] = list(m.model.input_size)
    if m.model.changes:
        model["changes"] = sorted(m.model.changes)
    return {
        **({"model": model} if model else {}),
        "schema": m.schema,
        "name": m.name,
        "version": str(m.version),
        "counter": m.counter,
        "channel": m.channel,
        "created": m.created,
        "files": {role: ref(t) for role, t in m.files.items()},
        "engines": [
            {
                "target": ref(e.target),
                "device_type": e.device_type,
                "tensorrt_version": e.tensorrt_version,
                "compute_capability": e.compute_capability,
            }
            for e in m.engines
        ],
        "compatibility": compat,
        "health": {
            "golden": [
                {
                    "image": ref(g.target),
                    "expected": [
                        {"xyxy": list(e.xyxy), "class_id": e.class_id, "confidence": e.confidence} for e in g.expected
                    ],
                }
                for g in h.golden
            ],
            "conf": h.conf,
            "iou": h.iou,
            "min_match_iou": h.min_match_iou,
            "conf_tolerance": h.conf_tolerance,
            "max_latency_ms": h.max_latency_ms,
            "allow_extra": h.allow_extra,
        },
    }


# --------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class DeviceProfile:
    """What the device is, for compatibility checks and engine selection."""

    device_type: str
    agent_version: str
    tensorrt_version: Optional[str] = None
    jetpack_version: Optional[str] = None
    compute_capability: Optional[str] = None


def check_compatibility(manifest: ReleaseManifest, device: DeviceProfile) -> None:
    """Raise :class:`IncompatibleReleaseError` unless ``device`` satisfies the release's constraints.

    A TensorRT / JetPack constraint is only enforced on devices that have TensorRT / JetPack: an x86 box
    running ONNX Runtime ignores it.
    """
    c = manifest.compatibility
    if c.device_types and device.device_type not in c.device_types:
        raise IncompatibleReleaseError(
            f"release is for device types {list(c.device_types)}, this is {device.device_type!r}", "device_type"
        )
    if c.min_agent_version is not None and parse_semver(device.agent_version) < c.min_agent_version:
        raise IncompatibleReleaseError(
            f"release needs agent >= {c.min_agent_version}, this is {device.agent_version}", "agent_version"
        )
    if device.tensorrt_version is not None and not c.tensorrt.contains(device.tensorrt_version):
        raise IncompatibleReleaseError(
            f"release needs TensorRT {c.tensorrt.text!r}, this has {device.tensorrt_version}", "tensorrt"
        )
    if device.jetpack_version is not None and not c.jetpack.contains(device.jetpack_version):
        raise IncompatibleReleaseError(
            f"release needs JetPack {c.jetpack.text!r}, this has {device.jetpack_version}", "jetpack"
        )


def check_rollback_floor(counter: int, floor: int) -> None:
    """Refuse a release whose counter is below ``floor`` (equal is allowed: a reinstall of the committed one)."""
    if counter < floor:
        raise RollbackFloorError(counter, floor)


def select_engine(manifest: ReleaseManifest, device: DeviceProfile) -> Optional[EngineRef]:
    """The prebuilt engine matching this device exactly, or ``None`` (the device then builds its own)."""
    for e in manifest.engines:
        if (
            e.device_type == device.device_type
            and device.tensorrt_version is not None
            and _dotted(e.tensorrt_version) == _dotted(device.tensorrt_version)
            and e.compute_capability == device.compute_capability
        ):
            return e
    return None


def compare_detections(
    expected: Sequence[ExpectedDetection],
    xyxy: NDArray[Any],
    confidence: NDArray[Any],
    class_id: NDArray[Any],
    spec: HealthSpec,
) -> List[str]:
    """Match actual detections against the expected ones; return the mismatches (empty: healthy).

    Greedy one-to-one matching, most confident expected box first: an expected box is matched by the
    unused detection of the same class with the highest IoU, which must reach ``spec.min_match_iou`` and
    have a confidence within ``spec.conf_tolerance``.

    A confidence may move by the tolerance, so it may cross the decode threshold ``spec.conf`` too: an expected
    detection below ``spec.conf + spec.conf_tolerance`` is optional (it need not be found; found, it must
    match), and an actual detection below that line that matches nothing is not unexpected. Above it, both
    still fail.

    Args:
        expected: the manifest's expected detections for one image.
        xyxy: ``(N, 4)`` actual boxes; confidence ``(N,)``; class_id ``(N,)``.
    """
    problems: List[str] = []
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    confidence = np.asarray(confidence, np.float32).reshape(-1)
    class_id = np.asarray(class_id).reshape(-1)
    used = np.zeros(len(xyxy), dtype=bool)
    order = sorted(range(len(expected)), key=lambda i: -expected[i].confidence)
    exp_boxes = np.asarray([e.xyxy for e in expected], np.float32).reshape(-1, 4)
    ious = box_iou(exp_boxes, xyxy)
    firm = spec.conf + spec.conf_tolerance  # at or above: on this side of the threshold on any hardware
    for i in order:
        e = expected[i]
        optional = e.confidence < firm
        candidates = (~used) & (class_id == e.class_id)
        if not candidates.any():
            if not optional:
                problems.append(f"expected class {e.class_id} at {list(e.xyxy)}: no detection of that class")
            continue
        row = np.where(candidates, ious[i], -1.0)
        j = int(np.argmax(row))
        if row[j] < spec.min_match_iou:
            if not optional:
                problems.append(
                    f"expected class {e.class_id} at {list(e.xyxy)}: best IoU {float(row[j]):.3f} < "
                    f"{spec.min_match_iou}"
                )
            continue
        if abs(float(confidence[j]) - e.confidence) > spec.conf_tolerance:
            problems.append(
                f"expected class {e.class_id} at {list(e.xyxy)}: confidence {float(confidence[j]):.3f} vs "
                f"{e.confidence:.3f} (tolerance {spec.conf_tolerance})"
            )
        used[j] = True
    extra = (~used) & (confidence >= firm)
    if not spec.allow_extra and extra.any():
        problems.append(f"{int(extra.sum())} unexpected detection(s) (confidence >= {firm:.3f})")
    return problems


def expected_from_arrays(
    xyxy: NDArray[Any], confidence: NDArray[Any], class_id: NDArray[Any]
) -> Tuple[ExpectedDetection, ...]:
    """Expected detections recorded from a model run (the trainer's side of the golden images)."""
    return tuple(
        ExpectedDetection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), int(c), float(s))
        for b, s, c in zip(
            np.asarray(xyxy).reshape(-1, 4), np.asarray(confidence).reshape(-1), np.asarray(class_id).reshape(-1)
        )
    )


def release_label(m: ReleaseManifest) -> str:
    """``name version (#counter)`` for messages."""
    return f"{m.name} {m.version} (#{m.counter})"


def as_mapping(m: ReleaseManifest) -> Mapping[str, Any]:
    """Short identification of a release for reports (matches the protocol's ReleaseRef)."""
    return {"name": m.name, "version": str(m.version), "counter": m.counter}
