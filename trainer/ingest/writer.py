"""The ``store-writer`` thread: takes deliveries in batches, decodes them, stores each batch durably (one
fsync round and one transaction), then acknowledges the whole batch.

It owns the :class:`~trainer.store.SampleStore` (opened on this thread) and its counters; other threads read
the :class:`WriterSnapshot` it publishes after every batch.

A storage failure (disk error, database locked for too long, object store down) is retried with a doubling
wait, the batch kept and unacknowledged: nothing is lost, the broker stops sending once the Receive Maximum
is reached, and the status says ``retrying``. Bad messages are never a failure: each becomes a counted drop
and is acknowledged with its batch (a message that can never be stored must not come back forever).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import structlog

from agent.memory import release_free_memory
from trainer.ingest.client import AckToken, Delivery
from trainer.ingest.config import IngestConfig
from trainer.ingest.decode import decode
from trainer.store import BudgetState, DropIn, DropReason, Outcome, Record, SampleStore, StoreWriteError
from trainer.store.records import (
    AlertIn,
    CameraStatusIn,
    DeviceStatusIn,
    OtaReportIn,
    SampleIn,
    SnapshotIn,
)

log = structlog.get_logger("trainer.ingest.writer")

_KINDS = {
    SampleIn: "sample",
    SnapshotIn: "snapshot",
    AlertIn: "alert",
    DeviceStatusIn: "status",
    CameraStatusIn: "camera_status",
    OtaReportIn: "ota_state",
    DropIn: "rejected",
}


def record_kind(record: Optional[Record]) -> str:
    return "cleared" if record is None else _KINDS[type(record)]


@dataclass(frozen=True)
class WriterSnapshot:
    """The writer's counters and the store's fill state after the last batch."""

    batches: int = 0
    messages: int = 0
    outcomes: Dict[Tuple[str, str], int] = field(default_factory=dict)  # (kind, outcome) -> count
    drops: Dict[str, int] = field(default_factory=dict)  # rejection reason -> count
    write_errors: int = 0
    retrying: bool = False
    last_error: str = ""
    last_batch_size: int = 0
    last_batch_s: float = 0.0
    store_full: bool = False
    used_bytes: int = 0
    room_bytes: float = 0.0
    queue_depth: int = 0
    iterations: int = 0
    opened: bool = False

    def count(self, kind: str, outcome: str) -> int:
        return self.outcomes.get((kind, outcome), 0)


class StoreWriter:
    """See the module docstring.

    Args:
        open_store: opens the store (called on the writer thread, which then owns it).
        config: batching, retry and decoding settings.
        ack: acknowledges stored deliveries (``IngestClient.ack``).
    """

    def __init__(
        self, open_store: Callable[[], SampleStore], config: IngestConfig, ack: Callable[[Sequence[AckToken]], None]
    ) -> None:
        self.config = config
        self._open_store = open_store
        self._ack = ack
        self._queue: "queue.SimpleQueue[Delivery]" = queue.SimpleQueue()
        self._stop_when_empty = threading.Event()
        self._abort = threading.Event()
        self._snapshot = WriterSnapshot()
        # owned by the writer thread; published as a WriterSnapshot
        self._outcomes: Dict[Tuple[str, str], int] = {}
        self._drops: Dict[str, int] = {}
        self._batches = 0
        self._messages = 0
        self._write_errors = 0
        self._retrying = False
        self._last_error = ""
        self._last_batch_size = 0
        self._last_batch_s = 0.0
        self._iterations = 0
        self._budget: Optional[BudgetState] = None
        self._refused_size = 0  # size of the last image refused for want of room (0: none since one fitted)

    # ------------------------------------------------------------------ other threads

    def submit(self, delivery: Delivery) -> None:
        """Queue a delivery (the network thread). Bounded by the broker's in-flight window, not here."""
        self._queue.put(delivery)

    def snapshot(self) -> WriterSnapshot:
        return self._snapshot

    def finish(self) -> None:
        """Store what is queued, then return from :meth:`run` (drain)."""
        self._stop_when_empty.set()

    def abort(self) -> None:
        """Leave now; what is not stored stays unacknowledged (the broker delivers it again)."""
        self._abort.set()
        self._stop_when_empty.set()

    # ------------------------------------------------------------------ this thread

    def _take(self) -> List[Delivery]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_max_delay_s
        limit = self.config.batch_max_messages
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _full(self, budget: Optional[BudgetState]) -> bool:
        """Full: no room at all, or the last image did not fit and the room has not grown enough since."""
        if budget is None:
            return False
        return budget.full or (self._refused_size > 0 and budget.room() < self._refused_size)

    def _check_budget(self, store: SampleStore) -> None:
        was_full = self._snapshot.store_full
        budget = store.budget()
        full = self._full(budget)
        if full != was_full:
            (log.error if full else log.info)(
                "store_full" if full else "store_has_room",
                used_bytes=budget.used_bytes,
                max_bytes=budget.max_bytes,
                free_bytes=budget.free_bytes,
                min_free_bytes=budget.min_free_bytes,
            )
        self._budget = budget

    def _publish(self) -> None:
        budget = self._budget
        self._snapshot = WriterSnapshot(
            batches=self._batches,
            messages=self._messages,
            outcomes=dict(self._outcomes),
            drops=dict(self._drops),
            write_errors=self._write_errors,
            retrying=self._retrying,
            last_error=self._last_error,
            last_batch_size=self._last_batch_size,
            last_batch_s=self._last_batch_s,
            store_full=self._full(budget),
            used_bytes=budget.used_bytes if budget else 0,
            room_bytes=budget.room() if budget else 0.0,
            queue_depth=self._queue.qsize(),
            iterations=self._iterations,
            opened=budget is not None,
        )

    def _store(self, store: SampleStore, records: Sequence[Record]) -> Optional[List[Outcome]]:
        """Write until it works; None when aborted meanwhile."""
        wait = self.config.retry_initial_s
        while True:
            try:
                outcomes = store.write_batch(records)
            except StoreWriteError as exc:
                self._write_errors += 1
                self._retrying = True
                self._last_error = str(exc)[:500]
                log.error("store_write_failed", error=str(exc), retry_in_s=round(wait, 2), batch=len(records))
                self._publish()
                if self._abort.wait(wait):
                    return None
                wait = min(wait * 2, self.config.retry_max_s)
                continue
            if self._retrying:
                log.info("store_write_recovered", errors=self._write_errors)
            self._retrying = False
            return outcomes

    def run(self) -> None:
        """Thread target (``store-writer``)."""
        store = self._open_store()
        cfg = self.config
        worker = cfg.worker_name
        self._check_budget(store)
        self._publish()
        log.info("store_writer_started", index=str(store.index.path), blobs=store.blobs.kind)
        last_budget = time.monotonic()
        try:
            while not self._abort.is_set():
                batch = self._take()
                self._iterations += 1
                if not batch:
                    if self._stop_when_empty.is_set() and self._queue.empty():
                        break
                    if time.monotonic() - last_budget > 5.0:  # free space changes under us too
                        last_budget = time.monotonic()
                        self._check_budget(store)
                    self._publish()
                    continue
                started = time.monotonic()
                records = [self._decode(d, worker) for d in batch]
                tokens = [d.token for d in batch]
                size = len(batch)
                del batch  # the raw payloads: the records hold what is kept (halves the batch's memory)
                outcomes = self._store(store, [r for r in records if r is not None])
                if outcomes is None:
                    break
                self._ack(tokens)
                self._account(records, outcomes)
                del records
                self._batches += 1
                self._messages += size
                self._last_batch_size = size
                self._last_batch_s = time.monotonic() - started
                if self.config.trim_memory:
                    release_free_memory()
                self._check_budget(store)
                last_budget = time.monotonic()
                self._publish()
        finally:
            store.close()
            log.info("store_writer_stopped", messages=self._messages, left=self._queue.qsize())

    def _decode(self, delivery: Delivery, worker: str) -> Optional[Record]:
        cfg = self.config
        try:
            return decode(delivery.topic, delivery.payload, cfg.topic_prefix, cfg.limits, delivery.received_at, worker)
        except Exception as exc:  # a decoder bug must not turn one message into a crash loop of the service
            log.exception("decoder_failed", topic=delivery.topic[:200], size=len(delivery.payload))
            return DropIn(
                site="",
                device="",
                topic=delivery.topic[:512],
                reason=DropReason.INVALID,
                detail=f"decoder failed: {type(exc).__name__}: {exc}"[:1000],
                size=len(delivery.payload),
                head=bytes(delivery.payload[:4096]),
                received_at=delivery.received_at,
            )

    def _account(self, records: Sequence[Optional[Record]], outcomes: Sequence[Outcome]) -> None:
        results = iter(outcomes)
        for record in records:
            kind = record_kind(record)
            result = None if record is None else next(results)
            outcome = "ignored" if result is None else result.value
            if isinstance(record, (SampleIn, SnapshotIn)):
                image = record.meta.image if isinstance(record, SampleIn) else record.ref.image
                if result is Outcome.REFUSED:
                    self._refused_size = image.size
                elif result is Outcome.STORED:
                    self._refused_size = 0
            self._outcomes[(kind, outcome)] = self._outcomes.get((kind, outcome), 0) + 1
            if result is Outcome.DROPPED and not isinstance(record, DropIn):  # the index could not hold it
                self._drops[DropReason.INVALID.value] = self._drops.get(DropReason.INVALID.value, 0) + 1
            if isinstance(record, DropIn):
                self._drops[record.reason.value] = self._drops.get(record.reason.value, 0) + 1
                log.warning(
                    "message_rejected",
                    reason=record.reason.value,
                    device=record.device,
                    topic=record.topic,
                    detail=record.detail,
                    size=record.size,
                )
