"""The sample store: content-addressed image blobs (a directory, or any S3-compatible bucket) and one SQLite
(WAL) index of every sample with its lineage, its labels, the alerts and snapshots, and the fleet registry.

Public surface::

    SampleStore(config)           writer: write_batch(records) -> outcomes (durable before it returns)
    open_reader(path)             read-only connection for the query functions below
    list_samples / get_sample / sample_stats / fleet / alert_history / drop_counts
    LocalBlobStore, S3BlobStore   the blob backends (BlobStore interface)
    plan_images, BudgetState      the pure dedupe and budget decision
    connect, add_labels, NewLabel  the index's writer connection and the labels, exports of the round trip

Errors: see trainer.store.errors.
"""

from __future__ import annotations

from trainer.store.blobs import BlobStore, LocalBlobStore, blob_key
from trainer.store.config import LocalBlobsConfig, S3BlobsConfig, StoreBudgetConfig, StoreConfig
from trainer.store.errors import BlobCorruptError, BlobNotFoundError, StoreError, StoreSchemaError, StoreWriteError
from trainer.store.index import connect
from trainer.store.labels import (
    ExportRecord,
    NewLabel,
    add_labels,
    exported_tasks,
    get_export,
    list_exports,
    record_export,
)
from trainer.store.plan import BudgetState, ImageDecision, ImageItem, plan_images
from trainer.store.queries import (
    GROUND_TRUTH_SOURCES,
    LABEL_STATES,
    AlertRow,
    CameraRow,
    DeviceRow,
    LabelRow,
    QualityRow,
    SampleRow,
    alert_history,
    device_quality,
    drop_counts,
    fleet,
    get_sample,
    label_tasks,
    list_samples,
    open_reader,
    sample_stats,
)
from trainer.store.records import (
    AlertIn,
    CameraStatusIn,
    DeviceStatusIn,
    DropIn,
    DropReason,
    Origin,
    OtaReportIn,
    Outcome,
    Record,
    SampleIn,
    SnapshotIn,
)
from trainer.store.store import SampleStore, find_orphans, open_blobs

__all__ = [
    "GROUND_TRUTH_SOURCES",
    "LABEL_STATES",
    "AlertIn",
    "AlertRow",
    "BlobCorruptError",
    "BlobNotFoundError",
    "BlobStore",
    "BudgetState",
    "CameraRow",
    "CameraStatusIn",
    "DeviceRow",
    "DeviceStatusIn",
    "DropIn",
    "DropReason",
    "ExportRecord",
    "ImageDecision",
    "ImageItem",
    "LabelRow",
    "LocalBlobStore",
    "LocalBlobsConfig",
    "NewLabel",
    "Origin",
    "OtaReportIn",
    "Outcome",
    "QualityRow",
    "Record",
    "S3BlobsConfig",
    "SampleIn",
    "SampleRow",
    "SampleStore",
    "SnapshotIn",
    "StoreBudgetConfig",
    "StoreConfig",
    "StoreError",
    "StoreSchemaError",
    "StoreWriteError",
    "add_labels",
    "alert_history",
    "blob_key",
    "connect",
    "device_quality",
    "drop_counts",
    "exported_tasks",
    "find_orphans",
    "fleet",
    "get_export",
    "get_sample",
    "label_tasks",
    "list_exports",
    "list_samples",
    "open_blobs",
    "open_reader",
    "plan_images",
    "record_export",
    "sample_stats",
]
