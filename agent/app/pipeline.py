"""The inference loop: newest frames of every camera -> one shared Detector (batched) -> tracker, alert rules,
triage -> outputs (JPEG + lineage) -> the durable spool.

Threads::

    inference     InferenceThread: runs Pipeline.step() calls handed to it by the daemon's asyncio task;
                  everything that touches the Detector, trackers, alert and triage state runs here, so none
                  of it needs a lock. Changes from elsewhere (commands, reload, model swap) are queued as
                  operations and applied at the start of the next step: between batches.
    output-writer OutputWriter: JPEG encoding, message building and Spool.put (an fsync per put), so a slow
                  or full disk never stalls inference. Alerts wait for room in its queue; samples are
                  dropped (counted) when it is full.

Hot swap: the daemon builds the new Detector off the loop (a loader thread), then queues
:meth:`Pipeline.swap_detector`; the next step swaps it in before collecting frames and closes the old one.
No frame is lost to the swap: frames are taken only inside a step.

Per-camera FPS limits are applied by the camera sources (``CameraConfig.fps_limit``): a source delivers at
most that rate, and the pipeline takes each delivered frame at most once.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt
import structlog

from agent.app.output_queue import OutputQueue
from agent.core.alerts import AlertEvaluator
from agent.core.alerts import AlertEvent as CoreAlertEvent
from agent.core.decode import DecodeParams
from agent.core.detections import Detections
from agent.core.tracker import IouTracker
from agent.core.triage import CameraTriage, FlagWindow, TriageDecision, thumbnail_size
from agent.engine.detector import Detector
from agent.protocol.models import (
    AlertEvent,
    AlertRuleRef,
    Box,
    ImageInfo,
    ModelRef,
    SampleMeta,
    SampleReason,
    SnapshotRef,
    SyntheticFrameRef,
)
from agent.protocol.parse import encode_framed, encode_json
from agent.protocol.topics import Topics
from agent.rules_config import CameraRulesConfig, class_names_from_mapping
from agent.sources.camera import CameraSource
from agent.sources.config import CameraConfig
from agent.sources.frame import Frame, SyntheticOrigin
from agent.spool.errors import SpoolError, SpoolFullError

log = structlog.get_logger(__name__)

STEP_BUDGET_S = 0.05
"""Longest run of batches in one :meth:`Pipeline.step` call before control returns to the caller."""
FRAME_WAIT_S = 0.02
"""How long one :meth:`Pipeline.step` call waits for a new frame when no camera has one."""

LATENCY_WINDOW = 2048
"""Per-camera latencies kept for p50/p99 (the most recent ones)."""


def _synthetic_ref(origin: Optional[SyntheticOrigin]) -> Optional[SyntheticFrameRef]:
    """The sample's render identity (synthetic camera only), so the cloud's oracle can re-render the frame."""
    if origin is None:
        return None
    return SyntheticFrameRef(
        domain=origin.domain, seed=origin.seed, index=origin.index, width=origin.width, height=origin.height
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """``q``-th percentile (0..100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


THUMBNAIL_OVERSAMPLING = 16
"""Source pixels per thumbnail pixel (each way) averaged by :func:`near_duplicate_thumbnail`."""


def near_duplicate_thumbnail(image: npt.NDArray[Any], hash_size: int) -> npt.NDArray[Any]:
    """The ``(hash_size, hash_size + 1)`` grayscale thumbnail of a BGR ``(H, W, 3)`` or grey ``(H, W)`` frame
    for the triage's difference hash.

    Converting a whole 1080p frame to grey and area-averaging it down to 9 x 8 pixels costs about 5 ms, as
    much as the INT8 demo model itself; a dHash needs far fewer samples. So the frame is first sampled on a
    regular grid of ``THUMBNAIL_OVERSAMPLING`` points per thumbnail pixel each way (about 20 k pixels of a
    1080p frame are read), and only that grid is converted and averaged (about 0.2 ms).
    Fewer points alias the belt's texture and noise: at 4 per pixel, consecutive frames of one scene
    already differ by up to 8 of 64 bits, past the triage's ``max_distance`` of 4; at 16 they differ by
    at most 2, as with the whole-frame average.
    """
    import cv2

    size = thumbnail_size(hash_size)  # (width, height), OpenCV order
    height, width = int(image.shape[0]), int(image.shape[1])
    step = max(1, min(height // (size[1] * THUMBNAIL_OVERSAMPLING), width // (size[0] * THUMBNAIL_OVERSAMPLING)))
    # The grid is image[::step, ::step] without its last partial row/column. Nearest-neighbour resizing by
    # an exact integer factor picks exactly those pixels, in C and without the GIL: twice as fast as numpy's
    # strided copy of 3-byte pixels, and the rules thread holds the GIL for less (see _RulesStage).
    rows, cols = max(1, height // step), max(1, width // step)
    cropped = image[: rows * step, : cols * step]
    grid = cv2.resize(cropped, (cols, rows), interpolation=cv2.INTER_NEAREST) if step > 1 else cropped
    gray = cv2.cvtColor(grid, cv2.COLOR_BGR2GRAY) if grid.ndim == 3 else grid
    return np.asarray(cv2.resize(gray, size, interpolation=cv2.INTER_AREA))


@dataclass(frozen=True)
class ModelInfo:
    """Lineage of the model in use: release name and version (OTA, or the file's metadata) and file hash."""

    name: str
    version: str
    sha256: str

    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version, sha256=self.sha256)

    @classmethod
    def of(cls, detector: Detector, name: Optional[str] = None, version: Optional[str] = None) -> ModelInfo:
        described = detector.describe()
        return cls(
            name=(name or detector.model.path.stem or "model")[:128],
            version=(version or str(described.get("version") or "unversioned"))[:64],
            sha256=detector.model.sha256,
        )


@dataclass(frozen=True)
class QualitySnapshot:
    """What the active model did since it started serving (all cameras): published after every batch by the
    thread that runs the rules, read by the status task. Frozen: readers never see it change."""

    model_sha256: str
    since_wall: float
    frames: int = 0
    detections: int = 0
    confidence_sum: float = 0.0
    alerts: int = 0
    uncertain_frames: int = 0

    def add(self, detections: int, confidence_sum: float, alerts: int, uncertain: int) -> QualitySnapshot:
        return dataclasses.replace(
            self,
            frames=self.frames + 1,
            detections=self.detections + detections,
            confidence_sum=self.confidence_sum + confidence_sum,
            alerts=self.alerts + alerts,
            uncertain_frames=self.uncertain_frames + uncertain,
        )


# ------------------------------------------------------------------------------------------------ cameras


@dataclass(frozen=True)
class CameraStatsSnapshot:
    """One camera's counters at one instant: immutable, so any thread may read it while the next is made."""

    processed: int = 0
    alerts: int = 0
    samples: int = 0
    snapshots: int = 0
    last_processed_wall: Optional[float] = None
    latencies_ms: Tuple[float, ...] = ()
    frame_times: Tuple[float, ...] = ()  # monotonic completion times of the last frames

    def fps(self, now: float, horizon_s: float = 5.0) -> float:
        recent = [t for t in self.frame_times if now - t <= horizon_s]
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1] - recent[0], 1e-6)
        return (len(recent) - 1) / span


@dataclass
class CameraStats:
    """Counters of one camera as the pipeline sees it, written by the rules thread only.

    Other threads (status task, MQTT link, OTA worker, metrics) read :attr:`snapshot`, a frozen copy the
    writer replaces after every frame: they never iterate a deque the writer is appending to (which raised
    "deque mutated during iteration", killed the status task and made a healthy release look like a crash).
    """

    processed: int = 0
    alerts: int = 0
    samples: int = 0
    snapshots: int = 0
    last_processed_wall: Optional[float] = None
    latencies_ms: Deque[float] = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    fps_window: Deque[float] = field(default_factory=lambda: collections.deque(maxlen=256))
    snapshot: CameraStatsSnapshot = field(default_factory=CameraStatsSnapshot)

    def publish(self) -> None:
        """Writer thread: make the current counters visible to readers (one reference swap)."""
        self.snapshot = CameraStatsSnapshot(
            self.processed,
            self.alerts,
            self.samples,
            self.snapshots,
            self.last_processed_wall,
            tuple(self.latencies_ms),
            tuple(self.fps_window),
        )


class CameraRuntime:
    """A camera's source and its per-camera state (tracker, alert streaks, triage). Owned by the inference
    thread once registered."""

    def __init__(self, config: CameraConfig, source: CameraSource, class_names: List[str]) -> None:
        self.config = config
        self.source = source
        self.rules: CameraRulesConfig = config.rules
        self.tracker = IouTracker(self.rules.tracker.to_core())
        self.alerts = AlertEvaluator(config.name, self.rules.alert_rules(class_names))
        self.triage = CameraTriage(config.name, self.rules.triage.to_core())
        self.last_index = -1
        self.stats = CameraStats()
        self.snapshot_requests: List[str] = []

    @property
    def name(self) -> str:
        return self.config.name

    def apply_rules(self, rules: CameraRulesConfig, class_names: List[str]) -> None:
        """New rules (reload, set_thresholds, a model with other class names). Raises before changing
        anything when a rule names an unknown class. Flag windows survive."""
        alert_rules = rules.alert_rules(class_names)
        windows = self.triage.flag_windows
        if rules.tracker != self.rules.tracker:
            self.tracker = IouTracker(rules.tracker.to_core())
        self.alerts = AlertEvaluator(self.name, alert_rules)
        if rules.triage != self.rules.triage:
            self.triage = CameraTriage(self.name, rules.triage.to_core())
            for window in windows:
                self.triage.add_flag_window(window)
        self.rules = rules


# ------------------------------------------------------------------------------------------------ outputs


@dataclass
class OutputJob:
    """Something to encode and spool: an alert (with optional snapshot), a sample or a snapshot."""

    kind: str  # "alert" | "sample" | "snapshot"
    camera: str
    frame: Frame
    detections: Detections
    track_ids: npt.NDArray[Any]
    model: ModelInfo
    names: Dict[int, str]
    alert: Optional[CoreAlertEvent] = None
    rule_ref: Optional[AlertRuleRef] = None
    decision: Optional[TriageDecision] = None
    request_id: Optional[str] = None
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class OutputCounters:
    """What the output writer did (for status and metrics)."""

    alerts_spooled: int = 0
    samples_spooled: int = 0
    snapshots_spooled: int = 0
    samples_dropped_queue_full: int = 0
    alerts_dropped_queue_full: int = 0
    snapshots_dropped_queue_full: int = 0
    spool_full: int = 0
    spool_write_errors: int = 0
    encode_errors: int = 0
    last_error: Optional[str] = None
    last_error_wall: Optional[float] = None
    last_ok_wall: Optional[float] = None

    @property
    def disk_ok(self) -> bool:
        """False while the latest spool write failed (disk full, I/O error)."""
        if self.last_error_wall is None:
            return True
        return self.last_ok_wall is not None and self.last_ok_wall > self.last_error_wall


SpoolPut = Callable[..., str]


def _boxes(detections: Detections, names: Dict[int, str], track_ids: Optional[npt.NDArray[Any]]) -> List[Box]:
    out = []
    for i in range(len(detections)):
        x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
        cls = int(detections.class_id[i])
        tid = None if track_ids is None or i >= len(track_ids) or track_ids[i] < 0 else int(track_ids[i])
        out.append(
            Box(
                x1=x1,
                y1=y1,
                x2=max(x1, x2),
                y2=max(y1, y2),
                class_id=cls,
                class_name=names.get(cls, str(cls))[:128],
                confidence=min(1.0, max(0.0, float(detections.confidence[i]))),
                track_id=tid,
            )
        )
    return out


def encode_jpeg(image: npt.NDArray[Any], quality: int) -> bytes:
    import cv2

    ok, buffer = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buffer.tobytes())


