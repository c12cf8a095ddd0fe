"""Pipeline.step: runs batches for its budget, waits for frames instead of polling, rules on their own thread;
the near-duplicate thumbnail. Real ONNX Runtime (the INT8 demo model), real synthetic cameras."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import cv2
import numpy as np
import pytest

from agent.app.pipeline import CameraRuntime, ModelInfo, OutputJob, Pipeline, near_duplicate_thumbnail
from agent.core.decode import DecodeParams
from agent.core.triage import NearDuplicatePolicy, difference_hash, hamming_distance, thumbnail_size
from agent.engine import Detector, OnnxRuntimeConfig
from agent.sources import CameraConfig, CameraSource, build_source
from agent.synthetic.render import render_stream_frames

SIZE = (144, 256)


def full_area_thumbnail(image: np.ndarray, hash_size: int) -> np.ndarray:
    """The reference: grey of the whole frame, area-averaged (what the pipeline did before)."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(gray, thumbnail_size(hash_size), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize(
    ("shape", "hash_size"),
    [
        ((1080, 1920, 3), 8),
        ((1080, 1920), 8),
        ((720, 1280, 3), 16),
        ((48, 64, 3), 8),  # smaller than the grid: every pixel is used
        ((9, 9, 3), 8),
    ],
)
def test_thumbnail_has_the_hash_shape(shape: Tuple[int, ...], hash_size: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    thumb = near_duplicate_thumbnail(image, hash_size)
    assert thumb.shape == (hash_size, hash_size + 1) and thumb.dtype == np.uint8


def test_thumbnail_hash_keeps_near_duplicates_near_and_scenes_apart() -> None:
    max_distance = NearDuplicatePolicy().max_distance
    streams = [[f.image for f in render_stream_frames("factory", seed, range(5), (1080, 1920))] for seed in (0, 1, 2)]
    for frames in streams:
        hashes = [difference_hash(near_duplicate_thumbnail(image, 8)) for image in frames]
        # consecutive frames of a conveyor are near-duplicates, as they are for the whole-frame average
        assert all(hamming_distance(a, b) <= max_distance for a, b in zip(hashes, hashes[1:]))
        for image, ours in zip(frames, hashes):
            assert hamming_distance(ours, difference_hash(full_area_thumbnail(image, 8))) <= 8
    firsts = [difference_hash(near_duplicate_thumbnail(frames[0], 8)) for frames in streams]
    assert all(hamming_distance(a, b) > max_distance for i, a in enumerate(firsts) for b in firsts[i + 1 :])


def test_thumbnail_of_a_read_only_strided_frame() -> None:
    image = np.ascontiguousarray(np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    image.setflags(write=False)  # prerendered frames are read-only
    assert near_duplicate_thumbnail(image, 8).shape == (8, 9)


class _Writer:
    """Collects output jobs (the pipeline's only call into its writer is ``submit``)."""

    def __init__(self) -> None:
        self.jobs: List[OutputJob] = []

    def submit(self, job: OutputJob) -> bool:
        self.jobs.append(job)
        return True


@pytest.fixture(scope="module")
def detector(daemon_model: Path) -> Iterator[Detector]:
    det = Detector.open(daemon_model, OnnxRuntimeConfig(intra_op_threads=1))
    yield det
    det.close()


def _source(name: str, seed: int, fps: float) -> CameraSource:
    config = CameraConfig.model_validate(
        {
            "name": name,
            "source": {
                "type": "synthetic",
                "seed": seed,
                "width": SIZE[1],
                "height": SIZE[0],
                "fps": fps,
                "prerender": 3,
            },
            "rules": {"triage": {"random": {"probability": 1.0}, "near_duplicate": {"enabled": True}}},
        }
    )
    return build_source(config, rng=random.Random(0))


def _pipeline(detector: Detector, rules_thread: bool) -> Pipeline:
    return Pipeline(detector, ModelInfo.of(detector), DecodeParams(), _Writer(), rules_thread=rules_thread)  # type: ignore[arg-type]


def _add(pipeline: Pipeline, source: CameraSource) -> CameraRuntime:
    config = CameraConfig.model_validate({"name": source.name, "source": {"type": "synthetic"}})
    runtime = CameraRuntime(config, source, pipeline.class_names)
    pipeline.add_camera(runtime)
    return runtime


def test_step_without_cameras_waits_then_returns_zero(detector: Detector) -> None:
    pipeline = _pipeline(detector, rules_thread=True)
    t0 = time.monotonic()
    assert pipeline.step(budget_s=1.0, wait_s=0.1) == 0
    assert 0.09 <= time.monotonic() - t0 < 0.6
    pipeline.close()


def test_a_queued_operation_wakes_a_waiting_step(detector: Detector) -> None:
    pipeline = _pipeline(detector, rules_thread=False)
    ran = threading.Event()
    thread = threading.Thread(target=lambda: pipeline.step(budget_s=3.0, wait_s=3.0))
    thread.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    pipeline.call_soon(ran.set)
    assert ran.wait(2.0) and time.monotonic() - t0 < 1.5  # applied at once, not after the 3 s wait
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize("rules_thread", [True, False])
def test_step_runs_every_waiting_frame_of_several_cameras_and_finishes_their_rules(
    detector: Detector, rules_thread: bool
) -> None:
    pipeline = _pipeline(detector, rules_thread)
    sources = [_source(f"cam{i}", i, fps=40.0) for i in range(3)]
    runtimes = [_add(pipeline, s) for s in sources]
    for source in sources:
        source.start()
    try:
        processed = 0
        deadline = time.monotonic() + 20
        while processed < 30 and time.monotonic() < deadline:
            processed += pipeline.step(budget_s=0.3, wait_s=0.5)
            # when step returns, every frame it ran has been through tracker, rules and triage
            assert sum(r.stats.processed for r in runtimes) == pipeline.counters.frames == processed
        assert processed >= 30
        assert all(r.stats.processed >= 5 for r in runtimes)  # round robin: no camera starves
        assert all(r.stats.samples > 0 for r in runtimes)  # triage ran (random sampling at p=1)
        assert pipeline.rules_timing.rules_ms_total > 0 and pipeline.counters.inference_ms_total > 0
    finally:
        for source in sources:
            assert source.stop(5.0)
        pipeline.close()


def test_a_new_frame_wakes_a_waiting_step_at_once(detector: Detector) -> None:
    pipeline = _pipeline(detector, rules_thread=True)
    source = _source("slow", 7, fps=2.0)  # a frame every 0.5 s
    runtime = _add(pipeline, source)
    source.start()
    try:
        deadline = time.monotonic() + 20
        while runtime.stats.processed < 3 and time.monotonic() < deadline:
            pipeline.step(budget_s=2.0, wait_s=2.0)
        assert runtime.stats.processed >= 3
        # waiting on the delivery, not polling: capture-to-rules latency is the detection time, not a poll period
        assert np.median(list(runtime.stats.latencies_ms)) < 250
    finally:
        assert source.stop(5.0)
        pipeline.close()


def test_operations_never_run_while_the_rules_thread_works(detector: Detector) -> None:
    pipeline = _pipeline(detector, rules_thread=True)
    stage = pipeline._rules_stage
    assert stage is not None
    overlaps: List[bool] = []
    source = _source("ops", 3, fps=60.0)
    _add(pipeline, source)
    source.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(overlaps) < 20:
            pipeline.call_soon(lambda: overlaps.append(not stage._idle()))
            pipeline.step(budget_s=0.05, wait_s=0.05)
        assert overlaps and not any(overlaps)
    finally:
        assert source.stop(5.0)
        pipeline.close()


def test_rules_stage_holds_a_batch_until_the_model_runs_then_keeps_order() -> None:
    """A handed-over batch waits for release() (the inference thread calls it as the model starts, so the
    rules use the GIL while the model does not); a new hand-over or a drain releases a held one."""
    from agent.app.pipeline import _RulesStage

    ran: List[object] = []
    stage = _RulesStage(lambda batch, results: ran.append(batch[0]))
    try:
        stage.submit(["a"], [])  # type: ignore[list-item]
        time.sleep(0.2)
        assert ran == []  # held
        stage.release()
        deadline = time.monotonic() + 5
        while not ran and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ran == ["a"]
        stage.submit(["b"], [])  # type: ignore[list-item]
        stage.submit(["c"], [])  # type: ignore[list-item]  # releases "b" and waits for it: order kept
        assert ran == ["a", "b"]
        stage.drain()
        assert ran == ["a", "b", "c"]
        stage.drain()  # nothing held: returns at once
    finally:
        stage.close()
