"""The simulated fleet beside the soak's real agent: ``n`` boxes of bench/fleet_sim.py (the agent's own protocol
models, QoS 1, a last will), each on paho's own network thread so that it reconnects by itself when the
soak restarts the broker, publishing a status every 10 s and an alert and a sample every ``every_s`` seconds.

They connect to the broker directly (the soak's network faults are the real agent's); what they meet is the
broker's restarts and the ingest's SIGKILLs. A simulated box has no spool: a message counts as published
once paho took it (it keeps QoS 1 messages across reconnects and sends them again). Every alert and sample id
is recorded, and a persistent observer on the fleet's topics says which ones the broker delivered, so that a
message missing from the store is placed: never delivered by the broker, or delivered and not stored.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Set

from bench.bench_ingest import make_jpeg
from bench.fleet_sim import SITE, SimBox
from tests.agent.daemon.helpers import Collector

PREFIX = "soakfleet"


def message_id(kind: str, payload: bytes) -> str:
    from agent.protocol.framing import decode_frame

    if kind == "alert":
        return str(json.loads(payload)["id"])
    header, _ = decode_frame("samples", payload, 1 << 20)
    return str(json.loads(header)["id"])


class ThreadedBox(SimBox):
    """A SimBox published to from the traffic thread and acknowledged on paho's thread: counts under a lock."""

    def __init__(self, device: str, port: int, jpeg: bytes) -> None:
        self._lock = threading.Lock()
        self.sent: Dict[str, str] = {}  # message id -> kind, every alert and sample published
        super().__init__(device, port, jpeg)

    def publish(self, kind: str) -> None:
        # paho calls on_publish holding its own lock, so ours is never held across a paho call; an early
        # PUBACK makes the count dip below zero for a moment, the sum comes out right
        topic, payload, retain = self.message(kind)
        self.client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            self.published[kind] += 1
            self.unacked += 1
            if kind != "status":
                self.sent[message_id(kind, payload)] = kind

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.unacked -= 1


class SoakFleet:
    def __init__(self, n: int, port: int, every_s: float = 60.0, seed: int = 5) -> None:
        self.n = n
        self.every_s = every_s
        self.rng = random.Random(seed)
        self.observer = Collector(port, topic=f"edge/{SITE}/#", client_id="soak-fleet-observer")
        jpeg = make_jpeg()
        self.boxes: List[ThreadedBox] = []
        for i in range(n):
            box = ThreadedBox(f"{PREFIX}-{i:04d}", port, jpeg)
            box.client.reconnect_delay_set(0.5, 5)
            box.client.loop_start()
            self.boxes.append(box)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-fleet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        kinds = ("status", "alert", "sample")
        periods = (10.0, self.every_s, self.every_s)
        now = time.monotonic()
        due = [[now + self.rng.uniform(0, p) for p in periods] for _ in self.boxes]
        while not self._stop.wait(0.2):
            now = time.monotonic()
            for box, times in zip(self.boxes, due):
                for k, kind in enumerate(kinds):
                    if now >= times[k]:
                        box.publish(kind)
                        times[k] = now + periods[k]

    def stop_traffic(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def unacked(self) -> int:
        return sum(b.unacked for b in self.boxes)

    def sent(self) -> Dict[str, str]:
        out: Dict[str, str] = {}
        for box in self.boxes:
            with box._lock:
                out.update(box.sent)
        return out

    def stored(self, index: Path) -> Set[str]:
        try:
            db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return set()
        try:
            like = f"{PREFIX}-%"
            ids = {r[0] for r in db.execute("SELECT id FROM alerts WHERE device LIKE ?", (like,))}
            return ids | {r[0] for r in db.execute("SELECT id FROM samples WHERE device LIKE ?", (like,))}
        except sqlite3.Error:
            return set()
        finally:
            db.close()

    def drained(self, index: Path) -> bool:
        return self.unacked() == 0 and set(self.sent()) <= self.stored(index)

    def report(self, index: Path) -> Dict[str, Any]:
        sent = self.sent()
        have = self.stored(index)
        delivered = set(self.observer.ids("/alerts")) | set(self.observer.ids("/samples"))
        missing = sorted(set(sent) - have)
        drops: Dict[str, int] = {}
        try:
            db = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5)
            for reason, count in db.execute("SELECT reason, count FROM drops WHERE device LIKE ?", (f"{PREFIX}-%",)):
                drops[reason] = drops.get(reason, 0) + int(count)
            db.close()
        except sqlite3.Error:
            pass
        return {
            "boxes": self.n,
            "published": {k: sum(b.published[k] for b in self.boxes) for k in ("status", "alert", "sample")},
            "unacked": self.unacked(),
            "stored": {k: sum(1 for i, kk in sent.items() if kk == k and i in have) for k in ("alert", "sample")},
            "lost": {k: sum(1 for i in missing if sent[i] == k) for k in ("alert", "sample")},
            "missing": [{"id": i, "kind": sent[i], "delivered_by_broker": i in delivered} for i in missing[:20]],
            "drops": drops,
        }

    def close(self) -> None:
        self.stop_traffic()
        for box in self.boxes:
            box.client.disconnect()
            box.client.loop_stop()
        self.observer.close()
