"""The MQTT chunk transport's receiving end: one pushed bundle assembled from its retained chunks, in order,
in a staging directory that survives a kill (:class:`agent.ota.fetchers.StagedFile` plus a spill folder for
chunks that arrive ahead of a gap).

It is the push-mode counterpart of the HTTP and directory fetchers: those pull a file, this is handed chunks.
It does no MQTT itself: the model-update service subscribes through the link's public API
(``MqttLink.add_subscription``) and hands each verified chunk to :meth:`ChunkTransfer.accept` on its worker
thread (the only thread that touches a transfer).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from agent.ota.fetchers import StagedFile
from agent.ota.fsutil import remove_tree
from agent.ota.push import push_key
from agent.protocol.models import ModelChunkHeader, ModelPush
from agent.protocol.topics import Topics


@dataclass
class TransferCounters:
    """What one chunked transfer saw in this process (not persisted)."""

    chunks: int = 0
    bytes_appended: int = 0
    duplicates: int = 0
    spilled: int = 0
    refused: int = 0
    dropped_backpressure: int = 0
    resubscribes: int = 0
    bytes_spilled: int = 0  # new bytes kept ahead of a gap (progress too)


class ChunkTransfer:
    """Assembles one pushed bundle from chunks; all state lives under ``directory`` and survives a kill."""

    def __init__(self, push: ModelPush, push_topic: str, directory: Path) -> None:
        assert push.chunks is not None
        self.push = push
        self.push_topic = push_topic
        self.key = push_key(push)
        self.filter = Topics.chunk_filter(push_topic, push.release.counter)
        self.directory = directory
        self.spill_dir = directory / "spill"
        self.staged = StagedFile(
            directory / "bundle.tar",
            push.bundle_size,
            push.bundle_sha256,
            label=f"pushed bundle of {push.release.name} {push.release.version}",
        )
        self.chunk_size = push.chunks.chunk_size
        self.total = push.chunks.total
        self.counters = TransferCounters()
        self.started = self.last_progress = time.monotonic()
        self.last_reported = -1.0

    @property
    def offset(self) -> int:
        return self.push.bundle_size if self.staged.complete else self.staged.offset

    @property
    def next_index(self) -> int:
        return self.offset // self.chunk_size

    def accept(self, header: ModelChunkHeader, body: bytes) -> None:
        """Take a verified, consistent chunk: append it, spill it, or drop it as a duplicate."""
        self.counters.chunks += 1
        end = header.offset + header.size
        if self.staged.complete or end <= self.offset:
            self.counters.duplicates += 1
            return
        if header.offset > self.offset:
            spill = self.spill_dir / f"{header.index}.chunk"
            if spill.exists():
                self.counters.duplicates += 1
                return
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            tmp = spill.with_suffix(".tmp")
            tmp.write_bytes(body)
            os.replace(tmp, spill)
            self.counters.spilled += 1
            self.counters.bytes_spilled += len(body)
            self.last_progress = time.monotonic()
            return
        before = self.offset
        self.staged.append(header.offset, body)
        self.counters.bytes_appended += self.offset - before
        self.last_progress = time.monotonic()
        self._drain_spill()

    def _drain_spill(self) -> None:
        while not self.staged.complete and self.offset < self.push.bundle_size:
            index = self.next_index
            spill = self.spill_dir / f"{index}.chunk"
            if not spill.exists():
                return
            before = self.offset
            self.staged.append(index * self.chunk_size, spill.read_bytes())
            self.counters.bytes_appended += self.offset - before
            spill.unlink()

    @property
    def done(self) -> bool:
        return self.offset >= self.push.bundle_size

    def finish(self) -> Path:
        """Verify the whole bundle's length and SHA-256 (a bad one is deleted) and return its path."""
        return self.staged.finish()

    def discard(self) -> None:
        remove_tree(self.directory)


__all__ = ["ChunkTransfer", "TransferCounters"]
