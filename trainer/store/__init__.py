"""The sample store: content-addressed image blobs (a directory, or any S3-compatible bucket) and one SQLite
(WAL) index of every sample with its lineage, its labels, the alerts and snapshots, and the fleet registry.

Public surface::

    SampleStore(config)           writer: write_batch(records) -> outcomes (durable before it returns)
    open_reader(path)             read-only connection for the query functions below
    list_samples / get_sample / sample_stats / fleet / alert_history / drop_counts
    LocalBlobStore, S3BlobStore   the blob backends (BlobStore interface)
    plan_images, BudgetState      the pure dedupe and budget decision

Errors: see trainer.store.errors.
"""

from __future__ import annotations

from trainer.store.blobs import BlobStore, LocalBlobStore, blob_key
from trainer.store.config import LocalBlobsConfig, S3BlobsConfig, StoreBudgetConfig, StoreConfig
from trainer.store.errors import BlobCorruptError, BlobNotFoundError, StoreError, StoreSchemaError, StoreWriteError
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
from trainer.store.store import SampleStore, open_blobs

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
    "ImageDecision",
    "ImageItem",
    "LabelRow",
    "LocalBlobStore",
    "LocalBlobsConfig",
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
    "alert_history",
    "blob_key",
    "device_quality",
    "drop_counts",
    "fleet",
    "get_sample",
    "list_samples",
    "open_blobs",
    "open_reader",
    "plan_images",
    "sample_stats",
]
