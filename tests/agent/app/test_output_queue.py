"""The output queue: bounded by count and by frame bytes, never blocking, alerts before samples; and the
writer's drop counting by kind (issue 11: a dropped alert was counted as a sample, after blocking the rules
thread for up to 1 s)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pytest

from agent.app.pipeline import OutputJob, OutputWriter
from agent.app.pipeline.output_queue import OutputQueue
from agent.protocol import Topics

Item = Tuple[str, int]  # (kind, bytes)


def queue(max_items: int = 3, max_bytes: int = 100) -> OutputQueue[Item]:
    return OutputQueue(max_items, max_bytes, lambda i: i[1], lambda i: i[0] == "alert")


def drain(q: OutputQueue[Item]) -> List[Item]:
    q.close()
    out = []
    while True:
        item = q.get(timeout=0)
        if item is None:
            return out
        out.append(item)


@pytest.mark.parametrize(
    "queued, new, accepted, evicted, left",
    [
        ([], ("sample", 10), True, [], [("sample", 10)]),
        ([], ("sample", 1000), True, [], [("sample", 1000)]),  # one item always fits an empty queue
        ([("sample", 40), ("sample", 40)], ("sample", 30), False, [], [("sample", 40), ("sample", 40)]),  # bytes
        ([("s", 1)] * 3, ("sample", 1), False, [], [("s", 1)] * 3),  # count
        # an alert evicts the oldest samples until it fits, no more
        (
            [("sample", 40), ("snapshot", 40), ("sample", 10)],
            ("alert", 30),
            True,
            [("sample", 40)],
            [("snapshot", 40), ("sample", 10), ("alert", 30)],
        ),
        ([("sample", 40), ("alert", 40)], ("alert", 60), True, [("sample", 40)], [("alert", 40), ("alert", 60)]),
        # full of alerts: evicting would not help, so nothing is evicted and the new alert is refused
        (
            [("alert", 50), ("sample", 10), ("alert", 40)],
            ("alert", 30),
            False,
            [],
            [("alert", 50), ("sample", 10), ("alert", 40)],
        ),
    ],
)
def test_put(queued: List[Item], new: Item, accepted: bool, evicted: List[Item], left: List[Item]) -> None:
    q = queue()
    for item in queued:
        assert q.put(item)[0]
    assert q.put(new) == (accepted, evicted)
    assert q.bytes == sum(size for _, size in left)
    assert drain(q) == left


def test_get_waits_and_close_drains_first() -> None:
    q = queue()
    got: List[Any] = []
    consumer = threading.Thread(target=lambda: got.extend([q.get(), q.get(), q.get()]))
    consumer.start()
    time.sleep(0.05)
    q.put(("sample", 1))
    q.put(("alert", 1))
    q.close()
    consumer.join(5)
    assert got == [("sample", 1), ("alert", 1), None]
    assert q.put(("alert", 1)) == (False, [])  # closed


def _job(kind: str, frame_bytes: int) -> OutputJob:
    image = np.zeros((frame_bytes // 3, 1, 3), np.uint8)
    frame = type("F", (), {"image": image, "captured_monotonic": time.monotonic(), "captured_wall": time.time()})()
    return OutputJob(kind, "cam1", frame, None, None, None, {})  # type: ignore[arg-type]


def test_the_writer_never_blocks_and_counts_drops_by_kind(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow_spool(*args: Any, **kw: Any) -> str:  # a disk that does not answer
        gate.wait(10)
        return "id"

    writer = OutputWriter(slow_spool, Topics("edge", "s", "d"), "d", queue_size=2, queue_max_bytes=10**9)
    writer._handle = lambda job: slow_spool()  # type: ignore[method-assign]
    writer.start()
    try:
        assert writer.submit(_job("sample", 300))  # taken by the writer thread, now stuck in the spool
        time.sleep(0.1)
        assert writer.submit(_job("sample", 300)) and writer.submit(_job("snapshot", 300))  # queue full
        started = time.monotonic()
        assert writer.submit(_job("alert", 300))  # evicts the oldest sample, at once
        assert not writer.submit(_job("sample", 300))  # no room for a sample
        assert writer.submit(_job("alert", 300))  # evicts the snapshot
        assert not writer.submit(_job("alert", 300))  # two alerts queued: this one is dropped, not waited for
        assert time.monotonic() - started < 0.5
        c = writer.snapshot()
        assert (c.samples_dropped_queue_full, c.snapshots_dropped_queue_full, c.alerts_dropped_queue_full) == (2, 1, 1)
    finally:
        gate.set()
        writer.stop(5)
