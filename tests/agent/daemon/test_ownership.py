"""State has one writer thread; the others read what it publishes (issue 11's found defects).

- per-camera stats: the rules thread writes them; the status task, the MQTT link and the OTA worker read
  them while it does. Reading the live deques raised "deque mutated during iteration" (the status task died,
  the daemon exited 1, and the restart counted as a probation crash);
- run-time rule changes: ``set_thresholds`` used to be computed on the event loop from rules the inference
  thread had not replaced yet, so the second of two quick commands undid the first.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, List

from agent.app.daemon import Daemon
from agent.app.pipeline import CameraStats
from agent.config import load_config
from agent.protocol import SetThresholdsCommand
from tests.agent.broker import MosquittoBroker
from tests.agent.daemon.helpers import InProcessDaemon, config_dict, synthetic_camera, wait_for, write_config


class _Runtime:
    def __init__(self) -> None:
        self.stats = CameraStats()


class _Pipeline:
    def __init__(self, n: int) -> None:
        self.cameras = {f"cam{i}": _Runtime() for i in range(n)}


def _write_like_the_rules_thread(stats: CameraStats, stop: threading.Event) -> None:
    while not stop.is_set():
        now = time.monotonic()
        stats.processed += 1
        stats.latencies_ms.append(1.0)
        stats.fps_window.append(now)
        publish = getattr(stats, "publish", None)
        if publish is not None:
            publish()


def test_readers_of_camera_stats_never_see_them_change_under_them(tmp_path: Path, daemon_model: Path) -> None:
    path = write_config(tmp_path / "c.yaml", config_dict(tmp_path, 1883, daemon_model, [synthetic_camera("cam0")]))
    daemon = Daemon(load_config(path, environ={}), path, install_signal_handlers=False)
    pipeline = _Pipeline(2)
    daemon.pipeline = pipeline  # type: ignore[assignment]
    stop = threading.Event()
    writers = [
        threading.Thread(target=_write_like_the_rules_thread, args=(r.stats, stop), daemon=True)
        for r in pipeline.cameras.values()
    ]
    for w in writers:
        w.start()
    errors: List[str] = []
    reads = 0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            try:
                daemon._aggregate_fps()  # what the status task, the probation check and the status line read
                daemon._camera_fps("cam0")
                reads += 1
            except RuntimeError as exc:
                errors.append(str(exc))
    finally:
        stop.set()
        for w in writers:
            w.join(5)
    assert reads > 1000
    assert not errors, f"{len(errors)} of {reads} reads failed: {errors[0]}"
    snapshot = pipeline.cameras["cam0"].stats.snapshot
    assert snapshot.processed > 0 and len(snapshot.frame_times) <= 256


def test_two_quick_set_thresholds_both_hold(tmp_path: Path, broker: MosquittoBroker, daemon_model: Path) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        daemon = d.daemon
        loop = daemon._loop
        assert loop is not None and daemon.pipeline is not None

        async def both() -> Any:
            # back to back on the event loop, as the commands task handles two commands that arrive together
            first = await daemon._handle_command(
                SetThresholdsCommand(type="set_thresholds", request_id="t1", thresholds={"conf": 0.31})
            )
            second = await daemon._handle_command(
                SetThresholdsCommand(
                    type="set_thresholds", request_id="t2", thresholds={"iou": 0.55, "any-part.min_confidence": 0.42}
                )
            )
            third = await daemon._handle_command(
                SetThresholdsCommand(type="set_thresholds", request_id="t3", thresholds={"nonsense": 0.5})
            )
            return first, second, third

        first, second, third = asyncio.run_coroutine_threadsafe(both(), loop).result(15)
        assert first.status.value == "ok" and second.status.value == "ok"
        assert third.error is not None and third.error.code == "invalid"
        pipeline = daemon.pipeline
        wait_for(lambda: pipeline.decode.iou == 0.55, 5, "second command applied")
        assert pipeline.decode.conf == 0.31  # the first one was not undone by the second
        rules = pipeline.cameras["cam1"].rules
        assert rules.alerts[0].min_confidence == 0.42


class _SpyInstaller:
    """Stands in for the OTA installer at shutdown only: records whether the stop was marked clean."""

    def __init__(self) -> None:
        self.clean = 0

    def mark_clean_shutdown(self) -> None:
        self.clean += 1


def test_a_side_task_crash_is_not_a_model_crash(tmp_path: Path, broker: MosquittoBroker, daemon_model: Path) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        spy = _SpyInstaller()
        d.daemon.installer = spy  # type: ignore[assignment]

        def broken() -> None:
            raise RuntimeError("status document bug")

        d.daemon._write_status = broken  # type: ignore[method-assign]
        wait_for(lambda: d.rc is not None, 15, "daemon stopped")
    assert d.rc == 4  # EXIT_SIDE_TASK: systemd restarts it ...
    assert spy.clean == 1  # ... and probation does not count it as a crash of the release
    assert any("status" in e for e in d.daemon.errors)


def test_a_dead_link_thread_stops_the_daemon_cleanly(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        spy = _SpyInstaller()
        d.daemon.installer = spy  # type: ignore[assignment]
        d.daemon.link.failure = RuntimeError("link thread bug")  # what the thread records when it dies
        wait_for(lambda: d.rc is not None, 15, "daemon stopped")
    assert d.rc == 4 and spy.clean == 1
    assert any("mqtt-link" in e for e in d.daemon.errors)
