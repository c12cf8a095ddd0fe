"""The ``output-writer`` thread: alerts, samples and snapshots encoded (JPEG + lineage) into protocol
messages and put in the durable spool, fed through the non-blocking :class:`OutputQueue`."""

from __future__ import annotations

import collections
import hashlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy.typing as npt
import structlog

from agent.app.pipeline.common import LATENCY_WINDOW, ModelInfo, _synthetic_ref, _utc
from agent.app.pipeline.output_queue import OutputQueue
from agent.app.pipeline.recent import RecentOutput, RecentOutputs
from agent.core.alerts import AlertEvent as CoreAlertEvent
from agent.core.detections import Detections
from agent.core.triage import TriageDecision
from agent.protocol.models import (
    AlertEvent,
    AlertRuleRef,
    Box,
    ImageInfo,
    SampleMeta,
    SampleReason,
    SnapshotRef,
)
from agent.protocol.parse import encode_framed, encode_json
from agent.protocol.topics import Topics
from agent.sources.frame import Frame
from agent.spool.errors import SpoolError, SpoolFullError
from agent.threads import SIDE_TASK, Supervisor, Worker

if TYPE_CHECKING:
    from agent.sources.stills import Still

log = structlog.get_logger(__name__)


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
    # the camera's main stream, for the picture a person or the trainer looks at (CameraSource.still_of)
    still: Optional[Callable[[], Optional[Still]]] = None


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
    main_stream_stills: int = 0  # pictures taken from a camera's main stream
    main_stream_fallbacks: int = 0  # the main stream had no picture of the moment: the detect frame was used
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


def _boxes(
    detections: Detections,
    names: Dict[int, str],
    track_ids: Optional[npt.NDArray[Any]],
    scale: Tuple[float, float] = (1.0, 1.0),
) -> List[Box]:
    """Protocol boxes; ``scale`` maps the detect frame's pixels to the picture sent (a main-stream still)."""
    sx, sy = scale
    out = []
    for i in range(len(detections)):
        x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
        x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
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


def _summary(boxes: List[Box]) -> str:
    """``person 0.91, forklift 0.55`` (the page's one-line description of what was seen)."""
    return ", ".join(f"{b.class_name} {b.confidence:.2f}" for b in boxes[:8]) + (" ..." if len(boxes) > 8 else "")


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
        supervisor: Optional[Supervisor] = None,
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
        # restarted if it dies (the job in hand is lost and counted; the queue is kept)
        self._worker = Worker("output-writer", self._run, SIDE_TASK, supervisor)
        self.spool_latency_ms: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.recent = RecentOutputs()  # written here, after each spooled alert / sample; read as snapshots

    def start(self) -> None:
        self._worker.start()

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
        self._worker.cancel_restarts()
        self._queue.close()
        self._worker.join(timeout)

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

    def _picture(self, job: OutputJob) -> Tuple[npt.NDArray[Any], Tuple[float, float]]:
        """What a person or the trainer gets to see of ``job``'s moment: the camera's main-stream still when it
        has one of that moment, else the detect frame; and the scale from detect pixels to its pixels."""
        if job.still is not None:
            still = job.still()
            with self._lock:
                if still is None:
                    self.counters.main_stream_fallbacks += 1
                else:
                    self.counters.main_stream_stills += 1
            if still is not None:
                image = still.image
                return image, (image.shape[1] / job.frame.width, image.shape[0] / job.frame.height)
        return job.frame.image, (1.0, 1.0)

    def _snapshot_ref(
        self, job: OutputJob, quality: int, picture: Optional[npt.NDArray[Any]] = None
    ) -> Tuple[SnapshotRef, bytes]:
        image = job.frame.image if picture is None else picture
        jpeg = encode_jpeg(image, quality)
        ref = SnapshotRef(
            id=uuid.uuid4().hex,
            topic=self.topics.snapshots,
            image=_image_info(image, jpeg),
            request_id=job.request_id,  # the requester matches the answer by it
            camera=job.camera if job.request_id is not None else None,
        )
        return ref, jpeg

    def _handle(self, job: OutputJob) -> None:
        model = job.model.ref()
        if job.kind == "alert":
            assert job.alert is not None and job.rule_ref is not None
            event = job.alert
            snapshot, snapshot_jpeg = None, None
            scale = (1.0, 1.0)
            if self.alert_snapshots:
                picture, scale = self._picture(job)
                ref, jpeg = self._snapshot_ref(job, self.snapshot_quality, picture)
                if self._spool("snapshot", self.topics.snapshots, encode_framed(ref, jpeg), ref.id):
                    snapshot, snapshot_jpeg = ref, jpeg
                else:
                    scale = (1.0, 1.0)  # no snapshot: the boxes describe the detect frame
            boxes = _boxes(Detections(event.xyxy, event.confidence, event.class_id), job.names, event.track_ids, scale)
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
                self.recent.add(
                    RecentOutput(
                        "alert",
                        message.id,
                        job.camera,
                        job.frame.captured_wall,
                        event.rule,
                        _summary(boxes),
                        snapshot_jpeg,
                    )
                )
                self.spool_latency_ms.append((time.monotonic() - job.frame.captured_monotonic) * 1e3)
        elif job.kind == "sample":
            decision = job.decision
            assert decision is not None
            picture, scale = self._picture(job)
            jpeg = encode_jpeg(picture, self.sample_quality)
            track_id = next((t for t in decision.track_ids if t >= 0), None)
            meta = SampleMeta(
                id=uuid.uuid4().hex,
                device=self.device,
                camera=job.camera,
                reason=SampleReason(decision.sent_for.value),
                track_id=track_id,
                predictions=_boxes(job.detections, job.names, job.track_ids, scale),
                thresholds={k: float(v) for k, v in decision.thresholds.items()},
                model=model,
                frame_ts=_utc(job.frame.captured_wall),
                image=_image_info(picture, jpeg),
                note=(decision.flag_window.note or None) if decision.flag_window else None,
                synthetic=_synthetic_ref(job.frame.origin),
            )
            if self._spool("sample", self.topics.samples, encode_framed(meta, jpeg), meta.id):
                with self._lock:
                    self.counters.samples_spooled += 1
                detail = meta.note or _summary(meta.predictions)
                self.recent.add(
                    RecentOutput(
                        "sample", meta.id, job.camera, job.frame.captured_wall, meta.reason.value, detail, jpeg
                    )
                )
        elif job.kind == "snapshot":
            ref, jpeg = self._snapshot_ref(job, self.snapshot_quality, self._picture(job)[0])
            if self._spool("snapshot", self.topics.snapshots, encode_framed(ref, jpeg), ref.id):
                with self._lock:
                    self.counters.snapshots_spooled += 1
