"""State has one writer thread; the others read what it publishes (issue 11's found defects).

- per-camera stats: the rules thread writes them; the status task, the MQTT link and the OTA worker read
  them while it does. Reading the live deques raised "deque mutated during iteration" (the status task died,
  the daemon exited 1, and the restart counted as a probation crash);
- run-time rule changes: ``set_thresholds`` used to be computed on the event loop from rules the inference
  thread had not replaced yet, so the second of two quick commands undid the first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, List

from agent.app.pipeline import CameraStats
from agent.app.report import aggregate_fps, camera_fps
from agent.config import load_config
from agent.core.backoff import Backoff
from agent.daemon import Daemon
from agent.protocol import SetThresholdsCommand
from agent.threads import CAMERA, FRAME_PATH, SIDE_TASK, OnDeath, Policy, Worker
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
    daemon.live.pipeline = pipeline  # type: ignore[assignment]
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
                aggregate_fps(daemon.live)  # what the status task, the probation check and the status line read
                camera_fps(daemon.live, "cam0")
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
        assert loop is not None and daemon.live.pipeline is not None

        async def both() -> Any:
            # back to back on the event loop, as the commands task handles two commands that arrive together
            first = await daemon.parts.commands.handle(
                SetThresholdsCommand(type="set_thresholds", request_id="t1", thresholds={"conf": 0.31})
            )
            second = await daemon.parts.commands.handle(
                SetThresholdsCommand(
                    type="set_thresholds", request_id="t2", thresholds={"iou": 0.55, "any-part.min_confidence": 0.42}
                )
            )
            third = await daemon.parts.commands.handle(
                SetThresholdsCommand(type="set_thresholds", request_id="t3", thresholds={"nonsense": 0.5})
            )
            return first, second, third

        first, second, third = asyncio.run_coroutine_threadsafe(both(), loop).result(15)
        assert first.status.value == "ok" and second.status.value == "ok"
        assert third.error is not None and third.error.code == "invalid"
        pipeline = daemon.live.pipeline
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


class _SpyUpdates:
    """Stands in for the model-update service at shutdown only: its installer is the spy."""

    def __init__(self, installer: _SpyInstaller) -> None:
        self.installer = installer

    def stop(self, timeout: float) -> bool:
        return True


def test_a_side_task_crash_is_not_a_model_crash(tmp_path: Path, broker: MosquittoBroker, daemon_model: Path) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        spy = _SpyInstaller()
        d.daemon._parts = dataclasses.replace(d.daemon.parts, updates=_SpyUpdates(spy))  # type: ignore[arg-type]

        def broken() -> None:
            raise RuntimeError("status document bug")

        d.daemon.write_status = broken  # type: ignore[method-assign]
        wait_for(lambda: d.rc is not None, 15, "daemon stopped")
    assert d.rc == 4  # EXIT_SIDE_TASK: systemd restarts it ...
    assert spy.clean == 1  # ... and probation does not count it as a crash of the release
    assert any("status" in e for e in d.daemon.live.errors)


class _Fatal(BaseException):
    """Escapes every ``except Exception`` guard, as a bug in a thread's own loop would."""


def test_a_dying_output_writer_is_restarted_and_reported(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        writer = d.daemon.parts.writer
        assert writer is not None
        real = writer._handle
        calls = {"n": 0}

        def dies_once(job: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise _Fatal("writer bug")
            real(job)

        writer._handle = dies_once  # type: ignore[method-assign]
        wait_for(lambda: d.daemon.status_document()["threads"]["output-writer"]["restarts"] == 1, 15, "a restart")
        document = d.daemon.status_document()
        assert document["threads"]["output-writer"]["state"] == "running"
        assert any(p.startswith("thread output-writer died 1 time(s)") for p in document["problems"])
        wait_for(lambda: calls["n"] > 3, 15, "the restarted writer handles jobs again")
        assert d.rc is None  # the daemon kept running


def test_a_dying_rules_thread_stops_the_daemon_as_a_model_failure(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        spy = _SpyInstaller()
        d.daemon._parts = dataclasses.replace(d.daemon.parts, updates=_SpyUpdates(spy))  # type: ignore[arg-type]
        pipeline = d.daemon.live.pipeline
        assert pipeline is not None and pipeline._rules_stage is not None

        def broken(*_: Any) -> None:
            raise _Fatal("rules bug")

        pipeline._rules_stage._post = broken  # type: ignore[method-assign]
        wait_for(lambda: d.rc is not None, 15, "daemon stopped")
    assert d.rc == 1  # EXIT_FAILED: the frame path died; during probation that counts against the release
    assert spy.clean == 0
    assert any("rules" in e for e in d.daemon.live.errors)


def test_a_side_thread_that_keeps_dying_stops_the_daemon_cleanly(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        spy = _SpyInstaller()
        d.daemon._parts = dataclasses.replace(d.daemon.parts, updates=_SpyUpdates(spy))  # type: ignore[arg-type]

        def broken() -> None:
            raise _Fatal("side thread bug")

        fast = Policy(OnDeath.RESTART, max_restarts=2, give_up=OnDeath.STOP, backoff=Backoff(0.01, 0.02))
        Worker("side-worker", broken, fast, d.daemon.supervisor).start()
        wait_for(lambda: d.rc is not None, 15, "daemon stopped")
    assert d.rc == 4 and spy.clean == 1  # EXIT_SIDE_TASK, and probation does not count it
    state = {s.name: s for s in d.daemon.supervisor.states()}["side-worker"]
    assert state.state == "gave_up" and state.deaths == 3 and state.restarts == 2
    assert any("side-worker" in e for e in d.daemon.live.errors)


def test_every_thread_of_a_running_daemon_is_supervised(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path
) -> None:
    import threading as _threading

    cfg = write_config(
        tmp_path / "c.yaml",
        config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1"), synthetic_camera("cam2", seed=2)]),
    )
    with InProcessDaemon(cfg) as d:
        wait_for(
            lambda: d.daemon.live.pipeline is not None and d.daemon.live.pipeline.counters.batches > 2, 30, "batches"
        )
        states = {s.name: s for s in d.daemon.supervisor.states()}
        policies = {name: w.policy for name, w in d.daemon.supervisor._workers.items()}
        expected = {
            "inference": FRAME_PATH,
            "rules": FRAME_PATH,
            "output-writer": SIDE_TASK,
            "mqtt-link": SIDE_TASK,
            "camera-cam1": CAMERA,
            "camera-cam1-watchdog": CAMERA,
            "camera-cam2": CAMERA,
            "camera-cam2-watchdog": CAMERA,
        }
        for name, policy in expected.items():
            assert policies.get(name) == policy, name
            assert states[name].state == "running", name
        # every long-lived thread of the process that belongs to the daemon is one of its workers
        long_lived = {t.name for t in _threading.enumerate() if t.name in expected or t.name.startswith("camera-")}
        assert long_lived <= set(states)
        document = d.daemon.status_document()
        assert set(expected) <= set(document["threads"])
