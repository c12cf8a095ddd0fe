"""Configuration of the sample store: where blobs live (a local directory or an S3-compatible bucket, chosen
by ``type``), where the SQLite index lives, and the disk budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import Field

from agent.strict import StrictModel


class LocalBlobsConfig(StrictModel):
    """Content-addressed JPEGs in a directory (``blobs/ab/<sha256>.jpg``), fsynced before acknowledgement."""

    type: Literal["local"] = Field(default="local", description="Blob backend.")
    durability: Literal["syncfs", "fsync"] = Field(
        default="syncfs",
        description="How a batch of blobs is made durable before its messages are acknowledged. syncfs: one "
        "syncfs(2) of the store's file system per batch (Linux; 3.6x the files/s of fsync here; also flushes "
        "other writers of that file system, so give the store its own volume); fsync: every file and directory "
        "fsynced (POSIX).",
    )
    write_threads: int = Field(
        default=8,
        ge=1,
        le=64,
        description="fsync mode: files written and fsynced in parallel per batch (parallel fsyncs share journal "
        "commits).",
    )


class S3BlobsConfig(StrictModel):
    """Blobs in an S3-compatible bucket (AWS S3, SeaweedFS, Garage, MinIO) through boto3."""

    type: Literal["s3"] = Field(description="Blob backend.")
    bucket: str = Field(min_length=3, max_length=63, description="Bucket name (must exist).")
    prefix: str = Field(default="samples/", max_length=512, description="Key prefix inside the bucket.")
    endpoint_url: Optional[str] = Field(
        default=None, description="Endpoint of a self-hosted S3 server (SeaweedFS, Garage); null for AWS."
    )
    region: Optional[str] = Field(default=None, description="Region name (AWS); self-hosted servers ignore it.")
    access_key_id: Optional[str] = Field(
        default=None, description="Access key id; null: boto3's usual chain (environment, profile, instance role)."
    )
    secret_access_key: Optional[str] = Field(
        default=None, description="Secret key; use `!credential NAME` so it comes from systemd credentials."
    )
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="Bucket addressing; self-hosted servers usually want path."
    )
    put_threads: int = Field(default=16, ge=1, le=128, description="Concurrent PUTs per batch.")
    presign_expiry_s: int = Field(
        default=7 * 86400, ge=60, le=7 * 86400, description="Lifetime of pre-signed image URLs (labelling)."
    )


BlobsConfig = Annotated[Union[LocalBlobsConfig, S3BlobsConfig], Field(discriminator="type")]


class StoreBudgetConfig(StrictModel):
    """How much the store may hold. Beyond it new samples and snapshots are refused (counted ``store_full``);
    what is stored is kept; alerts and status (small) are still recorded."""

    max_bytes: int = Field(
        default=200 * 1024**3, ge=1024, description="Most bytes of images (samples + snapshots) kept."
    )
    min_free_bytes: int = Field(
        default=2 * 1024**3,
        ge=0,
        description="Free space to leave on the file system of the store's directory (local blobs and index).",
    )


class StoreConfig(StrictModel):
    """The sample store: blobs + one SQLite (WAL) index of samples, labels, alerts and the fleet registry."""

    path: Path = Field(
        default=Path("/var/lib/edge-trainer/store"),
        description="Store directory: the index (index.sqlite3) and, for local blobs, blobs/.",
    )
    blobs: BlobsConfig = Field(default_factory=LocalBlobsConfig, description="Where image bytes live.")
    budget: StoreBudgetConfig = Field(default_factory=StoreBudgetConfig, description="Disk budget.")
    busy_timeout_ms: int = Field(
        default=10000,
        ge=0,
        description="How long a writer waits for another process's transaction (several workers share the index).",
    )

    @property
    def index_path(self) -> Path:
        return self.path / "index.sqlite3"
