"""`edge-agent status`: documented exit codes, and every reason listed (issue 11: it exited 0 for a daemon that
was gone as long as the status file was young, and never looked at MQTT or the cameras)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from agent.app.status import (
    EXIT_DEGRADED,
    EXIT_HEALTHY,
    EXIT_NO_STATUS,
    EXIT_NOT_RUNNING,
    assess,
    pid_alive,
    status_main,
    write_status,
)
from tests.agent.broker import MosquittoBroker
from tests.agent.daemon.helpers import InProcessDaemon, config_dict, synthetic_camera, wait_for, write_config

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)


def doc(**over: Any) -> Dict[str, Any]:
    d: Dict[str, Any] = {
        "state": "running",
        "pid": 4242,
        "updated": (NOW - timedelta(seconds=3)).isoformat(),
        "mqtt": {"connected": True, "down_since": None},
        "cameras": {"line1": {"state": "streaming"}},
        "problems": [],
    }
    d.update(over)
    return d


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize(
    "document, alive, code, says",
    [
        (doc(), True, EXIT_HEALTHY, []),
        (doc(), None, EXIT_HEALTHY, []),  # no pid to check (older status files)
        (doc(), False, EXIT_NOT_RUNNING, ["not running (pid 4242 is gone)"]),
        (doc(state="stopped"), True, EXIT_NOT_RUNNING, ["the daemon is stopped"]),
        (doc(updated=ago(300)), True, EXIT_NOT_RUNNING, ["300 s old"]),
        (doc(mqtt={"connected": False, "down_since": ago(10)}), True, EXIT_HEALTHY, []),  # within the grace
        (doc(mqtt={"connected": False, "down_since": ago(120)}), True, EXIT_DEGRADED, ["MQTT disconnected for 120 s"]),
        (doc(mqtt={"connected": False, "last_connack": "Not authorized"}), True, EXIT_DEGRADED, ["Not authorized"]),
        (
            doc(cameras={"line1": {"state": "reconnecting", "reason": "connection refused"}, "line2": {"state": "x"}}),
            True,
            EXIT_DEGRADED,
            ["camera line1 is reconnecting: connection refused"],
        ),
        (doc(cameras={"line1": {"state": "stalled"}}), True, EXIT_DEGRADED, ["camera line1 is stalled"]),
        (doc(problems=["spool writes failing: disk full"]), True, EXIT_DEGRADED, ["disk full"]),
    ],
)
def test_assess(document: Dict[str, Any], alive: Optional[bool], code: int, says: List[str]) -> None:
    got, problems = assess(document, alive, now=NOW.timestamp())
    assert got == code, problems
    for fragment in says:
        assert any(fragment in p for p in problems), problems
    if code == EXIT_HEALTHY:
        assert problems == []


def test_pid_alive() -> None:
    import os

    assert pid_alive(os.getpid()) is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert pid_alive(child.pid) is False  # reaped: gone
    assert pid_alive(None) is None and pid_alive("12") is None and pid_alive(True) is None


def test_a_status_file_left_by_a_dead_daemon_says_not_running(tmp_path: Path, daemon_model: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", config_dict(tmp_path, 1883, daemon_model, [synthetic_camera("cam1")]))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    fresh = datetime.now(timezone.utc).isoformat()
    write_status(tmp_path / "state" / "status.json", doc(pid=child.pid, updated=fresh))  # young file, dead pid
    out = io.StringIO()
    assert status_main(cfg, out=out) == EXIT_NOT_RUNNING
    assert f"the daemon is not running (pid {child.pid} is gone)" in out.getvalue()
    assert status_main(tmp_path / "missing.yaml", out=io.StringIO()) == EXIT_NO_STATUS


def test_a_running_daemon_then_its_broker_gone(tmp_path: Path, broker: MosquittoBroker, daemon_model: Path) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        wait_for(lambda: d.daemon.parts.link.connected, 10, "connected")
        wait_for(lambda: d.status()["cameras"]["cam1"].get("state") == "streaming", 10, "streaming")
        d.daemon.write_status()
        out = io.StringIO()
        assert status_main(cfg, out=out) == EXIT_HEALTHY, out.getvalue()
        broker.stop()
        wait_for(lambda: not d.daemon.parts.link.connected, 10, "disconnected")
        time.sleep(0.3)
        d.daemon.write_status()
        out = io.StringIO()
        assert status_main(cfg, out=out, mqtt_grace_s=0.0) == EXIT_DEGRADED
        assert "MQTT disconnected for" in out.getvalue()
        out = io.StringIO()
        assert status_main(cfg, as_json=True, out=out, mqtt_grace_s=3600) == EXIT_HEALTHY  # within a long grace
        assert json.loads(out.getvalue())["verdict"]["exit_code"] == EXIT_HEALTHY
