"""Build a release (manifest + files) into a repository, and self-contained bundles for USB / MQTT push."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from agent.core.release import (
    EngineRef,
    ReleaseManifest,
    TargetRef,
    expected_from_arrays,
    parse_manifest,
    parse_semver,
)
from agent.engine import DecodeParams, Detector, OnnxRuntimeConfig
from agent.engine.model import read_model
from trainer.release.keys import KeyRing
from trainer.release.refresh import repository_lock
from trainer.release.repo import Repository, RepositoryError, sha256_file

BUNDLE_FORMAT = "edge-ota-bundle"
ROLE_FILENAMES = {
    "onnx": "model.onnx",
    "onnx_int8": "model-int8.onnx",
    "trt_calibration_cache": "calibration.cache",
    "calibration_images": "calibration-images.tar",
    "label_map": "labels.json",
}


@dataclass
class ReleaseSpec:
    """What ``edge-trainer release`` was asked to publish."""

    name: str
    version: str
    channel: str
    files: Dict[str, Path]  # role -> local file; "onnx" required
    golden: Sequence[Path] = ()
    counter: Optional[int] = None  # None: one above the highest counter in the repository
    device_types: Sequence[str] = ()
    min_agent_version: Optional[str] = None
    tensorrt: str = ""
    jetpack: str = ""
    engines: Sequence[Tuple[Path, str, str, str]] = ()  # (file, device_type, tensorrt_version, compute_capability)
    conf: float = 0.25
    iou: float = 0.7
    min_match_iou: float = 0.9
    conf_tolerance: float = 0.05
    max_latency_ms: Optional[float] = None
    health_role: str = "onnx"  # the model file devices serve: the golden expectations are recorded with it
    expected_override: Optional[Dict[int, List[Dict[str, object]]]] = field(default=None)  # tests: wrong boxes
    interface_changes: Sequence[str] = ()  # "classes" / "input_size" / "output_layout", made on purpose
    declare_interface: bool = True  # write the model's classes and input size (tests: a manifest without them)


def channel_path(channel: str) -> str:
    return f"models/channels/{channel}.json"


def _highest_counter(repo: Repository) -> int:
    try:
        targets = repo.load("trainer").signed.targets
    except RepositoryError:
        return 0
    best = 0
    for path in targets:
        parts = path.split("/")
        if len(parts) == 4 and parts[0] == "models" and parts[3] == "release.json" and parts[2].isdigit():
            best = max(best, int(parts[2]))
    return best


def default_golden_images(directory: Path, count: int = 2, size: Tuple[int, int] = (96, 128)) -> List[Path]:
    """Deterministic textured images when no golden set is given (checks load, run, determinism, latency)."""
    import cv2  # noqa: PLC0415 (OpenCV: heavy, and the edge install may have its own build)

    rng = np.random.default_rng(1234)
    paths = []
    for i in range(count):
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        path = directory / f"golden-{i}.png"
        cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def record_expected(model: Path, images: Sequence[Path], conf: float, iou: float) -> List[List[Dict[str, object]]]:
    """Run the release's own model on the golden images with the agent's engine, in its portable arithmetic.

    Portable: ONNX Runtime with graph optimisations off, every operator as the graph defines it, which is what
    the device's health check compares with (agent/ota/health.py). The optimised run of a QDQ INT8 model uses
    integer kernels that differ per CPU (AVX2 without VNNI saturates where this host's VNNI does not), so what
    it gives here would only hold on CPUs like this one; the portable run gives the same on every CPU.
    """
    import cv2  # noqa: PLC0415 (OpenCV: heavy, and the edge install may have its own build)

    detector = Detector.open(model, OnnxRuntimeConfig(intra_op_threads=1, graph_optimization="none"))
    try:
        out = []
        for path in images:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                raise RepositoryError(f"golden image {path} cannot be read")
            d = detector.detect([frame], DecodeParams(conf=conf, iou=iou))[0]
            out.append(
                [
                    {"xyxy": list(e.xyxy), "class_id": e.class_id, "confidence": e.confidence}
                    for e in expected_from_arrays(d.xyxy, d.confidence, d.class_id)
                ]
            )
        return out
    finally:
        detector.close()


def build_release(repo: Repository, spec: ReleaseSpec) -> ReleaseManifest:
    """Write the release's files and manifest as targets of the trainer role, and point the channel at it
    (under the repository lock: the counter and the metadata versions are read and written as one step)."""
    with repository_lock(repo.base.parent if repo.offline else repo.base):
        return _build_release(repo, spec)


def _build_release(repo: Repository, spec: ReleaseSpec) -> ReleaseManifest:
    parse_semver(spec.version)
    if "onnx" not in spec.files:
        raise RepositoryError("a release needs an 'onnx' model file")
    counter = spec.counter if spec.counter is not None else _highest_counter(repo) + 1
    base = f"models/{spec.name}/{counter}"
    content: Dict[str, bytes] = {}

    def add(target_path: str, local: Path) -> TargetRef:
        data = Path(local).read_bytes()
        content[target_path] = data

        return TargetRef(target_path, len(data), hashlib.sha256(data).hexdigest())

    files = {role: add(f"{base}/{ROLE_FILENAMES[role]}", path) for role, path in spec.files.items()}
    engines = tuple(
        EngineRef(add(f"{base}/engines/{dev}-trt{trt}-sm{cc}.engine", path), dev, trt, cc)
        for path, dev, trt, cc in spec.engines
    )
    with tempfile.TemporaryDirectory() as tmp:
        images = list(spec.golden) or default_golden_images(Path(tmp))
        if spec.health_role not in spec.files:
            raise RepositoryError(f"health_role {spec.health_role!r} is not among the release's files")
        expected = record_expected(spec.files[spec.health_role], images, spec.conf, spec.iou)
        if spec.expected_override:
            for i, boxes in spec.expected_override.items():
                expected[i] = boxes
        golden = []
        for i, (path, exp) in enumerate(zip(images, expected)):
            ref = add(f"{base}/golden/{i}{Path(path).suffix.lower()}", path)
            golden.append((ref, exp))
    model_decl: Dict[str, object] = {}
    if spec.declare_interface:
        served = read_model(spec.files.get(spec.health_role, spec.files["onnx"])).metadata
        model_decl["classes"] = [served.names[i] for i in range(served.num_classes)]
        model_decl["input_size"] = list(served.imgsz)
    if spec.interface_changes:
        model_decl["changes"] = sorted(set(spec.interface_changes))
    manifest_dict = {
        **({"model": model_decl} if model_decl else {}),
        "schema": 1,
        "name": spec.name,
        "version": spec.version,
        "counter": counter,
        "channel": spec.channel,
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "files": {role: vars(ref) for role, ref in files.items()},
        "engines": [
            {
                "target": vars(e.target),
                "device_type": e.device_type,
                "tensorrt_version": e.tensorrt_version,
                "compute_capability": e.compute_capability,
            }
            for e in engines
        ],
        "compatibility": {
            "device_types": list(spec.device_types),
            "tensorrt": spec.tensorrt,
            "jetpack": spec.jetpack,
            **({"min_agent_version": spec.min_agent_version} if spec.min_agent_version else {}),
        },
        "health": {
            "golden": [{"image": vars(ref), "expected": exp} for ref, exp in golden],
            "conf": spec.conf,
            "iou": spec.iou,
            "min_match_iou": spec.min_match_iou,
            "conf_tolerance": spec.conf_tolerance,
            "max_latency_ms": spec.max_latency_ms,
            "allow_extra": False,
        },
    }
    data = (json.dumps(manifest_dict, indent=2, sort_keys=True) + "\n").encode()
    manifest = parse_manifest(data)  # the device's parser is the format's definition
    content[f"{base}/release.json"] = data
    content[channel_path(spec.channel)] = data
    repo.add_targets(content)
    return manifest


def build_bundle(
    repo_path: Path,
    ring: KeyRing,
    out: Path,
    channel: str = "stable",
    manifest_path: Optional[str] = None,
    trust: str = "offline",
    now: Optional[dt.datetime] = None,
) -> Path:
    """Write a self-contained bundle (directory, or a tar file when ``out`` ends in ``.tar``).

    ``trust="offline"`` (USB): the release's targets are signed into the long-lived offline repository.
    ``trust="online"`` (MQTT push): the online repository's current metadata travels with the files.
    """
    online = Repository(repo_path, ring, now=now)
    manifest_target = manifest_path or channel_path(channel)
    data = online.target_bytes(manifest_target)
    manifest = parse_manifest(data)
    release_target = f"models/{manifest.name}/{manifest.counter}/release.json"
    files = {release_target: data}
    for ref in manifest.targets():
        files[ref.path] = online.target_bytes(ref.path)
    if trust == "offline":
        source = Repository(repo_path, ring, offline=True, now=now)
        if not source.latest_version("root"):
            source.init()
        source.add_targets(files)
    elif trust == "online":
        source = online
    else:
        raise RepositoryError(f"trust must be 'offline' or 'online', not {trust!r}")
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "bundle"
        source.copy_metadata_to(stage / "metadata")
        for target_path, content in files.items():
            directory, _, name = target_path.rpartition("/")

            dest = stage / "targets" / directory / f"{hashlib.sha256(content).hexdigest()}.{name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
        (stage / "bundle.json").write_text(
            json.dumps({"format": BUNDLE_FORMAT, "version": 1, "trust": trust, "manifest": release_target}, indent=2)
            + "\n"
        )
        out = Path(out)
        if out.suffix == ".tar":
            out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(out, "w") as tar:
                for p in sorted(stage.rglob("*")):
                    tar.add(p, arcname=str(p.relative_to(stage)), recursive=False)
        else:
            if out.exists() and any(out.iterdir()):
                raise RepositoryError(f"{out} exists and is not empty")

            shutil.copytree(stage, out, dirs_exist_ok=True)
    return out


def sha256_of(path: Path) -> str:
    return sha256_file(path)
