"""Process-level behaviour: the broker publishes the offline last will when the agent is SIGKILLed;
MQTT 3.1.1 fallback when a broker refuses MQTT 5; backoff maths."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from agent.link import Backoff, BackoffConfig
from agent.protocol import Topics
from tests.agent.broker import Collector, MosquittoBroker, free_port
from tests.agent.link.link_helpers import DEVICE, SITE, make_link, wait_until

ROOT = Path(__file__).resolve().parents[3]
TOPICS = Topics("edge", SITE, DEVICE)


@pytest.mark.broker
def test_last_will_offline_is_delivered_when_the_agent_is_sigkilled(tmp_path: Path, broker: MosquittoBroker) -> None:
    watcher = Collector(broker.port, client_id="watcher").subscribe(TOPICS.status)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("link_child.py")), str(broker.port), str(tmp_path)],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # structlog writes to stdout too
            if line.strip() == "ready":
                break
        else:
            pytest.fail(f"child exited with {proc.wait()}")
        assert watcher.wait_for(lambda m: any(json.loads(p)["state"] == "online" for _, p, *_ in m))
        os.kill(proc.pid, signal.SIGKILL)
        assert watcher.wait_for(lambda m: json.loads(m[-1][1])["state"] == "offline", 10)
        # and it is retained: a late subscriber sees "offline"
        late = Collector(broker.port, client_id="late").subscribe(TOPICS.status)
        assert late.wait_for(lambda m: bool(m) and json.loads(m[-1][1])["state"] == "offline" and m[-1][2])
        late.close()
    finally:
        proc.kill()
        proc.wait(10)
        watcher.close()


class V311OnlyProxy:
    """Stands in for a broker without MQTT 5 (mosquitto 2.0 cannot turn v5 off): answers a v5 CONNECT
    with a 3.1.1 CONNACK 'unacceptable protocol version' (what a 3.1.1 broker sends), forwards 3.1.1
    connections to the real mosquitto behind it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = free_port()
        self.refused_v5 = 0
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.threads: List[threading.Thread] = []
        self.stop = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        first = conn.recv(65536)
        # CONNECT: fixed header byte, remaining length (varint, 1-4 bytes), 0x00 0x04 "MQTT", level
        pos = 1
        while pos < len(first) and first[pos] & 0x80:
            pos += 1
        level_at = pos + 1 + 6
        level = first[level_at] if len(first) > level_at else 0
        if level == 5:
            self.refused_v5 += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream))
        up.sendall(first)

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while True:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.close()

        threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
        threading.Thread(target=pipe, args=(up, conn), daemon=True).start()

    def close(self) -> None:
        self.stop = True
        self.server.close()


@pytest.mark.broker
def test_falls_back_to_311_when_the_broker_refuses_v5(tmp_path: Path, broker: MosquittoBroker) -> None:
    proxy = V311OnlyProxy(broker.port)
    watcher = Collector(broker.port, client_id="watcher").subscribe(TOPICS.alerts)
    link = make_link(tmp_path, proxy.port, protocol="auto")
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        m = link.metrics()
        assert (m.protocol, m.protocol_fallbacks, m.refused, proxy.refused_v5) == ("3.1.1", 1, 1, 1)
        link.spool.put("alert", TOPICS.alerts, b'{"id":"a"}')
        assert watcher.wait_for(lambda msgs: len(msgs) == 1)
        assert wait_until(lambda: len(link.spool) == 0)
    finally:
        link.stop()
        watcher.close()
        proxy.close()


def test_backoff_is_capped_exponential_with_jitter() -> None:
    cfg = BackoffConfig(initial_s=1.0, max_s=8.0, multiplier=2.0, jitter=0.5)
    top = Backoff(cfg, rand=lambda: 0.0)
    assert [top.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    low = Backoff(cfg, rand=lambda: 1.0)
    assert [low.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    top.reset()
    assert top.next_delay() == 1.0
    real = Backoff(cfg)
    delays = [real.next_delay() for _ in range(50)]
    assert all(0.5 <= d <= 8.0 for d in delays) and len(set(delays)) > 1


def test_refused_connection_is_counted_when_nothing_listens(tmp_path: Path) -> None:
    link = make_link(tmp_path, free_port())
    link.start()
    try:
        assert wait_until(lambda: link.metrics().connect_errors >= 3, 10)
        assert link.metrics().connects == 0 and not link.connected
    finally:
        link.stop()
