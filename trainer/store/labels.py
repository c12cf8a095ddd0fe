"""The index's labelling tables, writer side: exports (which samples went to which labelling task) and labels
(ground truth from human review, imported sets and the oracle stand-in; a teacher model's pseudo-labels are
kept apart by their source).

Labelling states of a sample::

    pending ──export──► exported ──import (annotation)──► labelled
       │                   └──────import (skipped)──────► skipped
       └──oracle / import of a labelled set──► labelled          (pseudo-labels leave the state alone)
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from trainer.store.errors import StoreWriteError

SOURCES = ("human", "oracle", "import", "pseudo")


@dataclass(frozen=True)
class NewLabel:
    """A label to store for sample ``sid``: boxes in the sample image's pixels."""

    sid: int
    source: str
    author: str
    boxes: List[Dict[str, Any]]
    ref: Optional[Dict[str, Any]] = None
    ref_key: Optional[str] = None  # identifies what was imported (annotation id + update time), for idempotency
    note: Optional[str] = None
    created_at: float = field(default_factory=time.time)
    skipped: bool = False  # the reviewer skipped the task: no boxes, the sample is marked skipped


@dataclass(frozen=True)
class ExportRecord:
    export_id: str
    created_at: float
    target: str
    project: Optional[str]
    location: Optional[str]
    classes: List[str]
    count: int


def _tx(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")


def record_export(
    db: sqlite3.Connection,
    export_id: str,
    target: str,
    classes: Sequence[str],
    tasks: Sequence[Tuple[int, Optional[int]]],
    project: Optional[str] = None,
    location: Optional[str] = None,
) -> None:
    """Remember an export: ``tasks`` are (sid, labelling-tool task id or None). Pending samples become exported."""
    try:
        _tx(db)
        db.execute(
            "INSERT INTO label_exports (export_id, created_at, target, project, location, classes, count) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (export_id, time.time(), target, project, location, json.dumps(list(classes)), len(tasks)),
        )
        db.executemany(
            "INSERT INTO label_tasks (export_id, sid, task_id) VALUES (?, ?, ?)",
            [(export_id, sid, task_id) for sid, task_id in tasks],
        )
        db.executemany(
            "UPDATE samples SET label_state = 'exported' WHERE sid = ? AND label_state = 'pending'",
            [(sid,) for sid, _ in tasks],
        )
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.execute("ROLLBACK")
        raise StoreWriteError(f"recording export {export_id}: {exc}") from exc


def get_export(db: sqlite3.Connection, export_id: str) -> Optional[ExportRecord]:
    row = db.execute(
        "SELECT export_id, created_at, target, project, location, classes, count FROM label_exports "
        "WHERE export_id = ?",
        (export_id,),
    ).fetchone()
    if row is None:
        return None
    return ExportRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6])


def list_exports(db: sqlite3.Connection) -> List[Tuple[ExportRecord, Dict[str, int]]]:
    """Every export, newest first, with its samples' labelling states now."""
    result = []
    for (export_id,) in db.execute("SELECT export_id FROM label_exports ORDER BY created_at DESC").fetchall():
        record = get_export(db, export_id)
        assert record is not None
        states = dict(
            db.execute(
                "SELECT s.label_state, count(*) FROM label_tasks t JOIN samples s ON s.sid = t.sid "
                "WHERE t.export_id = ? GROUP BY s.label_state",
                (export_id,),
            ).fetchall()
        )
        result.append((record, states))
    return result


def exported_tasks(db: sqlite3.Connection, export_id: str) -> Dict[int, Optional[int]]:
    """sid -> task id of one export."""
    return dict(db.execute("SELECT sid, task_id FROM label_tasks WHERE export_id = ?", (export_id,)).fetchall())


def add_labels(db: sqlite3.Connection, labels: Iterable[NewLabel]) -> List[bool]:
    """Store labels in one transaction; returns, per label, whether it was new (False: imported before).
    Ground truth marks its sample labelled (or skipped); pseudo-labels leave the state alone."""
    stored: List[bool] = []
    try:
        _tx(db)
        for label in labels:
            if label.source not in SOURCES:
                raise ValueError(f"unknown label source {label.source!r}")
            cursor = db.execute(
                "INSERT OR IGNORE INTO labels (sid, source, author, created_at, boxes, ref, ref_key, note) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    label.sid,
                    label.source,
                    label.author,
                    label.created_at,
                    json.dumps(label.boxes, sort_keys=True),
                    json.dumps(label.ref, sort_keys=True) if label.ref is not None else None,
                    label.ref_key,
                    label.note,
                ),
            )
            stored.append(bool(cursor.rowcount))
            if not cursor.rowcount:
                continue
            if label.source != "pseudo":
                db.execute(
                    "UPDATE samples SET label_state = ? WHERE sid = ?",
                    ("skipped" if label.skipped else "labelled", label.sid),
                )
        db.execute("COMMIT")
    except (sqlite3.Error, ValueError) as exc:
        db.execute("ROLLBACK")
        raise StoreWriteError(f"storing labels: {exc}") from exc
    return stored
