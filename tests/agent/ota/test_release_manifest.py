"""Pure release-manifest checks (agent.core.release): table-driven."""

from __future__ import annotations

import json
from typing import Any, Dict

import numpy as np
import pytest

from agent.core.release import (
    DeviceProfile,
    ExpectedDetection,
    HealthSpec,
    IncompatibleReleaseError,
    ManifestError,
    RollbackFloorError,
    VersionRange,
    check_compatibility,
    check_rollback_floor,
    compare_detections,
    manifest_to_dict,
    parse_manifest,
    parse_semver,
    select_engine,
)

SHA = "a" * 64


def manifest(**over: Any) -> Dict[str, Any]:
    m: Dict[str, Any] = {
        "schema": 1,
        "name": "widget",
        "version": "1.2.3",
        "counter": 7,
        "channel": "stable",
        "files": {"onnx": {"path": "models/widget/7/model.onnx", "length": 10, "sha256": SHA}},
        "engines": [
            {
                "target": {"path": "models/widget/7/e.engine", "length": 5, "sha256": SHA},
                "device_type": "orin",
                "tensorrt_version": "8.6.2",
                "compute_capability": "8.7",
            }
        ],
        "compatibility": {"device_types": ["x86-cpu", "orin"], "min_agent_version": "0.1.0", "tensorrt": ">=8.5,<11"},
        "health": {
            "golden": [
                {
                    "image": {"path": "models/widget/7/golden/0.png", "length": 3, "sha256": SHA},
                    "expected": [{"xyxy": [1, 2, 30, 40], "class_id": 0, "confidence": 0.9}],
                }
            ]
        },
    }
    m.update(over)
    return m


def enc(m: Dict[str, Any]) -> bytes:
    return json.dumps(m).encode()


def test_roundtrip() -> None:
    m = parse_manifest(enc(manifest()))
    assert (m.name, str(m.version), m.counter) == ("widget", "1.2.3", 7)
    assert parse_manifest(json.dumps(manifest_to_dict(m)).encode()) == m
    assert {t.path for t in m.targets()} == {
        "models/widget/7/model.onnx",
        "models/widget/7/e.engine",
        "models/widget/7/golden/0.png",
    }


def test_model_declaration_roundtrip() -> None:
    decl = {"classes": ["bolt", "nut"], "input_size": [256, 320], "changes": ["input_size", "classes"]}
    m = parse_manifest(enc(manifest(model=decl)))
    assert m.model.classes == ("bolt", "nut") and m.model.input_size == (256, 320)
    assert m.model.changes == {"classes", "input_size"}
    assert parse_manifest(json.dumps(manifest_to_dict(m)).encode()) == m
    assert parse_manifest(enc(manifest())).model.changes == frozenset()  # older manifests: nothing declared


@pytest.mark.parametrize(
    ("over", "fragment"),
    [
        ({"schema": 2}, "schema 2"),
        ({"version": "1.2"}, "semantic version"),
        ({"counter": -1}, "counter"),
        ({"counter": True}, "counter"),
        ({"name": "../x"}, "name"),
        ({"extra": 1}, "unknown field"),
        ({"files": {}}, "missing field"),
        ({"files": {"onnx": {"path": "../../etc/passwd", "length": 1, "sha256": SHA}}}, "plain relative path"),
        ({"files": {"onnx": {"path": "/abs/model.onnx", "length": 1, "sha256": SHA}}}, "plain relative path"),
        ({"files": {"onnx": {"path": "m/model.onnx", "length": 1, "sha256": "xyz"}}}, "sha256"),
        ({"files": {"exe": {"path": "m/a", "length": 1, "sha256": SHA}}}, "unknown field"),
        ({"health": {"golden": []}}, "golden"),
        ({"compatibility": {"tensorrt": "~=8"}}, "constraint"),
        ({"model": {"classes": []}}, "model.classes"),
        ({"model": {"classes": ["bolt", ""]}}, "model.classes"),
        ({"model": {"classes": "bolt"}}, "model.classes"),
        ({"model": {"input_size": [256]}}, "model.input_size"),
        ({"model": {"input_size": [0, 256]}}, "model.input_size"),
        ({"model": {"changes": ["weights"]}}, "model.changes"),
        ({"model": {"changes": "classes"}}, "model.changes"),
        ({"model": {"layout": "raw"}}, "unknown field"),
    ],
)
def test_invalid_manifests(over: Dict[str, Any], fragment: str) -> None:
    with pytest.raises(ManifestError, match=fragment):
        parse_manifest(enc(manifest(**over)))


