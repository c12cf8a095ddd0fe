"""Logs, metrics endpoint, sd_notify and the progress-gated watchdog."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import structlog

from agent.observability import (
    MetricsServer,
    Sample,
    SdNotifier,
    SnapshotCollector,
    WatchdogGate,
    counter,
    gauge,
    registry_of,
    setup_logging,
)
from tests.agent.daemon.helpers import drain_notifications, notify_socket


def test_sd_notify_sends_datagrams(tmp_path: Path) -> None:
    sock = notify_socket(tmp_path / "notify")
    notifier = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"})
    assert notifier.watchdog_interval_s == 2.0
    notifier.ready("up")
    notifier.watchdog()
    notifier.stopping()
    got = [m for _, m in drain_notifications(sock, 0.2)]
    assert got == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"]


def test_sd_notify_is_inert_without_socket_and_survives_a_dead_one(tmp_path: Path) -> None:
    assert SdNotifier({}).ready() is False
    dead = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert dead.ready() is False  # logged, not raised


def test_watchdog_pid_of_another_process_disables_pings() -> None:
    assert SdNotifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None


def test_watchdog_gate_pings_only_after_progress(tmp_path: Path) -> None:
    sock = notify_socket(tmp_path / "n")
    now = [0.0]
    gate = WatchdogGate(SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "n")}), 1.0, clock=lambda: now[0])
    assert gate.progress() is True  # first progress pings
    now[0] = 0.5
    assert gate.progress() is False  # too soon
    now[0] = 5.0  # no progress between 0.5 and 5.0: nothing was sent meanwhile (nobody called)
    assert gate.progress() is True
    assert [m for _, m in drain_notifications(sock, 0.1)] == ["WATCHDOG=1", "WATCHDOG=1"]


def _scrape(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


def test_metrics_are_read_from_the_snapshots_at_scrape_time() -> None:
    state = {"fps": 4.5, "alerts": 2, "cameras": ['a"b']}

    def read() -> Iterator[Sample]:
        for camera in state["cameras"]:  # type: ignore[attr-defined]
            yield gauge("camera_fps", state["fps"], "Processed fps.", camera=camera)  # type: ignore[arg-type]
        yield counter("alerts_total", state["alerts"], "Alerts.")  # type: ignore[arg-type]

    server = MetricsServer(registry_of(SnapshotCollector("edge_agent_", read)), "127.0.0.1", 0)
    server.start()
    try:
        text = _scrape(server.port)
        assert "# TYPE edge_agent_camera_fps gauge" in text
        assert 'edge_agent_camera_fps{camera="a\\"b"} 4.5' in text
        assert "# TYPE edge_agent_alerts_total counter" in text and "edge_agent_alerts_total 2.0" in text
        state.update(fps=7.0, alerts=3, cameras=[])  # nothing copied anywhere: the next scrape reads anew
        text = _scrape(server.port)
        assert "edge_agent_alerts_total 3.0" in text and "camera_fps{" not in text  # a removed camera is gone
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
        assert info.value.code == 404
    finally:
        server.stop()


def test_a_broken_sample_reader_answers_500_and_the_server_goes_on() -> None:
    broken = {"on": True}

    def read() -> Iterator[Sample]:
        yield gauge("camera_fps", 1.0, "fps", camera="a")
        if broken["on"]:
            yield gauge("camera_fps", 1.0, "fps", site="x")  # other label names: a bug of the reader

    server = MetricsServer(registry_of(SnapshotCollector("edge_agent_", read)), "127.0.0.1", 0)
    server.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            _scrape(server.port)
        assert info.value.code == 500
        broken["on"] = False
        assert 'edge_agent_camera_fps{camera="a"} 1.0' in _scrape(server.port)
    finally:
        server.stop()


def test_json_logs_from_structlog_and_stdlib() -> None:
    stream = io.StringIO()
    setup_logging("info", "json", stream)
    try:
        structlog.get_logger("t").info("hello", camera="a")
        logging.getLogger("paho").warning("plain %s", "record")
        structlog.get_logger("t").debug("hidden")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert lines[0]["event"] == "hello" and lines[0]["camera"] == "a" and lines[0]["level"] == "info"
        assert lines[1]["event"] == "plain record" and lines[1]["level"] == "warning"
        assert len(lines) == 2
    finally:
        setup_logging("warning", "json")
