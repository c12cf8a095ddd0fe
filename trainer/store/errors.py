"""Errors of the sample store, split by fault::

    StoreError                 base
    ├── StoreWriteError        the disk, the database or the object store failed (transient: retry later;
    │                          nothing was acknowledged, nothing is lost)
    ├── StoreSchemaError       the index was written by a newer version of this software
    ├── BlobNotFoundError      no blob under that digest
    └── BlobCorruptError       the bytes under a digest do not hash to it (disk or bucket damage)

A sample that does not fit the disk budget is not an error: it is refused and counted (``store_full``).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of the sample store's errors."""


class StoreWriteError(StoreError):
    """Writing blobs or index rows failed; the caller retries (the messages stay unacknowledged)."""


class StoreSchemaError(StoreError):
    """The index's schema version is not one this software knows."""


class BlobNotFoundError(StoreError, KeyError):
    """No blob is stored under ``sha256``."""

    def __init__(self, sha256: str) -> None:
        super().__init__(f"no blob {sha256}")
        self.sha256 = sha256


class BlobCorruptError(StoreError):
    """The bytes stored under ``sha256`` hash to something else."""

    def __init__(self, sha256: str, actual: str) -> None:
        super().__init__(f"blob {sha256} is corrupt: its bytes hash to {actual}")
        self.sha256 = sha256
        self.actual = actual
