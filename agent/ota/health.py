"""Health check: load the installed model in the real backend, run the golden images, compare, time it."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

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


def run_health_check(
    slot_dir: Path, manifest: ReleaseManifest, model_role: str = "onnx", threads: int = 1, repeats: int = 3
) -> HealthReport:
    """Run the release's health spec against the files installed in ``slot_dir``.

    Raises:
        HealthCheckFailed: with ``problems`` listing every mismatch (never returns ``passed=False``).
    """
    import cv2
    import numpy as np

    from agent.engine import DecodeParams, Detector, EngineError, OnnxRuntimeConfig

    spec = manifest.health
    ref = manifest.files.get(model_role) or manifest.files["onnx"]
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
            data = np.frombuffer((slot_dir / golden.target.path).read_bytes(), np.uint8)
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
            if frame is None or frame.shape[0] * frame.shape[1] > MAX_GOLDEN_PIXELS:
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
    finally:
        detector.close()
    if problems:
        raise HealthCheckFailed(f"{len(problems)} problem(s): {problems[0]}", problems)
    return HealthReport(True, [], latency, sha)