def _image_info(image: npt.NDArray[Any], jpeg: bytes) -> ImageInfo:
    return ImageInfo(
        width=int(image.shape[1]), height=int(image.shape[0]), size=len(jpeg), sha256=hashlib.sha256(jpeg).hexdigest()
    )


class OutputWriter:
    """The ``output-writer`` thread: encodes jobs into protocol messages and puts them in the spool."""

    def __init__(
        self,
        put: SpoolPut,
        topics: Topics,
        device: str,
        queue_size: int = 64,
        queue_max_bytes: int = 128 * 1024 * 1024,
        sample_quality: int = 90,
        snapshot_quality: int = 80,
        alert_snapshots: bool = True,
    ) -> None:
        self._put = put
        self.topics = topics
        self.device = device
        self.sample_quality = sample_quality
        self.snapshot_quality = snapshot_quality
        self.alert_snapshots = alert_snapshots
        self._queue: OutputQueue[OutputJob] = OutputQueue(
            queue_size, queue_max_bytes, lambda job: int(job.frame.image.nbytes), lambda job: job.kind == "alert"
        )
        self.counters = OutputCounters()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="output-writer", daemon=True)
        self.spool_latency_ms: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: OutputJob) -> bool:
        """Queue a job without ever waiting (the rules thread must not stall on a slow disk). When the queue is
        full (by count or by the bytes of the frames it holds), an alert evicts the oldest samples and snapshots;
        a sample or snapshot is dropped. Every drop is counted by its kind."""
        accepted, evicted = self._queue.put(job)
        dropped = list(evicted) + ([] if accepted else [job])
        if dropped:
            with self._lock:
                for d in dropped:
                    name = f"{d.kind}s_dropped_queue_full"
                    setattr(self.counters, name, getattr(self.counters, name) + 1)
            for d in dropped:
                log.warning("output_queue_full", kind=d.kind, camera=d.camera, evicted=d is not job)
        return accepted

    def pending(self) -> int:
        return len(self._queue)

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued (bounded by ``timeout``), then stop."""
        self._queue.close()
        self._thread.join(timeout)

    def snapshot(self) -> OutputCounters:
        with self._lock:
            return OutputCounters(**vars(self.counters))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:  # closed and drained
                return
            try:
                self._handle(job)
            except Exception as exc:
                with self._lock:
                    self.counters.encode_errors += 1
                log.exception("output_job_failed", kind=job.kind, camera=job.camera, error=str(exc))

    def _spool(self, kind: str, topic: str, payload: bytes, message_id: str) -> bool:
        try:
            self._put(kind, topic, payload, message_id=message_id)
        except SpoolFullError as exc:
            with self._lock:
                self.counters.spool_full += 1
            log.warning("spool_full", kind=kind, error=str(exc))
            return False
        except SpoolError as exc:
            with self._lock:
                self.counters.spool_write_errors += 1
                self.counters.last_error = str(exc)[:300]
                self.counters.last_error_wall = time.time()
            log.error("spool_write_failed", kind=kind, error=str(exc))
            return False
        with self._lock:
            self.counters.last_ok_wall = time.time()
        return True

    def _snapshot_ref(self, job: OutputJob, quality: int) -> Tuple[SnapshotRef, bytes]:
        jpeg = encode_jpeg(job.frame.image, quality)
        ref = SnapshotRef(
            id=uuid.uuid4().hex,
            topic=self.topics.snapshots,
            image=_image_info(job.frame.image, jpeg),
            request_id=job.request_id,  # the requester matches the answer by it
            camera=job.camera if job.request_id is not None else None,
        )
        return ref, jpeg

    def _handle(self, job: OutputJob) -> None:
        model = job.model.ref()
        if job.kind == "alert":
            assert job.alert is not None and job.rule_ref is not None
            event = job.alert
            snapshot = None
            if self.alert_snapshots:
                ref, jpeg = self._snapshot_ref(job, self.snapshot_quality)
                if self._spool("snapshot", self.topics.snapshots, encode_framed(ref, jpeg), ref.id):
                    snapshot = ref
            boxes = _boxes(Detections(event.xyxy, event.confidence, event.class_id), job.names, event.track_ids)
            message = AlertEvent(
                id=uuid.uuid4().hex,
                device=self.device,
                camera=job.camera,
                model=model,
                frame_ts=_utc(job.frame.captured_wall),
                created_ts=datetime.now(timezone.utc),
                boxes=boxes,
                rule=job.rule_ref,
                snapshot=snapshot,
            )
            if self._spool("alert", self.topics.alerts, encode_json(message), message.id):
                with self._lock:
                    self.counters.alerts_spooled += 1
                self.spool_latency_ms.append((time.monotonic() - job.frame.captured_monotonic) * 1e3)
        elif job.kind == "sample":
            decision = job.decision
            assert decision is not None
            jpeg = encode_jpeg(job.frame.image, self.sample_quality)
            track_id = next((t for t in decision.track_ids if t >= 0), None)
            meta = SampleMeta(
                id=uuid.uuid4().hex,
                device=self.device,
                camera=job.camera,
                reason=SampleReason(decision.sent_for.value),
                track_id=track_id,
                predictions=_boxes(job.detections, job.names, job.track_ids),
                thresholds={k: float(v) for k, v in decision.thresholds.items()},
                model=model,
                frame_ts=_utc(job.frame.captured_wall),
                image=_image_info(job.frame.image, jpeg),
                note=(decision.flag_window.note or None) if decision.flag_window else None,
                synthetic=_synthetic_ref(job.frame.origin),
            )
            if self._spool("sample", self.topics.samples, encode_framed(meta, jpeg), meta.id):
                with self._lock:
                    self.counters.samples_spooled += 1
        elif job.kind == "snapshot":
            ref, jpeg = self._snapshot_ref(job, self.snapshot_quality)
            if self._spool("snapshot", self.topics.snapshots, encode_framed(ref, jpeg), ref.id):
                with self._lock:
                    self.counters.snapshots_spooled += 1


# ------------------------------------------------------------------------------------------------ pipeline


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

    def __init__(self, post: PostBatch) -> None:
        self._post = post
        self._cond = threading.Condition()
        self._job: Optional[Tuple[List[Tuple[CameraRuntime, Frame]], List[Detections]]] = None
        self._released = False
        self._busy = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    def _idle(self) -> bool:
        return self._job is None and not self._busy

    def _runnable(self) -> bool:
        return (self._job is not None and self._released) or self._closed

    def submit(self, batch: List[Tuple[CameraRuntime, Frame]], results: List[Detections]) -> None:
        """Hand a batch over; it runs at the next :meth:`release`. Waits while the previous one runs."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rules", daemon=True)
                self._thread.start()
            self._release_locked()  # the previous batch, if still held, must run before this one
            self._cond.wait_for(self._idle)
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

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5.0)

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


