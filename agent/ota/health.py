"""Health check: load the installed model in the real backend, run the golden images, compare, time it.

Three comparisons:

1. **The golden expectations**, in the model's *portable* arithmetic: ONNX Runtime with graph optimisations
   off, every operator as the graph defines it (a QDQ INT8 model computes its quantisation in float). That is
   what ``edge-trainer release`` records, and it is the same on every CPU, whereas the optimised run is not:
   fused INT8 kernels differ per instruction set (u8s8 on AVX2 without VNNI saturates its 16-bit pair sums;
   measured on the shipped demo INT8 model, docs/OTA.md). So the tight tolerance holds on any box the release
   is meant for. Releases recorded before (in their publisher's optimised kernels) pass when either run
   matches.
2. **The optimised run against the portable one, on the box**: what the daemon will serve must find what the
   model's own arithmetic finds (``runtime_agreement`` of its confident detections): the box measures its own
   kernels' deviation, which no publisher can record for every CPU.
3. When the device runs a model already, the candidate against that *current* model on every golden image the
   device trusts (:class:`ReferenceCheck`): expectations a release recorded from itself cannot vouch for it.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from agent.core.interface import reference_agreement
from agent.core.release import HealthSpec, ReleaseManifest, compare_detections
from agent.ota.errors import HealthCheckFailed

MAX_GOLDEN_PIXELS = 4096 * 4096


@dataclass
class HealthReport:
    """What the health check measured."""

    passed: bool
    problems: List[str] = field(default_factory=list)
    latency_ms: Optional[float] = None
    model_sha256: str = ""
    agreement: Optional[float] = None  # with the current model
    runtime_agreement: Optional[float] = None  # of the optimised run with the portable one


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


@dataclass(frozen=True)
class RuntimeCheck:
    """How closely the optimised run (what the daemon serves) must follow the portable one on this box.

    Attributes:
        min_agreement: share of the portable run's detections with confidence >= ``conf`` that the optimised
            run must find (same class, IoU >= ``iou``) on the golden images.
    """

    min_agreement: float = 0.9
    conf: float = 0.5
    iou: float = 0.5


def run_health_check(
    slot_dir: Path,
    manifest: ReleaseManifest,
    model_role: str = "onnx",
    threads: int = 1,
    repeats: int = 3,
    reference: Optional[ReferenceCheck] = None,
    runtime: RuntimeCheck = RuntimeCheck(),
) -> HealthReport:
    """Run the release's health spec against the files installed in ``slot_dir``, then (``reference``)
    compare the candidate with the current model on the trusted golden images.

    Raises:
        HealthCheckFailed: with ``problems`` listing every mismatch (never returns ``passed=False``).
    """
    from agent.engine import Detector, EngineError, OnnxRuntimeConfig

    spec = manifest.health
    ref = manifest.served_file(model_role)
    try:
        detector = Detector.open(slot_dir / ref.path, OnnxRuntimeConfig(intra_op_threads=threads))
    except EngineError as exc:
        raise HealthCheckFailed(f"model does not load: {exc}", [str(exc)]) from exc
    problems: List[str] = []
    try:
        try:
            portable = Detector.open(
                slot_dir / ref.path, OnnxRuntimeConfig(intra_op_threads=threads, graph_optimization="none")
            )
        except EngineError as exc:
            raise HealthCheckFailed(f"model does not load unoptimised: {exc}", [str(exc)]) from exc
        try:
            if detector.model.sha256 != ref.sha256:
                problems.append("loaded model hash differs from the manifest")
            latency, agreement_runtime = _golden(slot_dir, spec, detector, portable, repeats, runtime, problems)
        finally:
            portable.close()
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
    return HealthReport(True, [], latency, sha, agreement, agreement_runtime)


def _golden(
    slot_dir: Path,
    spec: HealthSpec,
    optimised: Any,
    portable: Any,
    repeats: int,
    runtime: RuntimeCheck,
    problems: List[str],
) -> Tuple[Optional[float], Optional[float]]:
    """Both runs on every golden image: the expectations against the portable run (or, for a release recorded
    in its publisher's optimised kernels, the optimised run), the optimised run against the portable one, and
    the optimised run's latency. Appends to ``problems``; returns (median latency ms, runtime agreement)."""
    from agent.engine import DecodeParams, EngineError

    params = DecodeParams(conf=spec.conf, iou=spec.iou)
    times: List[float] = []
    by_portable: List[str] = []
    by_optimised: List[str] = []
    reference_total = found_total = 0
    names = portable.model.metadata.class_names
    for i, golden in enumerate(spec.golden):
        frame = _decode_image((slot_dir / golden.target.path).read_bytes())
        if frame is None:
            problems.append(f"golden image {i} cannot be decoded")
            continue
        try:
            p = portable.detect([frame], params)[0]
            o = optimised.detect([frame], params)[0]
            for _ in range(repeats):
                t0 = time.perf_counter()
                optimised.detect([frame], params)
                times.append((time.perf_counter() - t0) * 1e3)
        except EngineError as exc:
            problems.append(f"golden image {i}: inference failed: {exc}")
            continue
        by_portable += [
            f"golden image {i}: {m}"
            for m in compare_detections(golden.expected, p.xyxy, p.confidence, p.class_id, spec)
        ]
        by_optimised += [
            f"golden image {i}: {m}"
            for m in compare_detections(golden.expected, o.xyxy, o.confidence, o.class_id, spec)
        ]
        a = reference_agreement(
            p.xyxy, p.confidence, p.class_id, names, o.xyxy, o.class_id, names, runtime.conf, runtime.iou
        )
        reference_total += a.reference
        found_total += a.found
    if by_portable and by_optimised:
        problems += by_portable  # the arithmetic the release is recorded in (since the portable recording)
    share = None if reference_total == 0 else found_total / reference_total
    if share is not None and share < runtime.min_agreement:
        problems.append(
            f"the optimised run (what the daemon serves) finds {found_total} of the {reference_total} detections the "
            f"model's portable run makes with confidence >= {runtime.conf} on the golden images "
            f"({share:.0%} < {runtime.min_agreement:.0%}): this runtime's kernels do not compute this model faithfully"
        )
    return (statistics.median(times) if times else None), share


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
