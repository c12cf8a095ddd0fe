"""The SQLite (WAL) index: the writer side. One :class:`StoreIndex` per writing thread.

Durability: ``synchronous=FULL`` (every commit is fsynced) and one transaction per ingest batch, committed
after the batch's blobs are durable and before any of its messages is acknowledged to the broker.

Several processes (ingest workers on one host, the CLI) may open the same index: SQLite serialises writers
(``BEGIN IMMEDIATE`` waits up to ``busy_timeout_ms``), and the unique keys ``(device, id)`` and
``(device, image_sha256)`` make "stored exactly once" hold across workers, whatever the plan said.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from trainer.store.errors import StoreSchemaError, StoreWriteError
from trainer.store.plan import ImageDecision, ImageItem
from trainer.store.records import (
    AlertIn,
    CameraStatusIn,
    DeviceStatusIn,
    DropIn,
    DropReason,
    OtaReportIn,
    Outcome,
    Record,
    SampleIn,
    SnapshotIn,
)
from trainer.store.schema import DDL, SCHEMA_VERSION

KEEP_REJECTED = 10000
"""Rejected messages kept for forensics (their first bytes); older ones are pruned."""
HEAD_BYTES = 4096
"""First bytes of a rejected payload kept."""


def epoch(value: datetime) -> float:
    return value.timestamp()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _statements(ddl: str) -> List[str]:
    """The DDL's statements, comment lines removed (executescript would COMMIT our transaction)."""
    text = "\n".join(line for line in ddl.splitlines() if not line.lstrip().startswith("--"))
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """Open the index (created with its schema if missing) in WAL mode with fsynced commits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1e3)
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreWriteError(f"{path}: journal_mode is {mode}, WAL unavailable")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("BEGIN IMMEDIATE")
        for statement in _statements(DDL):
            db.execute(statement)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT INTO meta (key, value) VALUES ('used_bytes', '0')")
        elif int(row[0]) != SCHEMA_VERSION:
            db.execute("ROLLBACK")
            raise StoreSchemaError(f"{path}: schema version {row[0]}, this software knows {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreWriteError(f"cannot open the index {path}: {exc}") from exc
    return db


def _in_pairs(column_a: str, column_b: str, pairs: Sequence[Tuple[str, str]]) -> Tuple[str, List[str]]:
    values = ",".join("(?,?)" for _ in pairs)
    params = [item for pair in pairs for item in pair]
    return f"({column_a}, {column_b}) IN (VALUES {values})", params


def _chunks(items: Sequence[Any], size: int = 400) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class StoreIndex:
    """Writer connection to the index. Owned by one thread (the ingest ``store-writer``, or a CLI command)."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10000, keep_rejected: int = KEEP_REJECTED) -> None:
        self.path = Path(path)
        self.keep_rejected = keep_rejected
        self.db = connect(self.path, busy_timeout_ms)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------------------------- before the blobs

    def used_bytes(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'used_bytes'").fetchone()
        return int(row[0]) if row else 0

    def lookup(self, items: Sequence[ImageItem]) -> Tuple[Set[Tuple[str, str]], Set[Tuple[str, str]], Set[str]]:
        """What the index already holds of a batch: (known ids, known sample digests, stored blob digests)."""
        known_ids: Set[Tuple[str, str]] = set()
        known_digests: Set[Tuple[str, str]] = set()
        stored: Set[str] = set()
        try:
            samples = [i for i in items if i.dedupe_image]
            snapshots = [i for i in items if not i.dedupe_image]
            for table, group in (("samples", samples), ("snapshots", snapshots)):
                for chunk in _chunks([(i.device, i.message_id) for i in group]):
                    clause, params = _in_pairs("device", "id", chunk)
                    known_ids.update(self.db.execute(f"SELECT device, id FROM {table} WHERE {clause}", params))
            for chunk in _chunks([(i.device, i.sha256) for i in samples]):
                clause, params = _in_pairs("device", "image_sha256", chunk)
                known_digests.update(
                    self.db.execute(f"SELECT device, image_sha256 FROM samples WHERE {clause}", params)
                )
            digests = sorted({i.sha256 for i in items})
            for chunk in _chunks(digests, 800):
                marks = ",".join("?" for _ in chunk)
                stored.update(
                    row[0] for row in self.db.execute(f"SELECT sha256 FROM blobs WHERE sha256 IN ({marks})", chunk)
                )
        except sqlite3.Error as exc:
            raise StoreWriteError(f"index lookup failed: {exc}") from exc
        return known_ids, known_digests, stored

    # ------------------------------------------------------------------------------------- the transaction

    def commit(self, records: Sequence[Record], decisions: Mapping[int, ImageDecision]) -> List[Outcome]:
        """Apply a batch in one transaction; ``decisions`` holds the plan's verdict for each image record
        (by position). Returns one outcome per record. Raises StoreWriteError (nothing applied).

        Each record is applied inside a savepoint: a record SQLite cannot hold (an integer beyond 64 bits that
        the message model allowed, a constraint it breaks) is rolled back alone and counted as an ``invalid``
        drop, so one such message can never block the batches behind it. The disk and the database failing
        are transient: they fail the whole batch, which the caller retries."""
        writer = _BatchWriter(self.db)
        try:
            self.db.execute("BEGIN IMMEDIATE")
            outcomes = [
                self._apply_one(writer, record, decisions.get(position)) for position, record in enumerate(records)
            ]
            writer.finish(self.keep_rejected)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreWriteError(f"index commit failed: {exc}") from exc
        return outcomes

    @staticmethod
    def _apply_one(writer: _BatchWriter, record: Record, decision: Optional[ImageDecision]) -> Outcome:
        writer.db.execute("SAVEPOINT record")
        try:
            outcome = writer.apply(record, decision)
        except (OverflowError, ValueError, TypeError, sqlite3.IntegrityError, sqlite3.InterfaceError) as exc:
            writer.db.execute("ROLLBACK TO record")
            writer.db.execute("RELEASE record")
            return writer.unstorable(record, exc)
        writer.db.execute("RELEASE record")
        return outcome


class _BatchWriter:
    """The statements of one batch (inside the caller's transaction)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.seen: Dict[str, Tuple[str, float]] = {}  # device -> (site, newest received_at)
        self.drops: Dict[Tuple[str, str], List[Any]] = {}  # (device, reason) -> [count, first, last, topic, detail]
        self.used_delta = 0
        self.rejected_rows = 0

    # -- helpers

    def _seen(self, site: str, device: str, at: float) -> None:
        previous = self.seen.get(device)
        if previous is None or previous[1] < at:
            self.seen[device] = (site, at)

    def _drop(self, device: str, reason: DropReason, at: float, topic: str, detail: str) -> None:
        entry = self.drops.get((device, reason.value))
        if entry is None:
            self.drops[(device, reason.value)] = [1, at, at, topic, detail]
        else:
            entry[0] += 1
            entry[2] = at
            entry[3] = topic
            entry[4] = detail

    def _blob(self, sha256: str, size: int, kind: str, at: float) -> None:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO blobs (sha256, size, kind, created) VALUES (?, ?, ?, ?)", (sha256, size, kind, at)
        )
        if cursor.rowcount:
            self.used_delta += size

    def _ensure_device(self, site: str, device: str, at: float) -> None:
        self.db.execute(
            "INSERT INTO devices (device, site, first_seen, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device) DO NOTHING",
            (device, site, at, at),
        )

    # -- dispatch

    def apply(self, record: Record, decision: Optional[ImageDecision]) -> Outcome:
        if isinstance(record, DropIn):
            self._drop(record.device, record.reason, record.received_at, record.topic, record.detail)
            self.db.execute(
                "INSERT INTO rejected (received_at, site, device, topic, reason, detail, size, message_id, head) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.received_at,
                    record.site,
                    record.device,
                    record.topic,
                    record.reason.value,
                    record.detail,
                    record.size,
                    record.message_id,
                    record.head[:HEAD_BYTES],
                ),
            )
            self.rejected_rows += 1
            return Outcome.DROPPED
        origin = record.origin
        if isinstance(record, (SampleIn, SnapshotIn)):
            assert decision is not None, "image records need the plan's decision"
            if decision is not ImageDecision.ACCEPT:
                reason = DropReason(decision.value)
                message_id = record.meta.id if isinstance(record, SampleIn) else record.ref.id
                self._drop(origin.device, reason, origin.received_at, origin.topic, f"message {message_id}")
                self._seen(origin.site, origin.device, origin.received_at)
                return Outcome.REFUSED if reason is DropReason.STORE_FULL else Outcome.DUPLICATE
            outcome = self._sample(record) if isinstance(record, SampleIn) else self._snapshot(record)
        elif isinstance(record, AlertIn):
            outcome = self._alert(record)
        elif isinstance(record, DeviceStatusIn):
            outcome = self._device_status(record)
        elif isinstance(record, CameraStatusIn):
            outcome = self._camera_status(record)
        elif isinstance(record, OtaReportIn):
            outcome = self._ota_report(record)
        else:  # pragma: no cover - Record is a closed union
            raise TypeError(f"unknown record {type(record).__name__}")
        self._seen(origin.site, origin.device, origin.received_at)
        return outcome

    def unstorable(self, record: Record, exc: Exception) -> Outcome:
        """A record the database refused for what it holds: count it as an invalid message of its device."""
        if isinstance(record, DropIn):  # even the drop could not be stored: count it without its forensic row
            self._drop(record.device, record.reason, record.received_at, record.topic, record.detail)
            return Outcome.DROPPED
        origin = record.origin
        detail = f"cannot be stored: {type(exc).__name__}: {exc}"[:1000]
        self._drop(origin.device, DropReason.INVALID, origin.received_at, origin.topic, detail)
        return Outcome.DROPPED

    def _sample(self, record: SampleIn) -> Outcome:
        meta, origin = record.meta, record.origin
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO samples (device, id, site, camera, reason, track_id, note, model_name, "
            "model_version, model_sha256, thresholds, predictions, frame_time, received_at, image_sha256, "
            "image_size, width, height, synthetic, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "?, ?, ?, ?)",
            (
                origin.device,
                meta.id,
                origin.site,
                meta.camera,
                meta.reason.value,
                meta.track_id,
                meta.note,
                meta.model.name,
                meta.model.version,
                meta.model.sha256,
                _dumps(meta.thresholds),
                _dumps([box.model_dump(mode="json") for box in meta.predictions]),
                epoch(meta.frame_ts),
                origin.received_at,
                meta.image.sha256,
                meta.image.size,
                meta.image.width,
                meta.image.height,
                _dumps(meta.synthetic.model_dump(mode="json")) if meta.synthetic is not None else None,
                origin.worker,
            ),
        )
        if not cursor.rowcount:  # another worker stored it since the plan: the unique keys decide
            same_id = self.db.execute(
                "SELECT 1 FROM samples WHERE device = ? AND id = ?", (origin.device, meta.id)
            ).fetchone()
            reason = DropReason.DUPLICATE_ID if same_id else DropReason.DUPLICATE_IMAGE
            self._drop(origin.device, reason, origin.received_at, origin.topic, f"message {meta.id}")
            return Outcome.DUPLICATE
        self._blob(meta.image.sha256, meta.image.size, "sample", origin.received_at)
        return Outcome.STORED

    def _snapshot(self, record: SnapshotIn) -> Outcome:
        ref, origin = record.ref, record.origin
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO snapshots (device, id, site, image_sha256, image_size, width, height, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                origin.device,
                ref.id,
                origin.site,
                ref.image.sha256,
                ref.image.size,
                ref.image.width,
                ref.image.height,
                origin.received_at,
            ),
        )
        if not cursor.rowcount:
            self._drop(origin.device, DropReason.DUPLICATE_ID, origin.received_at, origin.topic, f"message {ref.id}")
            return Outcome.DUPLICATE
        self._blob(ref.image.sha256, ref.image.size, "snapshot", origin.received_at)
        return Outcome.STORED

    def _alert(self, record: AlertIn) -> Outcome:
        event, origin = record.event, record.origin
        classes = sorted({box.class_name for box in event.boxes})
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO alerts (device, id, site, camera, rule_name, rule, boxes, classes, max_confidence,"
            " model_name, model_version, model_sha256, frame_time, created_time, received_at, snapshot_id) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                origin.device,
                event.id,
                origin.site,
                event.camera,
                event.rule.name,
                _dumps(event.rule.model_dump(mode="json")),
                _dumps([box.model_dump(mode="json") for box in event.boxes]),
                ",".join(classes),
                max((box.confidence for box in event.boxes), default=0.0),
                event.model.name,
                event.model.version,
                event.model.sha256,
                epoch(event.frame_ts),
                epoch(event.created_ts),
                origin.received_at,
                event.snapshot.id if event.snapshot is not None else None,
            ),
        )
        if not cursor.rowcount:
            self._drop(origin.device, DropReason.DUPLICATE_ID, origin.received_at, origin.topic, f"message {event.id}")
            return Outcome.DUPLICATE
        return Outcome.STORED

    def _device_status(self, record: DeviceStatusIn) -> Outcome:
        status, origin = record.status, record.origin
        self._ensure_device(origin.site, origin.device, origin.received_at)
        model = status.model
        ts = epoch(status.ts)
        if status.quality is not None:  # history: rollouts compare a model's figures with its predecessor's
            q = status.quality
            self.db.execute(
                "INSERT OR IGNORE INTO device_quality (device, status_time, model_sha256, model_version, since, "
                "frames, detections, confidence_sum, alerts, uncertain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    origin.device,
                    ts,
                    q.model_sha256,
                    model.version if model is not None and model.sha256 == q.model_sha256 else None,
                    epoch(q.since),
                    q.frames,
                    q.detections,
                    q.confidence_sum,
                    q.alerts,
                    q.uncertain_frames,
                ),
            )
        cursor = self.db.execute(
            "UPDATE devices SET site = ?, state = ?, agent_version = ?, protocol = ?, model_name = ?, "
            "model_version = ?, model_sha256 = ?, status_time = ?, groups = ? WHERE device = ? AND "
            "(status_time IS NULL OR status_time <= ?)",
            (
                origin.site,
                status.state,
                status.agent_version,
                status.protocol,
                model.name if model else None,
                model.version if model else None,
                model.sha256 if model else None,
                ts,
                ",".join(status.groups),
                origin.device,
                ts,
            ),
        )
        return Outcome.UPDATED if cursor.rowcount else Outcome.STALE

    def _camera_status(self, record: CameraStatusIn) -> Outcome:
        status, origin = record.status, record.origin
        self._ensure_device(origin.site, origin.device, origin.received_at)
        ts = epoch(status.ts)
        cursor = self.db.execute(
            "INSERT INTO cameras (device, camera, state, source, fps, frames, drops, reconnects, last_frame_time, "
            "error, status_time, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (device, camera) DO UPDATE SET state = excluded.state, source = excluded.source, "
            "fps = excluded.fps, frames = excluded.frames, drops = excluded.drops, reconnects = excluded.reconnects, "
            "last_frame_time = excluded.last_frame_time, error = excluded.error, status_time = excluded.status_time,"
            " received_at = excluded.received_at WHERE excluded.status_time >= cameras.status_time",
            (
                origin.device,
                status.camera,
                status.state.value,
                status.source,
                status.fps,
                status.frames,
                status.drops,
                status.reconnects,
                epoch(status.last_frame_at) if status.last_frame_at else None,
                status.error,
                ts,
                origin.received_at,
            ),
        )
        return Outcome.UPDATED if cursor.rowcount else Outcome.STALE

    def _ota_report(self, record: OtaReportIn) -> Outcome:
        report, origin = record.report, record.origin
        self._ensure_device(origin.site, origin.device, origin.received_at)
        release = _dumps(report.release.model_dump(mode="json")) if report.release else None
        active = _dumps(report.active.model_dump(mode="json")) if report.active else None
        ts = epoch(report.ts)
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO ota_reports (device, id, phase, release, active, progress, detail, report_time, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                origin.device,
                report.id,
                report.phase.value,
                release,
                active,
                report.progress,
                report.detail,
                ts,
                origin.received_at,
            ),
        )
        if not cursor.rowcount:
            self._drop(origin.device, DropReason.DUPLICATE_ID, origin.received_at, origin.topic, f"message {report.id}")
            return Outcome.DUPLICATE
        self.db.execute(
            "UPDATE devices SET ota_phase = ?, ota_release = ?, ota_active = ?, ota_progress = ?, ota_detail = ?, "
            "ota_time = ? WHERE device = ? AND (ota_time IS NULL OR ota_time <= ?)",
            (report.phase.value, release, active, report.progress, report.detail, ts, origin.device, ts),
        )
        return Outcome.STORED

    def finish(self, keep_rejected: int) -> None:
        for device, (site, at) in self.seen.items():
            self.db.execute(
                "INSERT INTO devices (device, site, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (device) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
                (device, site, at, at),
            )
        for (device, reason), (count, first, last, topic, detail) in self.drops.items():
            self.db.execute(
                "INSERT INTO drops (device, reason, count, first_at, last_at, last_topic, last_detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, reason) DO UPDATE SET "
                "count = count + excluded.count, last_at = excluded.last_at, last_topic = excluded.last_topic, "
                "last_detail = excluded.last_detail",
                (device, reason, count, first, last, topic, detail[:1000]),
            )
        if self.used_delta:
            self.db.execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) WHERE key = 'used_bytes'",
                (self.used_delta,),
            )
        if self.rejected_rows:
            self.db.execute(
                "DELETE FROM rejected WHERE rid <= (SELECT max(rid) FROM rejected) - ?", (max(0, keep_rejected),)
            )


__all__ = ["HEAD_BYTES", "KEEP_REJECTED", "StoreIndex", "connect", "epoch"]
