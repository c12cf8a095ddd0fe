"""Health check: load the installed model in the real backend, run the golden images, compare, time it.

Two comparisons: with the detections the release recorded for its own golden images (does it run as its
publisher saw it run?), and, when the device runs a model already, with that *current* model on every
golden image the device trusts (:class:`ReferenceCheck`): expectations a release recorded from itself
cannot vouch for it alone.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from agent.core.interface import reference_agreement
from agent.core.release import ReleaseManifest, compare_detections
from agent.ota.errors import HealthCheckFailed

MAX_GOLDEN_PIXELS = 4096 * 4096


@dataclass
class HealthReport:
    """What the health check measured."""

    passed: bool
    problems: List[str] = field(default_factory=list)
    latency_ms: Optional[float] = None
    model_sha256: str = ""
    agreement: Optional[float] = None


@dataclass(frozen=True)
class ReferenceCheck:
    """Compare the candidate with the model the device runs now.

    Attributes:
        model: the current model file.
        images: golden images the device trusts besides the candidate's (the active release's).
        min_agreement: share of the reference's confident detections the candidate must find.
        conf: reference detections at or above this count; the candidate is decoded at half of it.
        iou: IoU at which boxes match.
    """

    model: Path
    images: Sequence[Path] = ()
    min_agreement: float = 0.5
    conf: float = 0.5
    iou: float = 0.5


def _decode_image(data: bytes) -> Any:
    """A golden image's pixels, or ``None`` when it does not decode or is too large."""
    import cv2
    import numpy as np

    frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if frame is None or frame.shape[0] * frame.shape[1] > MAX_GOLDEN_PIXELS:
        return None
    return frame


def run_health_check(
    slot_dir: Path,
    manifest: ReleaseManifest,
    model_role: str = "onnx",
    threads: int = 1,
    repeats: int = 3,
    reference: Optional[ReferenceCheck] = None,
) -> HealthReport:
    """Run the release's health spec against the files installed in ``slot_dir``, then (``reference``)
    compare the candidate with the current model on the trusted golden images.

    Raises:
        HealthCheckFailed: with ``problems`` listing every mismatch (never returns ``passed=False``).
    """
    from agent.engine import DecodeParams, Detector, EngineError, OnnxRuntimeConfig

    spec = manifest.health
    ref = manifest.served_file(model_role)
    try:
        detector = Detector.open(slot_dir / ref.path, OnnxRuntimeConfig(intra_op_threads=threads))
    except EngineError as exc:
        raise HealthCheckFailed(f"model does not load: {exc}", [str(exc)]) from exc
    problems: List[str] = []
    times: List[float] = []
    try:
        if detector.model.sha256 != ref.sha256:
            problems.append("loaded model hash differs from the manifest")
        params = DecodeParams(conf=spec.conf, iou=spec.iou)
        for i, golden in enumerate(spec.golden):
            frame = _decode_image((slot_dir / golden.target.path).read_bytes())
            if frame is None:
                problems.append(f"golden image {i} cannot be decoded")
                continue
            try:
                dets = detector.detect([frame], params)[0]
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    detector.detect([frame], params)
                    times.append((time.perf_counter() - t0) * 1e3)
            except EngineError as exc:
                problems.append(f"golden image {i}: inference failed: {exc}")
                continue
            problems += [
                f"golden image {i}: {p}"
                for p in compare_detections(golden.expected, dets.xyxy, dets.confidence, dets.class_id, spec)
            ]
        latency = statistics.median(times) if times else None
        if spec.max_latency_ms is not None and latency is not None and latency > spec.max_latency_ms:
            problems.append(f"median latency {latency:.1f} ms above the {spec.max_latency_ms} ms limit")
        sha = detector.model.sha256
        agreement = None
        if reference is not None and not problems:
            images = list(reference.images) + [slot_dir / g.target.path for g in spec.golden]
            agreement = _compare_with_reference(detector, reference, images, threads, problems)
    finally:
        detector.close()
    if problems:
        raise HealthCheckFailed(f"{len(problems)} problem(s): {problems[0]}", problems)
    return HealthReport(True, [], latency, sha, agreement)


def _compare_with_reference(
    candidate: Any, ref: ReferenceCheck, images: Sequence[Path], threads: int, problems: List[str]
) -> Optional[float]:
    """Append a problem when the candidate finds less than ``ref.min_agreement`` of what the current model
    finds confidently on ``images``; returns the share (``None``: nothing confident to compare)."""
    from agent.engine import DecodeParams, Detector, EngineError, OnnxRuntimeConfig

    try:
        current = Detector.open(ref.model, OnnxRuntimeConfig(intra_op_threads=threads))
    except EngineError:
        # A current model that no longer loads is no reference, and must not block the release that replaces it.
        return None
    reference_total = found_total = 0
    try:
        ref_params = DecodeParams(conf=ref.conf, iou=0.7)
        cand_params = DecodeParams(conf=ref.conf / 2, iou=0.7)
        ref_names = current.model.metadata.class_names
        cand_names = candidate.model.metadata.class_names
        seen: set[str] = set()
        for path in images:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # the candidate often ships the same golden images as the active release
                continue
            seen.add(digest)
            frame = _decode_image(data)
            if frame is None:
                continue
            try:
                r = current.detect([frame], ref_params)[0]
                c = candidate.detect([frame], cand_params)[0]
            except EngineError as exc:
                problems.append(f"{path.name}: inference failed in the comparison with the current model: {exc}")
                return None
            a = reference_agreement(
                r.xyxy, r.confidence, r.class_id, ref_names, c.xyxy, c.class_id, cand_names, ref.conf, ref.iou
            )
            reference_total += a.reference
            found_total += a.found
    finally:
        current.close()
    if reference_total == 0:
        return None
    share = found_total / reference_total
    if share < ref.min_agreement:
        problems.append(
            f"the candidate finds {found_total} of the {reference_total} detections the current model makes "
            f"with confidence >= {ref.conf} on {len(seen)} trusted golden image(s) "
            f"({share:.0%} < {ref.min_agreement:.0%})"
        )
    return share
