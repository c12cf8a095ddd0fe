"""The queue between the rules thread and the output writer: bounded by count *and* by the bytes of the frames
its jobs hold, never blocking the producer, alerts before samples.

Each job holds a full frame until the writer has encoded it (1080p BGR: 6.2 MB), so a count alone is the wrong
bound on a Jetson with 8 GB shared between CPU and GPU: 64 queued 1080p frames were 400 MB. And the rules thread
must never wait on a slow disk: it used to block up to 1 s per alert when the queue was full. Here a job that
does not fit is refused at once; a *priority* job (an alert) that does not fit first evicts the oldest
non-priority jobs (samples, snapshots), which the caller counts as dropped.

Thread-safe: one producer (rules thread), one consumer (output writer), any number of readers of ``len``.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Generic, List, Optional, Tuple, TypeVar

T = TypeVar("T")

__all__ = ["OutputQueue"]


class OutputQueue(Generic[T]):
    """A FIFO of at most ``max_items`` items and ``max_bytes`` bytes (``size_of`` each), with eviction for
    ``is_priority`` items. :meth:`close` lets :meth:`get` drain what is queued, then return ``None``."""

    def __init__(
        self, max_items: int, max_bytes: int, size_of: Callable[[T], int], is_priority: Callable[[T], bool]
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._is_priority = is_priority
        self._items: Deque[Tuple[T, int]] = collections.deque()
        self._bytes = 0
        self._closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes

    def _fits(self, size: int) -> bool:
        # one item always fits an empty queue, however large: a lone 4K frame must not be refused forever
        return not self._items or (len(self._items) < self.max_items and self._bytes + size <= self.max_bytes)

    def put(self, item: T) -> Tuple[bool, List[T]]:
        """Queue ``item`` without waiting. Returns (accepted, the items evicted to make room for it)."""
        size = max(0, int(self._size_of(item)))
        evicted: List[T] = []
        with self._cond:
            if self._closed:
                return False, evicted
            if not self._fits(size) and self._is_priority(item):
                count, total = len(self._items), self._bytes
                kept: Deque[Tuple[T, int]] = collections.deque()
                for queued, queued_size in self._items:  # oldest first
                    room = count == 0 or (count < self.max_items and total + size <= self.max_bytes)
                    if not room and not self._is_priority(queued):
                        evicted.append(queued)
                        count, total = count - 1, total - queued_size
                    else:
                        kept.append((queued, queued_size))
                if count == 0 or (count < self.max_items and total + size <= self.max_bytes):
                    self._items, self._bytes = kept, total
                else:  # full of priority items: evicting lower ones would not make room, so keep them
                    evicted = []
            if not self._fits(size):
                return False, evicted
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify()
        return True, evicted

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """The oldest item; waits for one. ``None`` once closed and drained (or after ``timeout``)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            item, size = self._items.popleft()
            self._bytes -= size
            return item

    def close(self) -> None:
        """No more items are accepted; :meth:`get` returns the queued ones, then ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
