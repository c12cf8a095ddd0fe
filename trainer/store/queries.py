"""The index's read side: samples, labels, alerts, the fleet registry and the drop counters, as frozen rows.

Readers open their own connection (``open_reader``, ``query_only``) and never block the ingest writer (WAL).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from trainer.store.errors import StoreError

LABEL_STATES = ("pending", "exported", "labelled", "skipped")
GROUND_TRUTH_SOURCES = ("human", "oracle", "import")
"""Label sources that count as ground truth; ``pseudo`` labels (a teacher model's) never do unless asked."""


def open_reader(path: Path, busy_timeout_ms: int = 10000) -> sqlite3.Connection:
    """A read-only connection to an existing index."""
    if not Path(path).is_file():
        raise StoreError(f"no sample store index at {path} (has `edge-trainer serve` run with this store?)")
    db = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1e3, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    db.execute("PRAGMA query_only=ON")
    db.row_factory = sqlite3.Row
    return db


@dataclass(frozen=True)
class LabelRow:
    lid: int
    source: str
    author: str
    created_at: float
    boxes: List[Dict[str, Any]]
    ref: Optional[Dict[str, Any]]
    note: Optional[str]


@dataclass(frozen=True)
class SampleRow:
    """One stored sample with its whole lineage."""

    sid: int
    device: str
    id: str
    site: str
    camera: str
    reason: str
    track_id: Optional[int]
    note: Optional[str]
    model_name: str
    model_version: str
    model_sha256: str
    thresholds: Dict[str, float]
    predictions: List[Dict[str, Any]]
    frame_time: float
    received_at: float
    image_sha256: str
    image_size: int
    width: int
    height: int
    synthetic: Optional[Dict[str, Any]]
    worker: str
    label_state: str
    labels: Tuple[LabelRow, ...] = field(default=())

    def ground_truth(self, sources: Sequence[str] = GROUND_TRUTH_SOURCES) -> Optional[LabelRow]:
        """The newest label from one of ``sources`` (human review, the oracle, imported sets), if any."""
        for label in reversed(self.labels):
            if label.source in sources:
                return label
        return None

    def as_dict(self) -> Dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "labels"}
        data["labels"] = [label.__dict__ for label in self.labels]
        return data


_SAMPLE_COLUMNS = (
    "sid, device, id, site, camera, reason, track_id, note, model_name, model_version, model_sha256, thresholds, "
    "predictions, frame_time, received_at, image_sha256, image_size, width, height, synthetic, worker, label_state"
)


def _sample(row: sqlite3.Row, labels: Tuple[LabelRow, ...] = ()) -> SampleRow:
    data = dict(row)
    data["thresholds"] = json.loads(data["thresholds"])
    data["predictions"] = json.loads(data["predictions"])
    data["synthetic"] = json.loads(data["synthetic"]) if data["synthetic"] else None
    return SampleRow(**data, labels=labels)


def _labels(db: sqlite3.Connection, sids: Sequence[int]) -> Dict[int, List[LabelRow]]:
    found: Dict[int, List[LabelRow]] = {}
    for start in range(0, len(sids), 800):
        chunk = list(sids[start : start + 800])
        marks = ",".join("?" for _ in chunk)
        for row in db.execute(
            f"SELECT lid, sid, source, author, created_at, boxes, ref, note FROM labels WHERE sid IN ({marks}) "
            "ORDER BY lid",
            chunk,
        ):
            found.setdefault(row["sid"], []).append(
                LabelRow(
                    lid=row["lid"],
                    source=row["source"],
                    author=row["author"],
                    created_at=row["created_at"],
                    boxes=json.loads(row["boxes"]),
                    ref=json.loads(row["ref"]) if row["ref"] else None,
                    note=row["note"],
                )
            )
    return found


