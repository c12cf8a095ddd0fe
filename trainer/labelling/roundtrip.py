"""The labelling round trip: samples out as Label Studio tasks (to a running server, or to a JSON file for an
import by hand), reviewed annotations back in as ground truth, with who and when.

::

    export: pending samples ─► tasks (image URL + the model's boxes as pre-annotations + our ids)
              ├─► Label Studio: project (label config of the classes, local-files storage) ─► import
              └─► tasks.json
            the store records the export (export id, sample → task id); the samples become ``exported``
    import: Label Studio's export (API or a file) ─► for each task: ours? (export id, sample id, image digest,
            task id all match what we recorded) ─► the newest annotation ─► label (human, author, time);
            a skipped task marks its sample ``skipped``; anything not ours is refused and listed
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from trainer.labelling.config import ImageUrlConfig
from trainer.labelling.label_studio import LabelStudio
from trainer.labelling.oracle import OracleRefused, oracle_boxes
from trainer.labelling.tasks import (
    TaskError,
    annotation_boxes,
    final_annotation,
    label_config,
    sample_task,
    task_identity,
    to_region,
)
from trainer.store import (
    BlobStore,
    NewLabel,
    SampleRow,
    add_labels,
    blob_key,
    exported_tasks,
    get_export,
    list_samples,
    record_export,
)


def new_export_id() -> str:
    return f"x{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def image_url(row: SampleRow, urls: ImageUrlConfig, store_path: Path, blobs: BlobStore) -> str:
    """Where a labelling tool finds the sample's image (see ImageUrlConfig)."""
    key = blob_key(row.image_sha256)
    if urls.mode == "template":
        assert urls.template is not None
        return urls.template.format(key=key, sha256=row.image_sha256)
    if urls.mode == "presigned":
        url = blobs.url(row.image_sha256)
        if url is None:
            raise ValueError("image_urls.mode presigned needs the S3 blob store")
        return url
    root = Path(urls.document_root or store_path).resolve()
    relative = os.path.relpath((Path(store_path) / key).resolve(), root)
    if relative.startswith(".."):
        raise ValueError(f"the store {store_path} is not below Label Studio's document root {root}")
    return f"/data/local-files/?d={relative}"


@dataclass(frozen=True)
class ExportResult:
    export_id: str
    target: str
    count: int
    seconds: float
    project: Optional[int] = None
    location: Optional[str] = None


def _tasks(
    rows: Sequence[SampleRow], export_id: str, classes: Sequence[str], url: Callable[[SampleRow], str]
) -> List[Dict[str, Any]]:
    return [sample_task(row, url(row), export_id, classes) for row in rows]


def export_to_label_studio(
    writer: sqlite3.Connection,
    rows: Sequence[SampleRow],
    client: LabelStudio,
    classes: Sequence[str],
    urls: ImageUrlConfig,
    store_path: Path,
    blobs: BlobStore,
    title: str,
    project: Optional[int] = None,
    batch: int = 500,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ExportResult:
    """Create (or reuse) a project and import one task per sample; record the export."""
    started = time.perf_counter()
    export_id = new_export_id()
    tasks = _tasks(rows, export_id, classes, lambda r: image_url(r, urls, store_path, blobs))
    if project is None:
        project = client.create_project(title, label_config(classes), description=f"edge-trainer export {export_id}")
        if urls.mode == "local_files":
            client.add_local_storage(project, str((Path(store_path) / "blobs").resolve()))
    task_ids: List[int] = []
    for start in range(0, len(tasks), batch):
        task_ids.extend(client.import_tasks(project, tasks[start : start + batch]))
        if progress:
            progress(len(task_ids), len(tasks))
    record_export(
        writer,
        export_id,
        "label-studio",
        classes,
        [(r.sid, t) for r, t in zip(rows, task_ids)],
        project=str(project),
        location=client.url,
    )
    return ExportResult(export_id, "label-studio", len(rows), time.perf_counter() - started, project, client.url)


def export_to_file(
    writer: sqlite3.Connection,
    rows: Sequence[SampleRow],
    path: Path,
    classes: Sequence[str],
    urls: ImageUrlConfig,
    store_path: Path,
    blobs: BlobStore,
) -> ExportResult:
    """Write the tasks as a Label Studio import file; record the export (task ids are assigned at import)."""
    started = time.perf_counter()
    export_id = new_export_id()
    tasks = _tasks(rows, export_id, classes, lambda r: image_url(r, urls, store_path, blobs))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, indent=1))
    (path.parent / f"{path.stem}.label-config.xml").write_text(label_config(classes) + "\n")
    record_export(writer, export_id, "file", classes, [(r.sid, None) for r in rows], location=str(path))
    return ExportResult(export_id, "file", len(rows), time.perf_counter() - started, None, str(path))