@dataclass
class PipelineCounters:
    """Counters of the inference loop."""

    steps: int = 0
    batches: int = 0
    frames: int = 0
    swaps: int = 0
    swap_failures: int = 0
    inference_errors: int = 0
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    rules_ms: float = 0.0
    preprocess_ms_total: float = 0.0
    inference_ms_total: float = 0.0
    postprocess_ms_total: float = 0.0
    rules_ms_total: float = 0.0
    last_batch_size: int = 0
    busy_since: Optional[float] = None


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
    ) -> None:
        self.detector = detector
        self.model = model
        self.quality = QualitySnapshot(model.sha256, time.time())  # replaced by the rules' thread only
        self.decode = decode
        self.writer = writer
        self.cameras: Dict[str, CameraRuntime] = {}
        self.counters = PipelineCounters()
        self._ops: Deque[Operation] = collections.deque()
        self._rr = 0
        self._class_names = class_names_from_mapping(detector.names)
        self._wake = threading.Event()  # set by camera deliveries and queued operations
        self._rules_stage = _RulesStage(self._post_batch) if rules_thread else None

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
                self.counters.swap_failures += 1
                detector.close()
                log.error("model_swap_refused", error=str(error), model=model.name, version=model.version)
            else:
                old = self.detector
                self.detector, self.model, self._class_names = detector, model, names
                self.counters.swaps += 1
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
            frame = runtime.source.latest()
            if frame is None or frame.index <= runtime.last_index:
                continue
            runtime.last_index = frame.index
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
        self.counters.steps += 1
        batch = self._collect()
        if not batch:
            return 0
        self.counters.busy_since = time.monotonic()
        try:
            before_run = self._rules_stage.release if self._rules_stage is not None else None
            results = self.detector.detect([frame.image for _, frame in batch], self.decode, before_run)
        except Exception as exc:
            self.counters.inference_errors += 1
            log.error("inference_failed", error=f"{type(exc).__name__}: {exc}", cameras=[r.name for r, _ in batch])
            return 0
        finally:
            self.counters.busy_since = None
        times = self.detector.last_times
        c = self.counters
        c.batches += 1
        c.frames += len(batch)
        c.last_batch_size = len(batch)
        c.preprocess_ms, c.inference_ms, c.postprocess_ms = (
            times.preprocess_ms,
            times.inference_ms,
            times.postprocess_ms,
        )
        c.preprocess_ms_total += times.preprocess_ms
        c.inference_ms_total += times.inference_ms
        c.postprocess_ms_total += times.postprocess_ms
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
        c = self.counters
        c.rules_ms = (time.perf_counter() - t0) * 1e3
        c.rules_ms_total += c.rules_ms

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
            self.writer.submit(
                OutputJob(
                    "alert", runtime.name, frame, detections, update.track_ids, self.model, names, event, rule_ref
                )
            )
        if decision is not None:
            runtime.stats.samples += 1
            self.writer.submit(
                OutputJob(
                    "sample", runtime.name, frame, detections, update.track_ids, self.model, names, decision=decision
                )
            )
        while runtime.snapshot_requests:
            request_id = runtime.snapshot_requests.pop(0)
            runtime.stats.snapshots += 1
            self.writer.submit(
                OutputJob(
                    "snapshot",
                    runtime.name,
                    frame,
                    detections,
                    update.track_ids,
                    self.model,
                    names,
                    request_id=request_id,
                )
            )
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


# ------------------------------------------------------------------------------------------------ the thread


class InferenceThread:
    """One daemon thread running blocking calls for the asyncio loop, in order.

    Not a ``ThreadPoolExecutor``: its workers are joined at interpreter exit, so an inference call stuck
    in a runtime would keep a SIGTERMed daemon alive forever. This thread is a daemon thread; the
    supervisor waits for it only up to its shutdown bound.
    """

    def __init__(self, name: str = "inference") -> None:
        self._queue: queue.Queue[Optional[Tuple[Callable[[], Any], Any, Any]]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, loop, future = item
            try:
                result = fn()
            except BaseException as exc:
                _reply(loop, _set_exception, future, exc)
            else:
                _reply(loop, _set_result, future, result)

    async def call(self, fn: Callable[[], Any]) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, loop, future))
        return await future

    def stop(self) -> None:
        self._queue.put(None)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _reply(loop: Any, setter: Callable[[Any, Any], None], future: Any, value: Any) -> None:
    try:
        loop.call_soon_threadsafe(setter, future, value)
    except RuntimeError:  # the loop closed while the call ran (shutdown): nobody awaits the result any more
        pass


def _set_result(future: Any, result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: Any, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
