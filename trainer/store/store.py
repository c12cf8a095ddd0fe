"""The sample store: blobs (local directory or S3) + the SQLite index, written as one batch at a time.

::

    write_batch(records)
      ├─ plan_images(): duplicates and budget decided from what the index holds (pure, trainer.store.plan)
      ├─ blobs.put_many(new images)          durable on return (fsync / PUT answered)
      └─ index.commit(records, decisions)    one transaction, fsynced
    → one Outcome per record; only now may the caller acknowledge the messages

A crash between the two steps leaves blobs that no row names (orphans): harmless, since the unacknowledged
messages are delivered again and find their blob in place; ``edge-trainer samples fsck`` lists and removes
the rest.
"""

from __future__ import annotations

import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

from trainer.store.blobs import BlobStore, LocalBlobStore
from trainer.store.config import LocalBlobsConfig, S3BlobsConfig, StoreConfig
from trainer.store.index import StoreIndex
from trainer.store.plan import BudgetState, ImageDecision, ImageItem, plan_images
from trainer.store.records import Outcome, Record, SampleIn, SnapshotIn
from trainer.store.s3 import S3BlobStore


def open_blobs(config: StoreConfig) -> BlobStore:
    """The blob backend the configuration names (boto3 is imported only for S3)."""
    blobs = config.blobs
    if isinstance(blobs, LocalBlobsConfig):
        return LocalBlobStore(config.path, write_threads=blobs.write_threads, durability=blobs.durability)
    if isinstance(blobs, S3BlobsConfig):
        return S3BlobStore.from_config(blobs)
    raise TypeError(f"unknown blob backend {type(blobs).__name__}")  # pragma: no cover


class SampleStore:
    """Writer side of the store. Owned by one thread (the ingest ``store-writer``, or a CLI command)."""

    def __init__(self, config: StoreConfig, blobs: Optional[BlobStore] = None) -> None:
        self.config = config
        self.blobs = blobs if blobs is not None else open_blobs(config)
        self.index = StoreIndex(config.index_path, busy_timeout_ms=config.busy_timeout_ms)

    def budget(self) -> BudgetState:
        """How full the store is now."""
        free = self.blobs.free_bytes()
        if self.blobs.kind != "local":
            # the index still lives on local disk: keep room for it even when blobs go to an object store
            free = int(shutil.disk_usage(self.config.path).free)
        return BudgetState(
            used_bytes=self.index.used_bytes(),
            max_bytes=self.config.budget.max_bytes,
            free_bytes=free,
            min_free_bytes=self.config.budget.min_free_bytes,
        )

    def write_batch(self, records: Sequence[Record]) -> List[Outcome]:
        """Store a batch durably; see the module docstring. Raises StoreWriteError (retry: nothing is lost)."""
        positions: List[int] = []
        items: List[ImageItem] = []
        payloads: List[Tuple[str, bytes]] = []
        for position, record in enumerate(records):
            if isinstance(record, SampleIn):
                image = record.meta.image
                items.append(ImageItem(record.origin.device, record.meta.id, image.sha256, image.size, True))
                payloads.append((image.sha256, record.jpeg))
                positions.append(position)
            elif isinstance(record, SnapshotIn):
                image = record.ref.image
                items.append(ImageItem(record.origin.device, record.ref.id, image.sha256, image.size, False))
                payloads.append((image.sha256, record.jpeg))
                positions.append(position)
        decisions: Dict[int, ImageDecision] = {}
        if items:
            known_ids, known_digests, stored = self.index.lookup(items)
            plan = plan_images(items, known_ids, known_digests, stored, self.budget())
            self.blobs.put_many([payloads[i] for i in plan.new_blobs])
            decisions = {positions[i]: decision for i, decision in enumerate(plan.decisions)}
        return self.index.commit(records, decisions)

    def close(self) -> None:
        self.index.close()
        self.blobs.close()


def find_orphans(index_db: Any, blobs: BlobStore) -> Tuple[List[str], List[str]]:
    """(blobs no index row names, index rows whose blob is missing). The first are harmless leftovers of a
    crash between the blob write and the index commit whose messages never came again (their session
    expired); the second would be damage (a lost file or bucket object)."""
    known = {row[0] for row in index_db.execute("SELECT sha256 FROM blobs")}
    stored = set(blobs.iter_digests())
    return sorted(stored - known), sorted(known - stored)