def list_samples(
    db: sqlite3.Connection,
    device: Optional[str] = None,
    camera: Optional[str] = None,
    reason: Optional[str] = None,
    label_state: Optional[str] = None,
    since: Optional[float] = None,
    synthetic: Optional[bool] = None,
    sids: Optional[Sequence[int]] = None,
    limit: Optional[int] = 50,
    before_sid: Optional[int] = None,
    newest_first: bool = True,
    with_labels: bool = True,
) -> List[SampleRow]:
    """Samples matching every filter given."""
    where: List[str] = []
    params: List[Any] = []
    for column, value in (("device", device), ("camera", camera), ("reason", reason), ("label_state", label_state)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        where.append("received_at >= ?")
        params.append(since)
    if before_sid is not None:  # the next page, newest first
        where.append("sid < ?")
        params.append(int(before_sid))
    if synthetic is not None:
        where.append("synthetic IS NOT NULL" if synthetic else "synthetic IS NULL")
    if sids is not None:
        if not sids:
            return []
        where.append(f"sid IN ({','.join('?' for _ in sids)})")
        params.extend(sids)
    sql = f"SELECT {_SAMPLE_COLUMNS} FROM samples"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY sid " + ("DESC" if newest_first else "ASC")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    rows = db.execute(sql, params).fetchall()
    labels = _labels(db, [row["sid"] for row in rows]) if with_labels else {}
    return [_sample(row, tuple(labels.get(row["sid"], ()))) for row in rows]


def label_tasks(db: sqlite3.Connection, sids: Sequence[int]) -> Dict[int, Tuple[str, int]]:
    """``sid -> (project, task id)`` of each sample's newest Label Studio export that has a task id."""
    found: Dict[int, Tuple[str, int]] = {}
    for start in range(0, len(sids), 800):
        chunk = list(sids[start : start + 800])
        rows = db.execute(
            "SELECT t.sid, e.project, t.task_id FROM label_tasks t JOIN label_exports e USING (export_id) "
            f"WHERE e.target = 'label-studio' AND t.task_id IS NOT NULL AND t.sid IN ({','.join('?' for _ in chunk)}) "
            "ORDER BY e.created_at",
            chunk,
        )
        for sid, project, task_id in rows:
            found[int(sid)] = (str(project), int(task_id))
    return found


def get_sample(db: sqlite3.Connection, key: str) -> Optional[SampleRow]:
    """A sample by its store id (``sid``), its message id, or ``device/id``."""
    if key.isdigit():
        row = db.execute(f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE sid = ?", (int(key),)).fetchone()
    elif "/" in key:
        device, message_id = key.split("/", 1)
        row = db.execute(
            f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE device = ? AND id = ?", (device, message_id)
        ).fetchone()
    else:
        row = db.execute(f"SELECT {_SAMPLE_COLUMNS} FROM samples WHERE id = ? ORDER BY sid LIMIT 1", (key,)).fetchone()
    if row is None:
        return None
    return _sample(row, tuple(_labels(db, [row["sid"]]).get(row["sid"], ())))


def sample_stats(db: sqlite3.Connection) -> Dict[str, Any]:
    """Counts a person wants first: totals, by reason, device, label state; bytes held; drops by reason."""

    def grouped(sql: str) -> Dict[str, int]:
        return {str(row[0]): int(row[1]) for row in db.execute(sql)}

    used = db.execute("SELECT value FROM meta WHERE key = 'used_bytes'").fetchone()
    total = db.execute("SELECT count(*), min(received_at), max(received_at) FROM samples").fetchone()
    return {
        "samples": int(total[0]),
        "first_received_at": total[1],
        "last_received_at": total[2],
        "by_reason": grouped("SELECT reason, count(*) FROM samples GROUP BY reason ORDER BY reason"),
        "by_device": grouped("SELECT device, count(*) FROM samples GROUP BY device ORDER BY device"),
        "by_label_state": grouped("SELECT label_state, count(*) FROM samples GROUP BY label_state"),
        "labels_by_source": grouped("SELECT source, count(*) FROM labels GROUP BY source"),
        "synthetic": int(db.execute("SELECT count(*) FROM samples WHERE synthetic IS NOT NULL").fetchone()[0]),
        "alerts": int(db.execute("SELECT count(*) FROM alerts").fetchone()[0]),
        "snapshots": int(db.execute("SELECT count(*) FROM snapshots").fetchone()[0]),
        "blob_bytes": int(used[0]) if used else 0,
        "drops_by_reason": grouped("SELECT reason, sum(count) FROM drops GROUP BY reason ORDER BY reason"),
    }


@dataclass(frozen=True)
class CameraRow:
    camera: str
    state: str
    source: str
    fps: float
    frames: int
    drops: int
    reconnects: int
    last_frame_time: Optional[float]
    error: Optional[str]
    status_time: float
    samples_by_reason: Dict[str, int]


@dataclass(frozen=True)
class DeviceRow:
    """One device in the fleet registry; rates are over the ``window_s`` before ``now``."""

    device: str
    site: str
    state: Optional[str]
    agent_version: Optional[str]
    model_name: Optional[str]
    model_version: Optional[str]
    model_sha256: Optional[str]
    status_time: Optional[float]
    groups: Tuple[str, ...]
    first_seen: float
    last_seen: float
    ota_phase: Optional[str]
    ota_release: Optional[Dict[str, Any]]
    ota_active: Optional[Dict[str, Any]]
    ota_detail: Optional[str]
    ota_time: Optional[float]
    window_s: float
    alerts_in_window: int
    samples_in_window: Dict[str, int]
    drops: Dict[str, int]
    cameras: Tuple[CameraRow, ...]

    @property
    def alerts_per_hour(self) -> float:
        return self.alerts_in_window * 3600.0 / self.window_s

    def samples_per_hour(self) -> Dict[str, float]:
        return {reason: count * 3600.0 / self.window_s for reason, count in self.samples_in_window.items()}

    def as_dict(self) -> Dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "cameras"}
        data["cameras"] = [camera.__dict__ for camera in self.cameras]
        data["alerts_per_hour"] = self.alerts_per_hour
        data["samples_per_hour"] = self.samples_per_hour()
        return data


def fleet(
    db: sqlite3.Connection,
    now: float,
    window_s: float = 3600.0,
    site: Optional[str] = None,
    device: Optional[str] = None,
) -> List[DeviceRow]:
    """Every device (of ``site``), with its cameras, OTA phase, and alert and sample rates."""
    since = now - window_s
    where, params = [], []
    if site is not None:
        where.append("site = ?")
        params.append(site)
    if device is not None:
        where.append("device = ?")
        params.append(device)
    sql = "SELECT * FROM devices" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY site, device"
    devices = db.execute(sql, params).fetchall()
    samples: Dict[str, Dict[str, int]] = {}
    per_camera: Dict[Tuple[str, str], Dict[str, int]] = {}
    for row in db.execute(
        "SELECT device, camera, reason, count(*) FROM samples WHERE received_at >= ? GROUP BY device, camera, reason",
        (since,),
    ):
        dev_counts = samples.setdefault(row[0], {})
        dev_counts[row[2]] = dev_counts.get(row[2], 0) + int(row[3])
        per_camera.setdefault((row[0], row[1]), {})[row[2]] = int(row[3])
    alerts = {
        str(row[0]): int(row[1])
        for row in db.execute("SELECT device, count(*) FROM alerts WHERE received_at >= ? GROUP BY device", (since,))
    }
    drops: Dict[str, Dict[str, int]] = {}
    for row in db.execute("SELECT device, reason, count FROM drops"):
        drops.setdefault(row[0], {})[row[1]] = int(row[2])
    cameras: Dict[str, List[CameraRow]] = {}
    for row in db.execute("SELECT * FROM cameras ORDER BY device, camera"):
        cameras.setdefault(row["device"], []).append(
            CameraRow(
                camera=row["camera"],
                state=row["state"],
                source=row["source"],
                fps=row["fps"],
                frames=row["frames"],
                drops=row["drops"],
                reconnects=row["reconnects"],
                last_frame_time=row["last_frame_time"],
                error=row["error"],
                status_time=row["status_time"],
                samples_by_reason=per_camera.get((row["device"], row["camera"]), {}),
            )
        )
    result = []
    for row in devices:
        name = row["device"]
        result.append(
            DeviceRow(
                device=name,
                site=row["site"],
                state=row["state"],
                agent_version=row["agent_version"],
                model_name=row["model_name"],
                model_version=row["model_version"],
                model_sha256=row["model_sha256"],
                status_time=row["status_time"],
                groups=tuple(g for g in (row["groups"] or "").split(",") if g),
                first_seen=row["first_seen"],
                last_seen=row["last_seen"],
                ota_phase=row["ota_phase"],
                ota_release=json.loads(row["ota_release"]) if row["ota_release"] else None,
                ota_active=json.loads(row["ota_active"]) if row["ota_active"] else None,
                ota_detail=row["ota_detail"],
                ota_time=row["ota_time"],
                window_s=window_s,
                alerts_in_window=alerts.get(name, 0),
                samples_in_window=samples.get(name, {}),
                drops=drops.get(name, {}),
                cameras=tuple(cameras.get(name, ())),
            )
        )
    return result


@dataclass(frozen=True)
class AlertRow:
    device: str
    id: str
    camera: str
    rule_name: str
    classes: List[str]
    max_confidence: float
    model_version: str
    frame_time: float
    received_at: float
    boxes: List[Dict[str, Any]]
    snapshot_id: Optional[str]
    snapshot_sha256: Optional[str]  # set once the snapshot itself has arrived (either order)


def alert_history(db: sqlite3.Connection, device: Optional[str] = None, limit: int = 50) -> List[AlertRow]:
    """Newest alerts first, each matched to its snapshot when that arrived."""
    sql = (
        "SELECT a.device, a.id, a.camera, a.rule_name, a.classes, a.max_confidence, a.model_version, a.frame_time, "
        "a.received_at, a.boxes, a.snapshot_id, s.image_sha256 FROM alerts a LEFT JOIN snapshots s "
        "ON s.device = a.device AND s.id = a.snapshot_id"
    )
    params: List[Any] = []
    if device is not None:
        sql += " WHERE a.device = ?"
        params.append(device)
    sql += " ORDER BY a.aid DESC LIMIT ?"
    params.append(limit)
    return [
        AlertRow(
            device=row[0],
            id=row[1],
            camera=row[2],
            rule_name=row[3],
            classes=[c for c in str(row[4]).split(",") if c],
            max_confidence=row[5],
            model_version=row[6],
            frame_time=row[7],
            received_at=row[8],
            boxes=json.loads(row[9]),
            snapshot_id=row[10],
            snapshot_sha256=row[11],
        )
        for row in db.execute(sql, params)
    ]


def drop_counts(db: sqlite3.Connection) -> List[Dict[str, Any]]:
    """Every (device, reason) drop counter with its last topic and detail."""
    return [dict(row) for row in db.execute("SELECT * FROM drops ORDER BY device, reason")]


@dataclass(frozen=True)
class QualityRow:
    """A device's report of its active model's figures (cumulative since ``since``)."""

    device: str
    status_time: float
    model_sha256: str
    model_version: Optional[str]
    since: float
    frames: int
    detections: int
    confidence_sum: float
    alerts: int
    uncertain: int


def device_quality(db: sqlite3.Connection, device: str, model_sha256: Optional[str] = None) -> List[QualityRow]:
    """Every quality report of a device (of one model), oldest first."""
    sql = "SELECT * FROM device_quality WHERE device = ?"
    params: List[Any] = [device]
    if model_sha256 is not None:
        sql += " AND model_sha256 = ?"
        params.append(model_sha256)
    return [QualityRow(**dict(row)) for row in db.execute(sql + " ORDER BY status_time", params)]
