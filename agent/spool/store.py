"""Durable outbound spool on SQLite (WAL mode).

Semantics
- ``put`` commits before it returns (``synchronous=FULL``: the commit is fsynced, so it survives
  SIGKILL and power loss). Items leave only through ``ack`` (after the broker's PUBACK), eviction or
  quarantine: at-least-once delivery; every item has a message id so receivers drop duplicates.
- In-flight marks live in memory only: after a restart every item is eligible again and is re-sent.
- Bounded by payload bytes. Eviction policy: a new item may evict items of lower or equal priority,
  lowest priority first and oldest first within a priority ("alerts outrank samples; oldest first").
  An item that still does not fit is refused with :class:`SpoolFullError`. Everything evicted or
  refused is counted per kind, and the counters are persisted in the same transaction.
- Draining (``take``) hands out items in priority order, oldest first, but items that were already queued
  when the link came up (the backlog, ``seq <= boundary``) may occupy at most a ``1 - live_share`` part
  of the in-flight window. Live items (queued after the boundary) can always use the rest, so a fresh
  alert is sent within one round trip even while a large backlog drains at full speed.

Threading: every method takes one lock, so the writer thread(s) and the MQTT thread may share a Spool.
Processes: the database is opened with ``locking_mode=EXCLUSIVE``; a second process gets
:class:`SpoolLockedError` instead of silently sharing it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from agent.spool.config import SpoolConfig
from agent.spool.errors import SpoolError, SpoolFullError, SpoolLockedError, SpoolWriteError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    properties  TEXT NOT NULL,
    retain      INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    created     REAL NOT NULL,
    rejects     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_drain ON items (priority DESC, seq ASC);
CREATE TABLE IF NOT EXISTS quarantine (
    message_id  TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    properties  TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created     REAL NOT NULL,
    quarantined REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_COLUMNS = "seq, message_id, kind, priority, topic, payload, properties, retain, size, created, rejects"


@dataclass(frozen=True)
class SpoolItem:
    """One queued message."""

    seq: int
    message_id: str
    kind: str
    priority: int
    topic: str
    payload: bytes
    properties: Dict[str, str]
    retain: bool
    size: int
    created: float
    rejects: int


@dataclass(frozen=True)
class SpoolStats:
    """Snapshot of the spool's state and counters (counters are persisted across restarts)."""

    items: int
    bytes: int
    max_bytes: int
    in_flight: int
    items_by_kind: Dict[str, int] = field(default_factory=dict)
    counters: Dict[str, int] = field(default_factory=dict)
    oldest_by_kind: Dict[str, float] = field(default_factory=dict)  # kind -> wall time its oldest item was queued


def drain_slots(window: int, live_share: float, in_flight_live: int, in_flight_backlog: int) -> Tuple[int, int]:
    """How many more items may be handed out: (free slots in all, of which at most this many backlog).

    The backlog may hold at most ``window - ceil(window * live_share)`` slots (at least 1 when the window
    allows any), so ``ceil(window * live_share)`` slots stay for live traffic.

    >>> drain_slots(8, 0.25, 0, 0)
    (8, 6)
    >>> drain_slots(8, 0.25, 1, 6)
    (1, 0)
    """
    free = max(0, window - in_flight_live - in_flight_backlog)
    backlog_cap = max(1 if window > 0 else 0, window - math.ceil(window * live_share))
    return free, max(0, min(free, backlog_cap - in_flight_backlog))


def _is_locked(exc: sqlite3.Error) -> bool:
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()


