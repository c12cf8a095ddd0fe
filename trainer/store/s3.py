"""Blobs in an S3-compatible bucket (AWS S3, SeaweedFS, Garage, MinIO) through boto3.

Same keys as the local layout (``<prefix>blobs/ab/<sha256>.jpg``), so a local store can be synced to a bucket
with any S3 tool. Each PUT carries the blob's SHA-256 as an S3 checksum (``ChecksumSHA256``): the server
refuses bytes that do not match, so a corrupted upload is never stored; reads are verified again here.
``put_many`` returns when every PUT was answered (S3 stores an object durably before it answers).
"""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Optional, Sequence, Tuple

from trainer.store.blobs import SUFFIX, blob_key, check_digest
from trainer.store.config import S3BlobsConfig
from trainer.store.errors import BlobCorruptError, BlobNotFoundError, StoreWriteError


class S3BlobStore:
    """See the module docstring. ``client`` is a boto3 S3 client (tests pass one bound to a local server)."""

    kind = "s3"

    def __init__(
        self, client: Any, bucket: str, prefix: str = "samples/", put_threads: int = 16, presign_expiry_s: int = 86400
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.presign_expiry_s = presign_expiry_s
        self._pool = ThreadPoolExecutor(max_workers=put_threads, thread_name_prefix="s3-put")

    @classmethod
    def from_config(cls, config: S3BlobsConfig) -> S3BlobStore:
        import boto3  # noqa: PLC0415 (boto3: only for the S3 blob store, slow to import)
        from botocore.config import Config  # noqa: PLC0415 (boto3: only for the S3 blob store, slow to import)

        client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(
                s3={"addressing_style": config.addressing_style},
                retries={"max_attempts": 5, "mode": "standard"},
                max_pool_connections=max(10, config.put_threads),
            ),
        )
        return cls(client, config.bucket, config.prefix, config.put_threads, config.presign_expiry_s)

    def key(self, sha256: str) -> str:
        return self.prefix + blob_key(sha256)

    def _put(self, item: Tuple[str, bytes]) -> None:
        sha256, data = item
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.key(sha256),
            Body=data,
            ContentType="image/jpeg",
            ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode("ascii"),
        )

    def put_many(self, blobs: Sequence[Tuple[str, bytes]]) -> None:
        for sha256, _ in blobs:
            check_digest(sha256)
        try:
            list(self._pool.map(self._put, blobs))
        except Exception as exc:  # botocore raises many kinds (ClientError, EndpointConnectionError, ...)
            raise StoreWriteError(f"PUT to s3://{self.bucket}/{self.prefix} failed: {exc}") from exc

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("NoSuchKey", "404", "NotFound")

    def get(self, sha256: str) -> bytes:
        try:
            data = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"].read()
        except Exception as exc:
            if self._missing(exc):
                raise BlobNotFoundError(sha256) from None
            raise StoreWriteError(f"GET s3://{self.bucket}/{self.key(sha256)} failed: {exc}") from exc
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BlobCorruptError(sha256, actual)
        return bytes(data)

    def exists(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
        except Exception as exc:
            if self._missing(exc):
                return False
            raise StoreWriteError(f"HEAD s3://{self.bucket}/{self.key(sha256)} failed: {exc}") from exc
        return True

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def iter_digests(self) -> Iterable[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "blobs/"):
            for item in page.get("Contents", []):
                name = str(item["Key"]).rsplit("/", 1)[-1]
                if name.endswith(SUFFIX):
                    yield name[: -len(SUFFIX)]

    def url(self, sha256: str) -> Optional[str]:
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key(sha256)}, ExpiresIn=self.presign_expiry_s
            )
        )

    def free_bytes(self) -> Optional[int]:
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
