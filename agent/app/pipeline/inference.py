"""The step: newest frames of every camera -> one shared Detector (batched) -> the ``rules`` thread
(tracker, alert rules, triage) -> outputs. Run-time changes are operations applied between batches.

Above 400 lines for one reason: :class:`Pipeline` is the inference thread's whole state and every operation
that must run on that thread (swap, rules, thresholds, cameras); cutting it apart would spread one owner's
state over modules.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import structlog

from agent.app.pipeline.cameras import CameraRuntime, PreviewFrame
from agent.app.pipeline.common import (
    FRAME_WAIT_S,
    STEP_BUDGET_S,
    ModelInfo,
    QualitySnapshot,
    near_duplicate_thumbnail,
)
from agent.app.pipeline.outputs import OutputJob, OutputWriter
from agent.core.decode import DecodeParams
from agent.core.detections import Detections
from agent.core.triage import FlagWindow
from agent.engine.detector import Detector
from agent.protocol.models import (
    AlertRuleRef,
)
from agent.rules_config import CameraRulesConfig, class_names_from_mapping
from agent.sources.frame import Frame
from agent.threads import FRAME_PATH, Supervisor, Worker, WorkerDeath

log = structlog.get_logger(__name__)


PostBatch = Callable[[List[Tuple[CameraRuntime, Frame]], List[Detections]], None]


class _RulesStage:
    """The ``rules`` thread: tracker, alert rules and triage of batch k while the model runs batch k + 1.

    Both are Python threads of one process, so they share the GIL. ONNX Runtime releases it while it
    computes; the preprocessing (OpenCV, numpy) releases and retakes it several times per frame. Were the
    rules thread let loose as soon as a batch is handed over, it would grab the GIL at each of those
    releases and hold it for up to the interpreter's switch interval (5 ms) while the inference thread, the
    critical path, waits: measured, the pipeline lost a quarter of the engine's throughput that way. So a
    handed-over batch waits for :meth:`release`, which the inference thread calls just before the model
    runs (and whenever it has nothing to run): the rules then use the GIL exactly while the model does not.

    One batch in flight: :meth:`submit` waits until the previous batch is done, so each camera's frames are
    handled in order. The inference thread calls :meth:`drain` before it applies queued operations and at
    the end of every step, so nothing else touches the per-camera state while this thread does.
    """

    def __init__(self, post: PostBatch, supervisor: Optional[Supervisor] = None) -> None:
        self._post = post
        self._supervisor = supervisor
        self._cond = threading.Condition()
        self._job: Optional[Tuple[List[Tuple[CameraRuntime, Frame]], List[Detections]]] = None
        self._released = False
        self._busy = False
        self._closed = False
        self._dead: Optional[str] = None  # why the thread died: the inference thread must not wait for it
        self._worker: Optional[Worker] = None

    def _idle(self) -> bool:
        return (self._job is None and not self._busy) or self._dead is not None

    def _check_alive_locked(self) -> None:
        if self._dead is not None:
            raise RuntimeError(f"the rules thread died: {self._dead}")

    def _died(self, death: WorkerDeath) -> None:
        with self._cond:
            self._dead = death.error
            self._cond.notify_all()

    def _runnable(self) -> bool:
        return (self._job is not None and self._released) or self._closed

    def submit(self, batch: List[Tuple[CameraRuntime, Frame]], results: List[Detections]) -> None:
        """Hand a batch over; it runs at the next :meth:`release`. Waits while the previous one runs."""
        with self._cond:
            if self._worker is None:
                self._worker = Worker("rules", self._run, FRAME_PATH, self._supervisor, on_give_up=self._died)
                self._worker.start()
            self._release_locked()  # the previous batch, if still held, must run before this one
            self._cond.wait_for(self._idle)
            self._check_alive_locked()
            self._job = (batch, results)
            self._released = False

    def release(self) -> None:
        """Let the handed-over batch run now (the caller is about to leave the GIL alone for a while)."""
        with self._cond:
            self._release_locked()

    def _release_locked(self) -> None:
        if self._job is not None and not self._released:
            self._released = True
            self._cond.notify_all()

    def drain(self) -> None:
        """Run the handed-over batch, if any, and wait until it is done."""
        with self._cond:
            self._release_locked()
            self._cond.wait_for(self._idle)
            self._check_alive_locked()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._runnable)
                job = self._job
                if job is None:
                    return  # closed
                self._job, self._released, self._busy = None, False, True
            try:
                self._post(*job)
            except Exception:  # _post_batch logs per camera; anything else must not kill the stage
                log.exception("rules_stage_failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


@dataclass(frozen=True)
class PipelineCounters:
    """Counters of the inference loop: a frozen snapshot the inference thread replaces (its only writer)."""

    steps: int = 0
    batches: int = 0
    frames: int = 0
    swaps: int = 0
    swap_failures: int = 0
    inference_errors: int = 0
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    preprocess_ms_total: float = 0.0
    inference_ms_total: float = 0.0
    postprocess_ms_total: float = 0.0
    last_batch_size: int = 0
    busy_since: Optional[float] = None


@dataclass(frozen=True)
class RulesTiming:
    """Time spent in tracker, alert rules and triage: a frozen snapshot the rules thread replaces (its only
    writer; the inference thread when there is no rules thread)."""

    rules_ms: float = 0.0
    rules_ms_total: float = 0.0


Operation = Callable[[], None]


class Pipeline:
    """Everything the inference thread owns. Call :meth:`step` from one thread only; every other method
    queues an operation (thread-safe) that the next step applies."""

    def __init__(
        self,
        detector: Detector,
        model: ModelInfo,
        decode: DecodeParams,
        writer: OutputWriter,
        rules_thread: bool = True,
        supervisor: Optional[Supervisor] = None,
        keep_previews: bool = False,
    ) -> None:
        self.detector = detector
        # the box page's preview: each camera's newest frame stays referenced (a 1080p frame is 6 MB), so only
        # while the page is enabled
        self.keep_previews = keep_previews
        self.model = model
        self.quality = QualitySnapshot(model.sha256, time.time())  # replaced by the rules' thread only
        self.decode = decode
        self.writer = writer
        self.cameras: Dict[str, CameraRuntime] = {}
        self.counters = PipelineCounters()  # replaced by the inference thread only
        self.rules_timing = RulesTiming()  # replaced by the rules thread only
        self._ops: Deque[Operation] = collections.deque()
        self._rr = 0
        self._class_names = class_names_from_mapping(detector.names)
        self._wake = threading.Event()  # set by camera deliveries and queued operations
        self._rules_stage = _RulesStage(self._post_batch, supervisor) if rules_thread else None

    # -- queued operations (any thread)

    def call_soon(self, op: Operation) -> None:
        """Run ``op`` on the inference thread before the next batch."""
        self._ops.append(op)
        self._wake.set()

    def add_camera(self, runtime: CameraRuntime) -> None:
        def op() -> None:
            previous = self.cameras.get(runtime.name)
            if previous is not None:
                previous.source.remove_frame_listener(self._wake.set)
            self.cameras[runtime.name] = runtime
            runtime.source.add_frame_listener(self._wake.set)

        self.call_soon(op)

    def remove_camera(self, name: str, on_removed: Optional[Callable[[CameraRuntime], None]] = None) -> None:
        def op() -> None:
            runtime = self.cameras.pop(name, None)
            if runtime is not None:
                runtime.source.remove_frame_listener(self._wake.set)
            if runtime is not None and on_removed is not None:
                on_removed(runtime)

        self.call_soon(op)

    def swap_detector(
        self, detector: Detector, model: ModelInfo, done: Optional[Callable[[Optional[Exception]], None]] = None
    ) -> None:
        """Swap in a built detector between batches; the old one is closed. When the new model's class
        names break a camera's alert rules, the swap is refused (the new detector closed, the old one kept)
        and ``done`` gets the error."""

        def op() -> None:
            names = class_names_from_mapping(detector.names)
            error: Optional[Exception] = None
            try:
                if names != self._class_names:
                    for runtime in self.cameras.values():
                        runtime.rules.alert_rules(names)  # validate all first: all or nothing
                    for runtime in self.cameras.values():
                        runtime.apply_rules(runtime.rules, names)
            except ValueError as exc:
                error = exc
            if error is not None:
                self.counters = replace(self.counters, swap_failures=self.counters.swap_failures + 1)
                detector.close()
                log.error("model_swap_refused", error=str(error), model=model.name, version=model.version)
            else:
                old = self.detector
                self.detector, self.model, self._class_names = detector, model, names
                self.counters = replace(self.counters, swaps=self.counters.swaps + 1)
                old.close()
                log.info("model_swapped", model=model.name, version=model.version, sha256=model.sha256)
            if done is not None:
                done(error)

        self.call_soon(op)

    @property
    def class_names(self) -> List[str]:
        return list(self._class_names)

    # -- the step (inference thread)

    def _apply_ops(self) -> None:
        if self._ops and self._rules_stage is not None:
            self._rules_stage.drain()  # operations change what the rules stage reads: never under its feet
        while self._ops:
            op = self._ops.popleft()
            try:
                op()
            except Exception:
                log.exception("pipeline_operation_failed")

    def _collect(self) -> List[Tuple[CameraRuntime, Frame]]:
        runtimes = list(self.cameras.values())
        if not runtimes:
            return []
        limit = max(1, self.detector.max_batch)
        picked: List[Tuple[CameraRuntime, Frame]] = []
        n = len(runtimes)
        start = self._rr % n
        for k in range(n):
            runtime = runtimes[(start + k) % n]
            frame = runtime.source.take_next()
            if frame is None or frame.index <= runtime.last_index:
                continue
            runtime.last_index = frame.index
            if time.monotonic() - frame.captured_monotonic > runtime.source.stall_timeout_s:
                # older than the camera's stall limit: an alert on it would describe a moment long gone
                runtime.stale_frames += 1
                continue
            picked.append((runtime, frame))
            if len(picked) >= limit:
                self._rr = (start + k + 1) % n
                break
        else:
            self._rr = (start + 1) % n
        return picked

    def step(self, budget_s: Optional[float] = None, wait_s: Optional[float] = None) -> int:
        """Run batches while cameras have new frames, for up to ``budget_s``; returns the frames processed.

        Queued operations are applied before every batch. When no camera has a new frame, wait up to
        ``wait_s`` (within the budget) for one (a camera delivery or a queued operation wakes the wait);
        return 0 when none came.

        One call per batch would cost a round trip through the caller's event loop for every frame (a
        thread wake-up each way: about a quarter of the inference thread's time at 200 frames/s on two
        loaded cores), and a poll-and-sleep when no frame is ready adds up to the sleep to every frame's
        latency. The caller (the daemon's inference task) still gets control back every ``budget_s`` to
        ping the watchdog and notice cancellation.
        """
        budget = STEP_BUDGET_S if budget_s is None else budget_s
        wait = FRAME_WAIT_S if wait_s is None else wait_s
        deadline = time.monotonic() + budget
        total = 0
        try:
            while True:
                # Cleared before collecting: a frame delivered from here on sets it again, so none is missed.
                self._wake.clear()
                processed = self._run_batch()
                total += processed
                now = time.monotonic()
                if now >= deadline:
                    return total
                if processed:
                    continue
                if self._rules_stage is not None:
                    self._rules_stage.release()  # nothing to infer: the last batch's rules must not wait
                if not self._wake.wait(min(wait, deadline - now)):
                    return total
        finally:
            if self._rules_stage is not None:
                self._rules_stage.drain()  # a step's frames are fully processed when it returns

    def close(self) -> None:
        """Stop the rules thread (if any); the pipeline must not be stepped afterwards."""
        if self._rules_stage is not None:
            self._rules_stage.close()

    def _run_batch(self) -> int:
        self._apply_ops()
        c = self.counters
        batch = self._collect()
        if not batch:
            self.counters = replace(c, steps=c.steps + 1)
            return 0
        self.counters = c = replace(c, steps=c.steps + 1, busy_since=time.monotonic())
        try:
            before_run = self._rules_stage.release if self._rules_stage is not None else None
            results = self.detector.detect([frame.image for _, frame in batch], self.decode, before_run)
        except Exception as exc:
            self.counters = replace(c, inference_errors=c.inference_errors + 1, busy_since=None)
            log.error("inference_failed", error=f"{type(exc).__name__}: {exc}", cameras=[r.name for r, _ in batch])
            return 0
        except BaseException:
            self.counters = replace(c, busy_since=None)
            raise
        times = self.detector.last_times
        self.counters = replace(
            c,
            busy_since=None,
            batches=c.batches + 1,
            frames=c.frames + len(batch),
            last_batch_size=len(batch),
            preprocess_ms=times.preprocess_ms,
            inference_ms=times.inference_ms,
            postprocess_ms=times.postprocess_ms,
            preprocess_ms_total=c.preprocess_ms_total + times.preprocess_ms,
            inference_ms_total=c.inference_ms_total + times.inference_ms,
            postprocess_ms_total=c.postprocess_ms_total + times.postprocess_ms,
        )
        if self._rules_stage is not None:
            self._rules_stage.submit(batch, results)
        else:
            self._post_batch(batch, results)
        return len(batch)

    def _post_batch(self, batch: List[Tuple[CameraRuntime, Frame]], results: List[Detections]) -> None:
        t0 = time.perf_counter()
        for (runtime, frame), detections in zip(batch, results):
            try:
                self._post(runtime, frame, detections)
            except Exception:
                log.exception("postprocess_failed", camera=runtime.name)
        rules_ms = (time.perf_counter() - t0) * 1e3
        self.rules_timing = RulesTiming(rules_ms, self.rules_timing.rules_ms_total + rules_ms)

    def _post(self, runtime: CameraRuntime, frame: Frame, detections: Detections) -> None:
        now, wall = frame.captured_monotonic, frame.captured_wall
        update = runtime.tracker.update(detections, now)
        events = runtime.alerts.update(detections, now, frame.index, update.track_ids)
        policy = runtime.triage.config
        thumbnail = (
            near_duplicate_thumbnail(frame.image, policy.near_duplicate.hash_size)
            if policy.near_duplicate.enabled
            else None
        )
        uncertain_before = runtime.triage.counters.triggered.get("uncertain", 0)
        decision = runtime.triage.decide(
            detections,
            now=now,
            wall_time=wall,
            frame_index=frame.index,
            track_ids=update.track_ids,
            events=update.events,
            thumbnail=thumbnail,
        )
        names = self.detector.names
        still = runtime.source.still_of(frame)  # the camera's main stream, for the pictures of this frame

        def job(kind: str, **what: Any) -> OutputJob:
            return OutputJob(
                kind, runtime.name, frame, detections, update.track_ids, self.model, names, still=still, **what
            )

        for event in events:
            rule_cfg = next((r for r in runtime.rules.alerts if r.name == event.rule), None)
            rule_ref = AlertRuleRef(
                name=event.rule,
                classes=[str(c) for c in rule_cfg.classes] if rule_cfg else [],
                min_confidence=rule_cfg.min_confidence if rule_cfg else 0.0,
                min_frames=rule_cfg.min_consecutive_frames if rule_cfg else 1,
                zone=",".join(z.name for z in rule_cfg.zones)[:128] or None if rule_cfg else None,
            )
            runtime.stats.alerts += 1
            self.writer.submit(job("alert", alert=event, rule_ref=rule_ref))
        if decision is not None:
            runtime.stats.samples += 1
            self.writer.submit(job("sample", decision=decision))
        while runtime.snapshot_requests:
            request_id = runtime.snapshot_requests.pop(0)
            runtime.stats.snapshots += 1
            self.writer.submit(job("snapshot", request_id=request_id))
        quality = self.quality
        if quality.model_sha256 != self.model.sha256:  # a swap happened between batches: the new model's count
            quality = QualitySnapshot(self.model.sha256, time.time())
        self.quality = quality.add(
            len(detections),
            float(detections.confidence.sum()) if len(detections) else 0.0,
            len(events),
            runtime.triage.counters.triggered.get("uncertain", 0) - uncertain_before,
        )
        done = time.monotonic()
        stats = runtime.stats
        stats.processed += 1
        stats.last_processed_wall = time.time()
        stats.latencies_ms.append((done - frame.captured_monotonic) * 1e3)
        stats.fps_window.append(done)
        stats.publish()
        if self.keep_previews:
            runtime.preview = PreviewFrame(frame, detections, names, runtime.zones)

    # -- commands (queued)

    def add_flag_window(self, window: FlagWindow) -> None:
        def op() -> None:
            runtime = self.cameras.get(window.camera)
            if runtime is not None:
                runtime.triage.add_flag_window(window)

        self.call_soon(op)

    def request_snapshot(self, camera: str, request_id: str) -> None:
        def op() -> None:
            runtime = self.cameras.get(camera)
            if runtime is not None:
                runtime.snapshot_requests.append(request_id)

        self.call_soon(op)

    def set_rules(self, camera: str, rules: CameraRulesConfig) -> None:
        def op() -> None:
            runtime = self.cameras.get(camera)
            if runtime is not None:
                runtime.apply_rules(rules, self._class_names)

        self.call_soon(op)

    def set_decode(self, decode: DecodeParams) -> None:
        def op() -> None:
            self.decode = decode

        self.call_soon(op)

    def update_thresholds(self, cameras: Sequence[str], thresholds: Dict[str, float]) -> concurrent.futures.Future[int]:
        """Apply a ``set_thresholds`` command on the inference thread, between frames.

        The rules and decode parameters in force are read *and* replaced by their owner, so two quick commands
        cannot lose one another (each used to be computed on the event loop from rules the other had not yet
        replaced). All or nothing: every camera's new rules are built and checked before any is applied.
        Resolves to the number of cameras changed; raises ``KeyError`` / ``ValueError`` when a name or value is
        invalid (nothing changed).
        """
        done: concurrent.futures.Future[int] = concurrent.futures.Future()
        values = dict(thresholds)

        def op() -> None:
            try:
                runtimes = [self.cameras[name] for name in cameras if name in self.cameras]
                updates = [(r, rules_with_thresholds(r.rules, values)) for r in runtimes]
                for _runtime, rules in updates:
                    rules.alert_rules(self._class_names)  # raises before anything changes
                decode = self.decode
                if "conf" in values or "iou" in values:
                    decode = dataclasses.replace(
                        decode, conf=values.get("conf", decode.conf), iou=values.get("iou", decode.iou)
                    )
            except Exception as exc:
                done.set_exception(exc)
                return
            for runtime, rules in updates:
                runtime.apply_rules(rules, self._class_names)
            self.decode = decode
            done.set_result(len(updates))

        self.call_soon(op)
        return done


# ------------------------------------------------------------------------------------------------ thresholds

THRESHOLD_NAMES = ("conf", "iou", "uncertainty.lo", "uncertainty.hi", "random.probability", "<rule>.min_confidence")


def rules_with_thresholds(rules: CameraRulesConfig, thresholds: Dict[str, float]) -> CameraRulesConfig:
    """Apply ``set_thresholds`` names other than conf/iou to a camera's rules (pure; validates).

    Raises:
        KeyError: an unknown threshold name (the message lists the known ones).
        ValueError: the result is invalid (e.g. ``uncertainty.lo >= hi``).
    """
    triage = rules.triage
    uncertainty = triage.uncertainty.model_dump()
    random_cfg = triage.random.model_dump()
    alerts = [rule.model_dump() for rule in rules.alerts]
    rule_names = {rule["name"]: rule for rule in alerts}
    for name, value in thresholds.items():
        if name in ("conf", "iou"):
            continue
        if name == "uncertainty.lo":
            uncertainty["lo"] = value
        elif name == "uncertainty.hi":
            uncertainty["hi"] = value
        elif name == "random.probability":
            random_cfg["probability"] = value
        elif name.endswith(".min_confidence") and name[: -len(".min_confidence")] in rule_names:
            rule_names[name[: -len(".min_confidence")]]["min_confidence"] = value
        else:
            raise KeyError(f"unknown threshold {name!r}; known: {', '.join(THRESHOLD_NAMES)}")
    data = rules.model_dump()
    data["triage"]["uncertainty"] = uncertainty
    data["triage"]["random"] = random_cfg
    data["alerts"] = alerts
    return CameraRulesConfig.model_validate(data)