@dataclass
class ImportReport:
    labelled: int = 0
    skipped: int = 0
    waiting: int = 0  # tasks nobody has submitted yet
    already: int = 0  # annotations imported before
    refused: List[Tuple[Any, str]] = field(default_factory=list)  # (task id, why)

    def merge(self, other: ImportReport) -> None:
        """Add another project's report to this one."""
        for name in ("labelled", "skipped", "waiting", "already"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.refused.extend(other.refused)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "labelled": self.labelled,
            "skipped": self.skipped,
            "waiting": self.waiting,
            "already": self.already,
            "refused": [{"task": t, "reason": r} for t, r in self.refused],
        }


def _epoch(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def import_annotations(
    writer: sqlite3.Connection,
    reader: sqlite3.Connection,
    tasks: Sequence[Dict[str, Any]],
    author_of: Callable[[Any], str],
    tool: str = "label-studio",
    only_export: Optional[str] = None,
) -> ImportReport:
    """Bring reviewed annotations back as ground truth (see the module docstring)."""
    report = ImportReport()
    exports: Dict[str, Any] = {}
    recorded: Dict[str, Dict[int, Optional[int]]] = {}
    identities: List[Tuple[Dict[str, Any], str, int, str]] = []
    for task in tasks:
        task_id = task.get("id") if isinstance(task, dict) else None
        try:
            if not isinstance(task, dict):
                raise TaskError("not a task object")
            export_id, sid, sha = task_identity(task)
            if only_export is not None and export_id != only_export:
                raise TaskError(f"belongs to export {export_id}, not {only_export}")
            if export_id not in exports:
                exports[export_id] = get_export(reader, export_id)
                recorded[export_id] = exported_tasks(reader, export_id) if exports[export_id] else {}
            if exports[export_id] is None:
                raise TaskError(f"export {export_id} is not one of this store's")
            if sid not in recorded[export_id]:
                raise TaskError(f"sample {sid} was not in export {export_id}")
            expected_task = recorded[export_id][sid]
            if expected_task is not None and expected_task != task_id:
                raise TaskError(f"sample {sid} went out as task {expected_task}, not {task_id}")
        except TaskError as exc:
            report.refused.append((task_id, str(exc)))
            continue
        identities.append((task, export_id, sid, sha))
    rows = {r.sid: r for r in list_samples(reader, sids=[i[2] for i in identities], limit=None, with_labels=False)}
    labels: List[NewLabel] = []
    for task, export_id, sid, sha in identities:
        task_id = task.get("id")
        row = rows.get(sid)
        if row is None or row.image_sha256 != sha:
            report.refused.append((task_id, f"sample {sid} is not the image the task was made of"))
            continue
        annotation = final_annotation(task)
        if annotation is None:
            report.waiting += 1
            continue
        classes = exports[export_id].classes
        cancelled = bool(annotation.get("was_cancelled"))
        try:
            boxes = [] if cancelled else annotation_boxes(annotation, row.width, row.height, classes)
        except TaskError as exc:
            report.refused.append((task_id, f"annotation {annotation.get('id')}: {exc}"))
            continue
        updated = annotation.get("updated_at") or annotation.get("created_at")
        ref = {
            "tool": tool,
            "export": export_id,
            "project": task.get("project"),
            "task": task_id,
            "annotation": annotation.get("id"),
            "updated_at": updated,
            "lead_time_s": annotation.get("lead_time"),
        }
        labels.append(
            NewLabel(
                sid=sid,
                source="human",
                author=author_of(annotation.get("completed_by")),
                boxes=boxes,
                ref=ref,
                ref_key=f"{tool}:{export_id}:{task_id}:{annotation.get('id')}:{updated}",
                created_at=_epoch(updated),
                skipped=cancelled,
            )
        )
    for label, new in zip(labels, add_labels(writer, labels)):
        if not new:
            report.already += 1  # imported before: not a new verdict
        elif label.skipped:
            report.skipped += 1
        else:
            report.labelled += 1
    return report


def review_with_oracle(
    client: LabelStudio,
    reader: sqlite3.Connection,
    export_id: str,
    blobs: BlobStore,
    refused: Optional[List[Tuple[int, str]]] = None,
) -> int:
    """The oracle (a STAND-IN FOR HUMAN REVIEW) submits its ground truth as annotations of an export's Label
    Studio tasks, as a reviewer would; ``label import`` then brings them back like any review. Synthetic
    samples only; the others are left for people (listed in ``refused``). Returns the annotations submitted."""
    export = get_export(reader, export_id)
    if export is None or export.target != "label-studio":
        raise ValueError(f"{export_id} is not a Label Studio export of this store")
    tasks = exported_tasks(reader, export_id)
    rows = list_samples(reader, sids=list(tasks), limit=None, with_labels=False)
    submitted = 0
    for row in rows:
        task_id = tasks[row.sid]
        if task_id is None:
            continue
        try:
            boxes = oracle_boxes(row, blobs.get(row.image_sha256), export.classes)
        except OracleRefused as exc:
            if refused is not None:
                refused.append((row.sid, str(exc)))
            continue
        result = [to_region(box, row.width, row.height, export.classes) for box in boxes]
        client.submit_annotation(task_id, result, lead_time_s=0.0)
        submitted += 1
    return submitted