@pytest.mark.parametrize("data", [b"\xff\xfe", b"[1,2]", b"{", b"x" * (1024 * 1024 + 1)])
def test_garbage(data: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.9.0", "1.10.0"),
        ("1.0.0+build", "1.0.1"),
    ],
)
def test_semver_order(a: str, b: str) -> None:
    assert parse_semver(a) < parse_semver(b)
    assert not parse_semver(b) < parse_semver(a)


@pytest.mark.parametrize(
    ("rng", "version", "ok"),
    [
        (">=8.5,<11", "8.6.2", True),
        (">=8.5,<11", "8.4", False),
        (">=8.5,<11", "11.0", False),
        ("", "1", True),
        ("==10.3", "10.3.0", True),
        ("!=10.3", "10.3", False),
    ],
)
def test_version_range(rng: str, version: str, ok: bool) -> None:
    assert VersionRange.parse(rng).contains(version) is ok


@pytest.mark.parametrize(
    ("device", "what"),
    [
        (DeviceProfile("x86-cpu", "0.1.0"), None),
        (DeviceProfile("xavier-nx", "0.1.0"), "device_type"),
        (DeviceProfile("x86-cpu", "0.0.9"), "agent_version"),
        (DeviceProfile("orin", "0.1.0", tensorrt_version="8.4.1"), "tensorrt"),
        (DeviceProfile("orin", "0.1.0", tensorrt_version="8.6.2"), None),
    ],
)
def test_compatibility(device: DeviceProfile, what: Any) -> None:
    m = parse_manifest(enc(manifest()))
    if what is None:
        check_compatibility(m, device)
    else:
        with pytest.raises(IncompatibleReleaseError) as info:
            check_compatibility(m, device)
        assert info.value.what == what and info.value.reason == "incompatible"


def test_floor() -> None:
    check_rollback_floor(5, 5)
    with pytest.raises(RollbackFloorError) as info:
        check_rollback_floor(4, 5)
    assert info.value.reason == "below_floor"


def test_engine_selection() -> None:
    m = parse_manifest(enc(manifest()))
    assert select_engine(m, DeviceProfile("orin", "0.1.0", "8.6.2", compute_capability="8.7")) is not None
    assert select_engine(m, DeviceProfile("orin", "0.1.0", "8.6.1", compute_capability="8.7")) is None
    assert select_engine(m, DeviceProfile("orin", "0.1.0", None, compute_capability="8.7")) is None


EXP = (ExpectedDetection((10, 10, 50, 50), 0, 0.8), ExpectedDetection((60, 60, 90, 90), 1, 0.5))
SPEC = HealthSpec(golden=(), min_match_iou=0.9, conf_tolerance=0.05)


@pytest.mark.parametrize(
    ("boxes", "conf", "cls", "n_problems"),
    [
        ([[10, 10, 50, 50], [60, 60, 90, 90]], [0.8, 0.5], [0, 1], 0),
        ([[60.5, 60, 90, 90], [10, 10.5, 50, 50]], [0.52, 0.79], [1, 0], 0),  # order-free, within tolerance
        ([[10, 10, 50, 50]], [0.8], [0], 1),  # one missing
        ([[10, 10, 50, 50], [60, 60, 90, 90]], [0.8, 0.5], [0, 0], 2),  # wrong class (+ it is extra)
        ([[10, 10, 50, 50], [70, 70, 100, 100]], [0.8, 0.5], [0, 1], 2),  # moved box (+ it is extra)
        ([[10, 10, 50, 50], [60, 60, 90, 90]], [0.8, 0.7], [0, 1], 1),  # confidence drift
        ([[10, 10, 50, 50], [60, 60, 90, 90], [0, 0, 5, 5]], [0.8, 0.5, 0.3], [0, 1, 0], 1),  # extra
    ],
)
def test_compare_detections(boxes: Any, conf: Any, cls: Any, n_problems: int) -> None:
    problems = compare_detections(EXP, np.array(boxes, np.float32), np.array(conf, np.float32), np.array(cls), SPEC)
    assert len(problems) == n_problems, problems
