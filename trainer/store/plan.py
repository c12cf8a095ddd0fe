"""Which images of a batch to store: deduplication and the disk budget, as one pure function.

Ingest calls :func:`plan_images` before writing any blob, with what the index already holds, so a duplicate
or a sample beyond the budget costs no disk write. The index re-checks duplicates inside its transaction
(another worker may have stored the same message meanwhile); this plan is what makes the common case cheap.

Rules, per image in arrival order:

1. the same ``(device, message id)`` was stored before, or earlier in the batch → ``duplicate_id``;
2. for samples, the same ``(device, image digest)`` was stored before or earlier in the batch →
   ``duplicate_image`` (a device that sends one frame twice under two ids);
3. its bytes are new (no blob with its digest yet) and do not fit the room left → ``store_full``;
   a digest the store already holds costs nothing and is always accepted;
4. otherwise it is accepted, and the room left shrinks by its size when its blob is new.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import AbstractSet, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class BudgetState:
    """How full the store is.

    Attributes:
        used_bytes: bytes of all stored blobs.
        max_bytes: the budget for blobs.
        free_bytes: free space on the file system the store writes to (None: no such limit, e.g. S3).
        min_free_bytes: free space to leave.
    """

    used_bytes: int
    max_bytes: int
    free_bytes: Optional[int] = None
    min_free_bytes: int = 0

    def room(self) -> float:
        """Bytes of new blobs that may still be written (may be <= 0)."""
        room: float = self.max_bytes - self.used_bytes
        if self.free_bytes is not None:
            room = min(room, self.free_bytes - self.min_free_bytes)
        return room

    @property
    def full(self) -> bool:
        """No room for even one more byte."""
        return self.room() <= 0


class ImageDecision(str, enum.Enum):
    ACCEPT = "accept"
    DUPLICATE_ID = "duplicate_id"
    DUPLICATE_IMAGE = "duplicate_image"
    STORE_FULL = "store_full"


@dataclass(frozen=True)
class ImageItem:
    """One image-carrying message of a batch."""

    device: str
    message_id: str
    sha256: str
    size: int
    dedupe_image: bool = True  # samples: yes; snapshots (which may repeat a frame on purpose): no


@dataclass(frozen=True)
class ImagePlan:
    decisions: Tuple[ImageDecision, ...]
    new_blobs: Tuple[int, ...]  # indexes of accepted items whose blob must be written
    new_bytes: int

    def accepted(self, index: int) -> bool:
        return self.decisions[index] is ImageDecision.ACCEPT


def plan_images(
    items: Sequence[ImageItem],
    known_ids: AbstractSet[Tuple[str, str]],
    known_digests: AbstractSet[Tuple[str, str]],
    stored_blobs: AbstractSet[str],
    budget: BudgetState,
) -> ImagePlan:
    """Decide each item (see the module docstring).

    Args:
        items: the batch's images in arrival order.
        known_ids: ``(device, message_id)`` pairs already in the index, among the batch's.
        known_digests: ``(device, sha256)`` pairs of samples already in the index, among the batch's.
        stored_blobs: digests among the batch's that already have a blob.
        budget: how full the store is before the batch.
    """
    room = budget.room()
    seen_ids = set()
    seen_digests = set()
    batch_blobs = set()
    decisions: List[ImageDecision] = []
    new_blobs: List[int] = []
    new_bytes = 0
    for position, item in enumerate(items):
        id_key = (item.device, item.message_id)
        digest_key = (item.device, item.sha256)
        if id_key in known_ids or id_key in seen_ids:
            decisions.append(ImageDecision.DUPLICATE_ID)
            continue
        if item.dedupe_image and (digest_key in known_digests or digest_key in seen_digests):
            decisions.append(ImageDecision.DUPLICATE_IMAGE)
            continue
        fresh = item.sha256 not in stored_blobs and item.sha256 not in batch_blobs
        cost = item.size if fresh else 0
        if cost and cost > room:
            decisions.append(ImageDecision.STORE_FULL)
            continue
        decisions.append(ImageDecision.ACCEPT)
        seen_ids.add(id_key)
        if item.dedupe_image:
            seen_digests.add(digest_key)
        if fresh:
            batch_blobs.add(item.sha256)
            new_blobs.append(position)
            new_bytes += cost
            room -= cost
    return ImagePlan(tuple(decisions), tuple(new_blobs), new_bytes)
