"""The daemon as a real process: SIGTERM within the bound, SIGKILL while spooling and while draining (nothing
lost, nothing corrupted), and a full disk (the daemon keeps detecting and says so)."""

from __future__ import annotations

import resource
import signal
import time
from pathlib import Path

from agent.spool.config import SpoolConfig
from agent.spool.store import Spool
from tests.agent.broker import MosquittoBroker, free_port
from tests.agent.daemon.helpers import (
    Collector,
    DaemonProcess,
    config_dict,
    drain_notifications,
    notify_socket,
    sampling_rules,
    synthetic_camera,
    wait_for,
    write_config,
)


def _sampling_camera(fps: float = 10) -> dict:
    cam = synthetic_camera("cam1", fps=fps)
    cam["rules"] = sampling_rules()
    return cam


def test_sigterm_stops_cleanly_within_the_bound(tmp_path: Path, broker: MosquittoBroker, daemon_model: Path) -> None:
    sock = notify_socket(tmp_path / "notify")
    data = config_dict(tmp_path, broker.port, daemon_model, [_sampling_camera()])
    data["daemon"]["shutdown_timeout_s"] = 3
    cfg = write_config(tmp_path / "c.yaml", data)
    proc = DaemonProcess(cfg, env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"})
    try:
        proc.wait_running()
        messages = [m for _, m in drain_notifications(sock, 1.0)]
        assert any(m.startswith("READY=1") for m in messages) and "WATCHDOG=1" in messages
        rc, elapsed = proc.terminate()
        assert rc == 0, proc.log()[-2000:]
        assert elapsed < 3 + 1.5, elapsed
        assert any(m.startswith("STOPPING=1") for _, m in drain_notifications(sock, 0.3))
        assert proc.status()["state"] == "stopped"
        with Spool(SpoolConfig(path=tmp_path / "state" / "spool.sqlite3")) as spool:
            assert spool.integrity_check() == "ok"
    finally:
        proc.close()


def _spool_ids(path: Path) -> set:
    with Spool(SpoolConfig(path=path)) as spool:
        assert spool.integrity_check() == "ok"
        return set(spool.message_ids())


def test_sigkill_while_spooling_and_while_draining_loses_nothing(tmp_path: Path, daemon_model: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker", persistence=True)
    broker.start()
    collector = Collector(broker.port)
    broker.stop()  # the collector's session is kept; the daemon starts offline and spools
    spool_path = tmp_path / "state" / "spool.sqlite3"
    data = config_dict(tmp_path, broker.port, daemon_model, [_sampling_camera()])
    data["spool"]["synchronous"] = "FULL"
    cfg = write_config(tmp_path / "c.yaml", data)
    try:
        proc = DaemonProcess(cfg)
        proc.wait_running()
        wait_for(lambda: (proc.status().get("spool") or {}).get("items", 0) >= 15, 30, "items spooled offline")
        proc.kill()  # while spooling
        proc.close()
        spooled = _spool_ids(spool_path)
        assert len(spooled) >= 15

        broker.start()
        proc = DaemonProcess(cfg)
        wait_for(lambda: collector.on("/samples") or collector.on("/alerts"), 30, "draining started")
        proc.kill()  # while draining
        proc.close()
        remaining = _spool_ids(spool_path)

        data["cameras"] = []  # the last run only drains
        write_config(cfg, data)
        proc = DaemonProcess(cfg)
        wait_for(lambda: proc.status().get("spool", {}).get("items", -1) == 0, 30, "spool empty")
        rc, _ = proc.terminate()
        proc.close()
        assert rc == 0
        assert _spool_ids(spool_path) == set()
        time.sleep(0.5)
        received = set(collector.ids("/samples") + collector.ids("/alerts") + collector.ids("/snapshots"))
        assert spooled <= received, f"lost {len(spooled - received)} of {len(spooled)}"
        assert remaining <= received
    finally:
        collector.close()
        broker.close()


def _limit_file_size() -> None:
    # "Disk full" for this process only: writes past 3 MB fail with EFBIG (SIGXFSZ ignored), exactly like
    # ENOSPC to SQLite. The model is only read; status.json stays small.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))


def test_disk_full_keeps_detecting_and_reports_it(tmp_path: Path, daemon_model: Path) -> None:
    data = config_dict(tmp_path, free_port(), daemon_model, [_sampling_camera()])
    data["spool"]["max_bytes"] = 100_000_000  # the spool thinks it has room; the disk says no
    cfg = write_config(tmp_path / "c.yaml", data)
    proc = DaemonProcess(cfg, preexec=_limit_file_size)
    try:
        proc.wait_running()
        status = wait_for(
            lambda: proc.status() if proc.status().get("output", {}).get("spool_write_errors", 0) > 0 else None,
            60,
            "spool write errors",
        )
        frames = status["inference"]["frames"]
        wait_for(lambda: proc.status().get("inference", {}).get("frames", 0) > frames + 10, 20, "still detecting")
        status = proc.status()
        assert status["output"]["disk_ok"] is False
        assert any("spool writes failing" in p for p in status["problems"])
        assert proc.proc.poll() is None
        rc, _ = proc.terminate()
        assert rc == 0
    finally:
        proc.close()