class Spool:
    """The durable queue between producers (alerts, samples, OTA reports) and the MQTT link."""

    def __init__(self, config: SpoolConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._in_flight: Dict[str, int] = {}
        self._counters: Dict[str, int] = {}
        config.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a put is exactly one transaction.
            self._db = sqlite3.connect(str(config.path), isolation_level=None, check_same_thread=False, timeout=0.0)
        except sqlite3.Error as exc:
            raise SpoolWriteError(f"cannot open spool {config.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolWriteError(f"{config.path}: journal_mode is {mode}, WAL unavailable")
            self._db.execute(f"PRAGMA synchronous={config.synchronous}")
            self._db.execute(f"PRAGMA busy_timeout={config.busy_timeout_ms}")
            self._db.executescript(_SCHEMA)
            # A write takes the exclusive lock for good, so a second process fails here, not at a put.
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES ('opens', 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )
            self._db.execute("COMMIT")
            total = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM items").fetchone()[0]
            self._bytes = int(total)
            for name, value in self._db.execute("SELECT name, value FROM counters"):
                self._counters[str(name)] = int(value)
        except sqlite3.DatabaseError as exc:  # OperationalError (locked, I/O) or a corrupt file
            self._db.close()
            if _is_locked(exc):
                raise SpoolLockedError(f"{config.path} is in use by another process") from exc
            raise SpoolWriteError(f"cannot initialise spool {config.path}: {exc}") from exc
        except SpoolError:
            self._db.close()
            raise

    # ------------------------------------------------------------------ helpers

    def priority_of(self, kind: str) -> int:
        """Configured priority of a kind (0 when unknown)."""
        return self.config.priorities.get(kind, 0)

    def _bump(self, name: str, amount: int = 1, persist: bool = True) -> None:
        value = self._counters.get(name, 0) + amount
        self._counters[name] = value
        if persist:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def _count_write_error(self) -> None:
        # The disk may be full: count in memory first, persist best-effort.
        self._bump("write_errors", persist=False)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._bump("write_errors", 0)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()

    # ------------------------------------------------------------------ producer side

    def put(
        self,
        kind: str,
        topic: str,
        payload: bytes,
        properties: Optional[Dict[str, str]] = None,
        priority: Optional[int] = None,
        message_id: Optional[str] = None,
        retain: bool = False,
    ) -> str:
        """Queue a message; durable when this returns. Returns its message id.

        A message id already in the spool is not queued twice (the call returns that id).

        Raises:
            SpoolFullError: it does not fit even after evicting everything of lower/equal priority.
            SpoolWriteError: SQLite failed (disk full, I/O error). Nothing was queued.
        """
        message_id = message_id or uuid.uuid4().hex
        prio = self.priority_of(kind) if priority is None else priority
        props = json.dumps(properties or {}, sort_keys=True)
        size = len(payload)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if self._db.execute("SELECT 1 FROM items WHERE message_id = ?", (message_id,)).fetchone():
                    self._bump("duplicate_puts")
                    self._db.execute("COMMIT")
                    return message_id
                evicted, freed = self._evict_for(size, prio)
                if self._bytes - freed + size > self.config.max_bytes:
                    self._rollback()
                    self._db.execute("BEGIN IMMEDIATE")
                    self._bump(f"refused_full.{kind}")
                    self._db.execute("COMMIT")
                    raise SpoolFullError(
                        f"{kind} of {size} bytes does not fit in {self.config.max_bytes} bytes "
                        "(everything left outranks it)",
                        kind,
                        message_id,
                    )
                for seq, _, evicted_kind, evicted_size in evicted:
                    self._db.execute("DELETE FROM items WHERE seq = ?", (seq,))
                    self._bump(f"evicted.{evicted_kind}")
                    self._bump("evicted_bytes", evicted_size)
                self._db.execute(
                    f"INSERT INTO items ({_COLUMNS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                    (
                        message_id,
                        kind,
                        prio,
                        topic,
                        sqlite3.Binary(payload),
                        props,
                        int(retain),
                        size,
                        time.time(),
                    ),
                )
                self._bump(f"put.{kind}")
                self._db.execute("COMMIT")
            except SpoolError:
                raise
            except sqlite3.Error as exc:
                self._rollback()
                self._count_write_error()
                raise SpoolWriteError(f"spool write failed: {exc}", kind, message_id) from exc
            self._bytes += size - freed
            for _, gone_id, _, _ in evicted:
                self._in_flight.pop(gone_id, None)
            return message_id

    def _evict_for(self, size: int, priority: int) -> Tuple[List[Tuple[int, str, str, int]], int]:
        excess = self._bytes + size - self.config.max_bytes
        if excess <= 0:
            return [], 0
        chosen: List[Tuple[int, str, str, int]] = []
        freed = 0
        rows = self._db.execute(
            "SELECT seq, message_id, kind, size FROM items WHERE priority <= ? ORDER BY priority ASC, seq ASC",
            (priority,),
        )
        for seq, message_id, kind, item_size in rows:
            chosen.append((int(seq), str(message_id), str(kind), int(item_size)))
            freed += int(item_size)
            if freed >= excess:
                break
        rows.close()
        return chosen, freed

    # ------------------------------------------------------------------ link side

    def boundary(self) -> int:
        """Highest sequence number queued so far; items above it count as live in :meth:`take`."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM items").fetchone()[0])

    def _select(self, where: str, args: Tuple[int, ...], limit: int) -> List[SpoolItem]:
        if limit <= 0:
            return []
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM items WHERE {where} ORDER BY priority DESC, seq ASC LIMIT ?",
            (*args, limit + len(self._in_flight)),
        ).fetchall()
        items = []
        for row in rows:
            if row[1] in self._in_flight:
                continue
            items.append(
                SpoolItem(
                    seq=int(row[0]),
                    message_id=str(row[1]),
                    kind=str(row[2]),
                    priority=int(row[3]),
                    topic=str(row[4]),
                    payload=bytes(row[5]),
                    properties=dict(json.loads(row[6])),
                    retain=bool(row[7]),
                    size=int(row[8]),
                    created=float(row[9]),
                    rejects=int(row[10]),
                )
            )
            if len(items) >= limit:
                break
        return items

    def take(self, window: int, boundary: int = 0) -> List[SpoolItem]:
        """Mark and return the next items to publish, keeping at most ``window`` in flight in all.

        Items with ``seq <= boundary`` are backlog and get at most ``1 - live_share`` of the window
        (see :func:`drain_slots`). Order: priority (high first), then age (old first).
        """
        with self._lock:
            live_in_flight = sum(1 for seq in self._in_flight.values() if seq > boundary)
            free, backlog_free = drain_slots(
                window, self.config.live_share, live_in_flight, len(self._in_flight) - live_in_flight
            )
            if free == 0:
                return []
            try:
                live = self._select("seq > ?", (boundary,), free)
                backlog = self._select("seq <= ?", (boundary,), backlog_free)
            except sqlite3.Error as exc:
                raise SpoolError(f"spool read failed: {exc}") from exc
            chosen = sorted(live + backlog, key=lambda item: (-item.priority, item.seq))[:free]
            for item in chosen:
                self._in_flight[item.message_id] = item.seq
            return chosen

    def release(self, message_ids: Optional[Iterable[str]] = None) -> None:
        """Forget in-flight marks (all when ``None``) so the items are handed out again."""
        with self._lock:
            if message_ids is None:
                self._in_flight.clear()
            else:
                for message_id in message_ids:
                    self._in_flight.pop(message_id, None)

    def ack(self, message_ids: Iterable[str]) -> int:
        """Delete acknowledged items in one transaction; returns how many were still queued."""
        ids = list(message_ids)
        if not ids:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                removed = 0
                freed = 0
                for message_id in ids:
                    row = self._delete(message_id)
                    if row is not None:
                        removed += 1
                        freed += int(row[0])
                self._bump("acked", removed)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._count_write_error()
                raise SpoolWriteError(f"spool ack failed: {exc}") from exc
            self._bytes -= freed
            for message_id in ids:
                self._in_flight.pop(message_id, None)
            return removed

    def _delete(self, message_id: str) -> Optional[Tuple[int]]:
        # Not DELETE ... RETURNING: SQLite < 3.35 (Ubuntu 20.04 / JetPack 5) lacks it.
        row = self._db.execute("SELECT size FROM items WHERE message_id = ?", (message_id,)).fetchone()
        if row is not None:
            self._db.execute("DELETE FROM items WHERE message_id = ?", (message_id,))
        return None if row is None else (int(row[0]),)

    def reject(self, message_id: str, reason: str, max_rejects: int) -> bool:
        """Record that the broker refused an item. After ``max_rejects`` refusals the item moves to the
        quarantine table (counted as ``quarantined.<kind>``) and is never sent again.

        Returns True when the item was quarantined; otherwise it becomes eligible for a retry.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT kind, topic, payload, properties, size, created, rejects FROM items WHERE message_id = ?",
                    (message_id,),
                ).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    self._in_flight.pop(message_id, None)
                    return False
                kind, topic, payload, properties, size, created, rejects = row
                rejects = int(rejects) + 1
                self._bump("broker_rejects")
                quarantined = bool(rejects >= max_rejects)
                if quarantined:
                    self._db.execute(
                        "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (message_id, kind, topic, payload, properties, reason, created, time.time()),
                    )
                    self._db.execute("DELETE FROM items WHERE message_id = ?", (message_id,))
                    self._bump(f"quarantined.{kind}")
                else:
                    self._db.execute("UPDATE items SET rejects = ? WHERE message_id = ?", (rejects, message_id))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                self._count_write_error()
                raise SpoolWriteError(f"spool reject failed: {exc}", message_id=message_id) from exc
            if quarantined:
                self._bytes -= int(size)
            self._in_flight.pop(message_id, None)
            return quarantined

    # ------------------------------------------------------------------ inspection

    def quarantined(self) -> List[Tuple[str, str, str, str]]:
        """(message_id, kind, topic, reason) of every quarantined item."""
        with self._lock:
            rows = self._db.execute("SELECT message_id, kind, topic, reason FROM quarantine ORDER BY quarantined")
            return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def message_ids(self) -> List[str]:
        """Ids of every queued item, in drain order."""
        with self._lock:
            rows = self._db.execute("SELECT message_id FROM items ORDER BY priority DESC, seq ASC")
            return [str(row[0]) for row in rows]

    def stats(self) -> SpoolStats:
        """Counts, bytes and counters."""
        with self._lock:
            rows = list(self._db.execute("SELECT kind, COUNT(*), MIN(created) FROM items GROUP BY kind"))
            by_kind = {str(k): int(n) for k, n, _ in rows}
            return SpoolStats(
                items=sum(by_kind.values()),
                bytes=self._bytes,
                max_bytes=self.config.max_bytes,
                in_flight=len(self._in_flight),
                items_by_kind=by_kind,
                counters=dict(self._counters),
                oldest_by_kind={str(k): float(t) for k, _, t in rows},
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def integrity_check(self) -> str:
        """Result of ``PRAGMA integrity_check`` ("ok" when the database is sound)."""
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
