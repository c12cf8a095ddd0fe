"""Spool semantics on a real SQLite file: ack, restart, eviction policy and counters, errors, draining."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import List, Tuple

import pytest

from agent.spool import (
    Spool,
    SpoolConfig,
    SpoolFullError,
    SpoolLockedError,
    SpoolWriteError,
    drain_slots,
)


def make(tmp_path: Path, max_bytes: int = 1 << 20, **kw: object) -> Spool:
    return Spool(SpoolConfig(path=tmp_path / "spool.db", max_bytes=max_bytes, **kw))


def test_put_is_committed_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    spool = make(tmp_path)
    assert spool._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    mid = spool.put("alert", "t/alerts", b"a", {"k": "v"})
    spool._db.close()  # no checkpoint, no close(): the WAL alone must hold it
    reopened = make(tmp_path)
    assert reopened.message_ids() == [mid]
    (item,) = reopened.take(window=4)
    assert (item.topic, item.payload, item.properties, item.kind) == ("t/alerts", b"a", {"k": "v"}, "alert")


def test_items_leave_only_when_acked_and_unacked_are_resent_after_restart(tmp_path: Path) -> None:
    spool = make(tmp_path)
    ids = [spool.put("sample", "t/s", bytes([i])) for i in range(5)]
    taken = spool.take(window=10)
    assert [i.message_id for i in taken] == ids
    assert spool.take(window=10) == []  # all in flight
    assert spool.ack([ids[0], ids[1]]) == 2
    assert spool.ack([ids[0]]) == 0  # second ack of the same id is harmless
    spool.close()
    spool = make(tmp_path)  # restart: in-flight marks are gone, the rest is re-sent
    assert [i.message_id for i in spool.take(window=10)] == ids[2:]
    assert spool.stats().counters["acked"] == 2


def test_release_makes_in_flight_items_eligible_again(tmp_path: Path) -> None:
    spool = make(tmp_path)
    mid = spool.put("alert", "t", b"x")
    assert len(spool.take(window=1)) == 1
    spool.release()
    assert [i.message_id for i in spool.take(window=1)] == [mid]


def test_drain_order_is_priority_then_age(tmp_path: Path) -> None:
    spool = make(tmp_path)
    s1 = spool.put("sample", "t", b"1")
    a1 = spool.put("alert", "t", b"2")
    s2 = spool.put("sample", "t", b"3")
    a2 = spool.put("alert", "t", b"4")
    o1 = spool.put("ota", "t", b"5")
    assert [i.message_id for i in spool.take(window=10)] == [a1, a2, o1, s1, s2]


# (existing items as (kind, size)), new item, expected evicted indexes, raises
EVICTION_CASES: List[Tuple[str, List[Tuple[str, int]], Tuple[str, int], List[int], bool]] = [
    ("sample evicts oldest sample", [("sample", 4000), ("sample", 4000)], ("sample", 4000), [0], False),
    ("alert evicts samples before alerts", [("alert", 4000), ("sample", 4000)], ("alert", 4000), [1], False),
    (
        "alert evicts oldest sample first",
        [("sample", 3000), ("alert", 3000), ("sample", 3000)],
        ("alert", 3000),
        [0],
        False,
    ),
    (
        "alert evicts oldest alert when only alerts",
        [("alert", 4000), ("alert", 4000)],
        ("alert", 4000),
        [0],
        False,
    ),
    ("sample never evicts an alert", [("alert", 4000), ("alert", 4000)], ("sample", 4000), [], True),
    (
        "only as many evicted as needed",
        [("sample", 3000), ("sample", 3000), ("sample", 3000)],
        ("alert", 7000),
        [0, 1],
        False,
    ),
    (
        "several evicted to make room",
        [("sample", 3000), ("sample", 3000), ("sample", 3000)],
        ("alert", 8000),
        [0, 1, 2],
        False,
    ),
    ("too big for the whole spool", [("sample", 1000)], ("alert", 20000), [], True),
]


@pytest.mark.parametrize(
    ("name", "existing", "new", "evicted", "refused"), EVICTION_CASES, ids=[c[0] for c in EVICTION_CASES]
)
def test_eviction_policy_and_counters(
    tmp_path: Path,
    name: str,
    existing: List[Tuple[str, int]],
    new: Tuple[str, int],
    evicted: List[int],
    refused: bool,
) -> None:
    spool = make(tmp_path, max_bytes=10_000)
    ids = [spool.put(kind, "t", b"x" * size) for kind, size in existing]
    if refused:
        with pytest.raises(SpoolFullError) as info:
            spool.put(new[0], "t", b"y" * new[1])
        assert info.value.kind == new[0]
        assert set(spool.message_ids()) == set(ids)
        assert spool.stats().counters[f"refused_full.{new[0]}"] == 1
        return
    new_id = spool.put(new[0], "t", b"y" * new[1])
    remaining = set(spool.message_ids())
    assert remaining == {ids[i] for i in range(len(ids)) if i not in evicted} | {new_id}
    counters = spool.stats().counters
    for kind in ("alert", "sample"):
        expected = sum(1 for i in evicted if existing[i][0] == kind)
        assert counters.get(f"evicted.{kind}", 0) == expected
    assert counters.get("evicted_bytes", 0) == sum(existing[i][1] for i in evicted)
    assert spool.stats().bytes <= 10_000
    spool.close()
    # counters are persisted
    assert make(tmp_path).stats().counters.get("evicted_bytes", 0) == sum(existing[i][1] for i in evicted)


def test_duplicate_message_id_is_queued_once(tmp_path: Path) -> None:
    spool = make(tmp_path)
    assert spool.put("alert", "t", b"1", message_id="m-1") == "m-1"
    assert spool.put("alert", "t", b"1", message_id="m-1") == "m-1"
    assert len(spool) == 1
    assert spool.stats().counters["duplicate_puts"] == 1


def test_write_error_is_typed_counted_and_loses_nothing_already_queued(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=64 << 20)
    kept = spool.put("alert", "t", b"k" * 100)
    # max_page_count makes SQLite answer SQLITE_FULL, the same error a full disk gives.
    pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
    spool._db.execute(f"PRAGMA max_page_count={pages + 2}")
    with pytest.raises(SpoolWriteError) as info:
        spool.put("sample", "t", b"z" * 200_000)
    assert "full" in str(info.value).lower()
    assert spool.stats().counters["write_errors"] >= 1
    assert spool.message_ids() == [kept]
    assert spool.stats().bytes == 100
    spool._db.execute("PRAGMA max_page_count=1073741823")
    spool.put("sample", "t", b"ok")  # recovers once there is room again
    assert len(spool) == 2


def test_second_process_cannot_open_the_same_spool(tmp_path: Path) -> None:
    import subprocess
    import sys

    spool = make(tmp_path)
    spool.put("alert", "t", b"x")
    code = (
        "import sys; from pathlib import Path; from agent.spool import *\n"
        "try:\n    Spool(SpoolConfig(path=Path(sys.argv[1])))\nexcept SpoolLockedError:\n    sys.exit(3)\n"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "spool.db")],
        cwd=root,
        env={"PYTHONPATH": str(root)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert SpoolLockedError.__mro__[1].__name__ == "SpoolError"


@pytest.mark.parametrize(
    ("window", "share", "live", "backlog", "expected"),
    [
        (8, 0.25, 0, 0, (8, 6)),
        (8, 0.25, 0, 6, (2, 0)),
        (8, 0.25, 2, 6, (0, 0)),
        (8, 0.25, 7, 0, (1, 1)),
        (4, 0.0, 0, 0, (4, 4)),
        (1, 0.5, 0, 0, (1, 1)),  # a window of one still drains the backlog
        (0, 0.25, 0, 0, (0, 0)),
    ],
)
def test_drain_slots(window: int, share: float, live: int, backlog: int, expected: Tuple[int, int]) -> None:
    assert drain_slots(window, share, live, backlog) == expected


def test_backlog_never_takes_the_live_share_of_the_window(tmp_path: Path) -> None:
    spool = make(tmp_path, live_share=0.25)
    backlog = [spool.put("alert", "t", b"b") for _ in range(20)]  # high priority backlog
    boundary = spool.boundary()
    first = spool.take(window=8, boundary=boundary)
    assert [i.message_id for i in first] == backlog[:6]  # 2 of 8 slots kept for live traffic
    live = spool.put("sample", "t", b"live")  # even a low-priority live message gets a slot
    assert [i.message_id for i in spool.take(window=8, boundary=boundary)] == [live]
    spool.ack(backlog[:6])
    assert [i.message_id for i in spool.take(window=8, boundary=boundary)] == backlog[6:12]


def test_reject_quarantines_after_n_refusals(tmp_path: Path) -> None:
    spool = make(tmp_path)
    bad = spool.put("alert", "denied/topic", b"x")
    good = spool.put("alert", "t", b"y")
    for attempt in range(2):
        spool.take(window=10)
        assert spool.reject(bad, "0x87 Not authorized", max_rejects=3) is False, attempt
        spool.release([good])
    spool.take(window=10)
    assert spool.reject(bad, "0x87 Not authorized", max_rejects=3) is True
    assert spool.message_ids() == [good]
    assert spool.quarantined() == [(bad, "alert", "denied/topic", "0x87 Not authorized")]
    assert spool.stats().counters["quarantined.alert"] == 1
    assert spool.stats().bytes == 1


def test_writer_thread_and_acking_thread_share_a_spool(tmp_path: Path) -> None:
    spool = make(tmp_path, max_bytes=64 << 20, synchronous="NORMAL")
    total = 300
    done = threading.Event()
    acked: List[str] = []

    def writer() -> None:
        for i in range(total):
            spool.put("sample", "t", i.to_bytes(4, "big"))
        done.set()

    def acker() -> None:
        while not (done.is_set() and len(spool) == 0):
            items = spool.take(window=16)
            spool.ack([i.message_id for i in items])
            acked.extend(i.message_id for i in items)

    threads = [threading.Thread(target=writer, name="writer"), threading.Thread(target=acker, name="acker")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(acked) == len(set(acked)) == total
    assert spool.stats().bytes == 0
    assert spool.integrity_check() == "ok"


def test_corrupt_file_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "spool.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolWriteError):
        make(tmp_path)
    assert issubclass(SpoolWriteError, Exception) and sqlite3 is not None
