"""``edge-agent run``: the asyncio supervisor that wires cameras, the inference loop, the spool, the MQTT link
and the OTA installer together.

Structure (one place knows every part)::

    Daemon.run()
      start:  OTA on_start() -> model path -> Detector (loader thread) -> Spool -> OutputWriter thread
              -> Pipeline -> MqttLink thread -> camera threads -> metrics thread -> READY=1
      tasks (a small TaskGroup; a task that dies unexpectedly stops the daemon, it is never silently lost):
              inference   awaits Pipeline.step() on the inference thread; WatchdogGate.progress() after
                          every completed step (so a stuck runtime stops the watchdog pings)
              commands    MQTT commands -> pipeline operations / OTA -> replies through the spool
              pushes      model pushes -> OTA install (thread) -> hot swap
              status      every status_interval_s: status.json, retained device status, metrics,
                          OTA probation commit / health
              stop        waits for SIGTERM/SIGINT (stop) and SIGHUP (reload)
      stop:   STOPPING=1 -> cancel tasks -> stop cameras, inference, writer, link -> close spool
              -> OTA mark_clean_shutdown; all bounded by daemon.shutdown_timeout_s.

SIGHUP reloads what is safe while running: log level, decode thresholds, cameras added / removed /
changed, each camera's rules and triage. Other sections (mqtt, spool, model, ota, metrics) need a restart;
a reload that changes them says so in the log and applies the rest. An invalid file changes nothing.

Python 3.8: no asyncio.TaskGroup or to_thread; blocking work goes to named daemon threads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

import structlog

from agent import __version__
from agent.app.model_updates import ModelUpdatesConfig, ModelUpdateService
from agent.app.pipeline import (
    CameraRuntime,
    InferenceThread,
    ModelInfo,
    OutputWriter,
    Pipeline,
    percentile,
)
from agent.app.status import write_status
from agent.config import AgentConfig, ConfigError, add_config_argument, load_config
from agent.core.triage import FlagWindow
from agent.engine.detector import Detector
from agent.observability.logs import set_level, setup_logging
from agent.observability.metrics import Metrics, MetricsServer
from agent.observability.native_stderr import NativeStderr, capture_native_stderr
from agent.observability.sdnotify import SdNotifier, WatchdogGate
from agent.ota.errors import OtaError
from agent.ota.installer import ServingContext
from agent.protocol.models import (
    CameraState,
    CameraStatus,
    CameraSummary,
    Command,
    CommandReply,
    DeviceStatus,
    FlagWindowCommand,
    ModelQuality,
    RequestSnapshotCommand,
    RollbackCommand,
    SetThresholdsCommand,
)
from agent.protocol.parse import encode_json
from agent.rules_config import class_needs
from agent.sources.camera import CameraSource
from agent.sources.config import CameraConfig
from agent.sources.factory import build_source
from agent.sources.frame import SourceState, SourceStatus

log = structlog.get_logger("agent.daemon")

DetectorFactory = Callable[[Path, Any], Detector]
"""Builds a Detector from a model path and backend config (the seam tests use for a blocking backend)."""

_CAMERA_STATE = {
    SourceState.STARTING: CameraState.STARTING,
    SourceState.STREAMING: CameraState.STREAMING,
    SourceState.STALLED: CameraState.STALLED,
    SourceState.RECONNECTING: CameraState.RECONNECTING,
    SourceState.STOPPED: CameraState.STOPPED,
    SourceState.FAILED: CameraState.ERROR,
}

# a run-time change handed to the inference thread is applied between two frames: far below this
COMMAND_APPLY_TIMEOUT_S = 10.0

EXIT_OK = 0
EXIT_FAILED = 1  # the inference task failed: possibly the model; counts as a crash during probation
EXIT_CONFIG = 2
EXIT_START_FAILED = 3
EXIT_SIDE_TASK = 4  # a side task or thread died (status, commands, MQTT link, ...): not the model's fault
# Tasks whose failure can be the model's: every other task's death stops the daemon with EXIT_SIDE_TASK and
# a clean-shutdown mark, so that probation does not roll back a healthy release for it.
MODEL_TASKS = frozenset({"inference"})


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _model_problem(path: Optional[Path], exc: BaseException) -> str:
    """Why a model does not run, naming its file once (engine errors name it already)."""
    text = str(exc)
    return text if path is None or str(path) in text else f"{path}: {text}"


def _default_detector_factory(path: Path, backend: Any) -> Detector:
    return Detector.open(path, backend)


async def _in_thread(fn: Callable[[], Any], name: str) -> Any:
    """Run a blocking call in a fresh daemon thread (never joined at exit: a hung call cannot block it)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await future


def _settle(future: asyncio.Future[Any], result: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class TaskGroup:
    """Named tasks; the first one to fail (or to end while the group runs) sets ``failed`` and wakes the
    supervisor. ``cancel_all(timeout)`` cancels and waits, bounded."""

    def __init__(self, on_exit: Callable[[str, Optional[BaseException]], None]) -> None:
        self.tasks: Dict[str, asyncio.Task[Any]] = {}
        self._on_exit = on_exit
        self.closing = False

    def start(self, name: str, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        try:
            task.set_name(name)
        except AttributeError:  # pragma: no cover - Python < 3.8
            pass
        self.tasks[name] = task
        task.add_done_callback(lambda t, n=name: self._done(n, t))  # type: ignore[misc]

    def _done(self, name: str, task: asyncio.Task[Any]) -> None:
        if self.closing:
            return
        error = None if task.cancelled() else task.exception()
        self._on_exit(name, error)

    async def cancel_all(self, timeout: float) -> List[str]:
        """Cancel every task; returns the names of those still running after ``timeout``."""
        self.closing = True
        for task in self.tasks.values():
            task.cancel()
        pending = [t for t in self.tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, timeout))
        return [name for name, task in self.tasks.items() if not task.done()]


class Daemon:
    """The running agent; see the module docstring.

    Args:
        config: the validated configuration.
        config_path: the file, re-read on SIGHUP (``None``: reload disabled).
        notifier: sd_notify sender (default: from the environment).
        detector_factory: builds detectors (default: :meth:`Detector.open`); tests pass a blocking backend.
        install_signal_handlers: SIGTERM/SIGINT/SIGHUP handlers (only possible on the main thread).
        model_updates: timings of the model-update service (default: :class:`ModelUpdatesConfig`).
    """

    def __init__(
        self,
        config: AgentConfig,
        config_path: Optional[Path] = None,
        notifier: Optional[SdNotifier] = None,
        detector_factory: Optional[DetectorFactory] = None,
        install_signal_handlers: bool = True,
        model_updates: Optional[ModelUpdatesConfig] = None,
        native_stderr: Optional[NativeStderr] = None,
    ) -> None:
        self.config = config
        self.native_stderr = native_stderr  # its thread's death is reported as a problem (output then unwrapped)
        self.config_path = config_path
        self.notifier = notifier or SdNotifier()
        self._detector_factory = detector_factory or _default_detector_factory
        self._install_signals = install_signal_handlers
        self.metrics = Metrics()
        self.started_wall = time.time()
        self.state = "starting"
        self.stop_reason = ""
        self.exit_code = EXIT_OK
        self.errors: List[str] = []
        self.reloads = 0
        self.camera_status: Dict[str, SourceStatus] = {}
        self.model_path: Optional[Path] = None
        self.ota_last: Optional[Dict[str, Any]] = None
        self.installer: Any = None
        self.updates: Optional[ModelUpdateService] = None
        self._updates_config = model_updates or ModelUpdatesConfig()
        self.spool: Any = None
        self.link: Any = None
        self.pipeline: Optional[Pipeline] = None
        self.writer: Optional[OutputWriter] = None
        self.inference: Optional[InferenceThread] = None
        self.metrics_server: Optional[MetricsServer] = None
        self.gate: Optional[WatchdogGate] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._mqtt_down_since: Optional[str] = None  # status task only
        self.model_error: Optional[str] = None  # why no model runs (event loop writes it)
        self._model_ready: Optional[asyncio.Event] = None  # made on the loop (Python 3.8 binds it at creation)
        self._stop_event: Optional[asyncio.Event] = None
        self._reload_event: Optional[asyncio.Event] = None
        self._tasks: Optional[TaskGroup] = None
        self._swap_lock: Optional[asyncio.Lock] = None
        self.ready = threading.Event()
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ control (any thread)

    def request_stop(self, reason: str = "requested") -> None:
        loop, event = self._loop, self._stop_event
        if loop is None or event is None:
            return
        if not self.stop_reason:
            self.stop_reason = reason
        loop.call_soon_threadsafe(event.set)

    def request_reload(self) -> None:
        loop, event = self._loop, self._reload_event
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    @property
    def state_dir(self) -> Path:
        return self.config.daemon.state_dir

    @property
    def status_path(self) -> Path:
        return self.state_dir / "status.json"

    # ------------------------------------------------------------------ start

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._reload_event = asyncio.Event()
        self._swap_lock = asyncio.Lock()
        try:
            await self._start()
        except Exception as exc:
            log.error("daemon_start_failed", error=f"{type(exc).__name__}: {exc}")
            self.errors.append(f"start failed: {exc}")
            self.exit_code = EXIT_START_FAILED
            await self._shutdown()
            return self.exit_code
        self.state = "running"
        self._write_status()
        self.notifier.ready(self._status_line())
        self.ready.set()
        log.info("daemon_ready", cameras=[c.name for c in self.config.cameras if c.enabled], model=str(self.model_path))
        assert self._stop_event is not None
        await self._stop_event.wait()
        log.info("daemon_stopping", reason=self.stop_reason)
        await self._shutdown()
        return self.exit_code

    def _serving(self) -> ServingContext:
        """For the OTA worker: the factory model and what the alert rules name (read from the current config)."""
        cfg = self.config
        return ServingContext(cfg.model.path, class_needs({c.name: c.rules for c in cfg.cameras if c.enabled}))

    async def _start(self) -> None:
        cfg = self.config
        self._model_ready = asyncio.Event()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        release: Optional[Dict[str, Any]] = None
        if cfg.ota is not None:
            # every installer call runs on the service's worker thread (see agent.app.model_updates)
            self.updates = ModelUpdateService(
                cfg.ota, cfg.mqtt.device, self._updates_config, on_event=self._on_ota_event, serving=self._serving
            )
            self.installer = self.updates.installer
            active = await self.updates.start()
            if active is not None:
                self.model_path = Path(active)
                record = self.installer.state().active
                release = None if record is None else {"name": record.name, "version": record.version}
        detector: Optional[Detector] = None
        rolled_back = False
        try:
            if self.model_path is None:
                if cfg.model.path is None:
                    raise ConfigError(["model.path: no model configured and no OTA release installed"])
                self.model_path = cfg.model.path
            detector = await self._load_detector(self.model_path)
        except Exception as exc:
            if self.updates is None or self.installer is None:
                raise  # nothing could ever bring a model: fail the start (exit 3), as a configuration error does
            # Not a restart loop every 5 s: stay up, say why on the status, keep the link, and wait for a signed
            # release (MQTT push or `edge-agent ota install`) to bring a model that loads.
            self.model_error = _model_problem(self.model_path, exc)
            self.model_path = None
            log.error("model_unavailable_waiting_for_a_release", error=self.model_error)
            if self.installer.state().trial is not None:
                # a release on probation whose model does not load is the release's fault: back to known-good,
                # whose model _first_model loads below, as it would that of a pushed release
                try:
                    rolled_back = await self.updates.rollback(f"model does not load: {exc}"[:500]) is not None
                except OtaError as rollback_error:
                    log.error("trial_rollback_failed", error=str(rollback_error))
        if detector is not None:
            model = ModelInfo.of(
                detector, release["name"] if release else None, release["version"] if release else None
            )
            log.info("model_loaded", **{k: str(v) for k, v in detector.describe().items()})

        from agent.link.link import MqttLink
        from agent.protocol.topics import Topics
        from agent.spool.store import Spool

        spool_cfg = cfg.spool_config()
        if not spool_cfg.path.is_absolute():
            spool_cfg = spool_cfg.model_copy(update={"path": self.state_dir / spool_cfg.path})
        self.spool = Spool(spool_cfg)
        topics = Topics(cfg.mqtt.topic_prefix, cfg.mqtt.site, cfg.mqtt.device)
        self.topics = topics
        out = cfg.output
        self.writer = OutputWriter(
            self.spool.put,
            topics,
            cfg.mqtt.device,
            queue_size=out.queue_size,
            queue_max_bytes=out.queue_max_mb * 1024 * 1024,
            sample_quality=out.sample_jpeg_quality,
            snapshot_quality=out.snapshot_jpeg_quality,
            alert_snapshots=out.alert_snapshots,
        )
        self.writer.start()
        if detector is not None:
            self.pipeline = Pipeline(detector, model, cfg.model.decode_params(), self.writer)
        self.inference = InferenceThread()
        self.link = MqttLink(cfg.mqtt, self.spool, self._device_status)
        assert self._loop is not None
        self.link.start(self._loop)
        if self.updates is not None:
            self.updates.attach(self.spool.put, topics, self.link, self._sync_model, self._loop, cfg.mqtt.limits)
        if self.pipeline is not None:
            self._add_cameras()
        elif rolled_back:
            await self._first_model()
        if cfg.metrics.enabled:
            self.metrics_server = MetricsServer(self.metrics, cfg.metrics.host, cfg.metrics.port)
            self.metrics_server.start()
            log.info("metrics_serving", host=cfg.metrics.host, port=self.metrics_server.port)
        interval = self.notifier.watchdog_interval_s
        self.gate = WatchdogGate(self.notifier, interval / 2.0 if interval else 1.0)
        self._tasks = TaskGroup(self._task_exited)
        self._tasks.start("inference", self._inference_task())
        self._tasks.start("commands", self._commands_task())
        if self.updates is not None:
            assert self.link.pushes is not None
            self._tasks.start("pushes", self.updates.run(self.link.pushes))
        else:
            self._tasks.start("pushes", self._pushes_task())
        self._tasks.start("status", self._status_task())
        self._tasks.start("reload", self._reload_task())
        if self._install_signals:
            self._signals(True)

    def _signals(self, install: bool) -> None:
        assert self._loop is not None
        try:
            if install:
                self._loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
                self._loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
                self._loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            else:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    self._loop.remove_signal_handler(sig)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread / not Unix
            pass

    def _task_exited(self, name: str, error: Optional[BaseException]) -> None:
        if error is not None:
            log.error("task_failed", task=name, error=f"{type(error).__name__}: {error}")
            self.errors.append(f"task {name} failed: {error}")
        else:
            log.error("task_ended_unexpectedly", task=name)
        if self.exit_code == EXIT_OK:
            self.exit_code = EXIT_FAILED if name in MODEL_TASKS else EXIT_SIDE_TASK
        self.request_stop(f"task {name} ended")

    # ------------------------------------------------------------------ cameras

    def _add_cameras(self) -> None:
        for camera in self.config.cameras:
            if camera.enabled:
                self._add_camera(camera)
        if self._model_ready is not None:
            self._model_ready.set()

    def _add_camera(self, camera: CameraConfig) -> None:
        assert self.pipeline is not None
        source = build_source(camera)
        loop = self._loop
        assert loop is not None

        def listener(status: SourceStatus) -> None:
            loop.call_soon_threadsafe(self._camera_changed, status)

        source.add_listener(listener)
        runtime = CameraRuntime(camera, source, self.pipeline.class_names)
        self.pipeline.add_camera(runtime)
        source.start()
        log.info("camera_started", camera=camera.name, source=camera.source.type)

    def _remove_camera(self, name: str) -> None:
        assert self.pipeline is not None

        def stopped(runtime: CameraRuntime) -> None:
            threading.Thread(target=runtime.source.stop, name=f"camera-{name}-stop", daemon=True).start()

        self.pipeline.remove_camera(name, stopped)
        self.camera_status.pop(name, None)
        self.metrics.remove("camera_fps", camera=name)
        log.info("camera_removed", camera=name)

    def _camera_changed(self, status: SourceStatus) -> None:
        self.camera_status[status.camera] = status
        log.info("camera_state", camera=status.camera, state=status.state.value, reason=status.reason)
        self._publish_camera(status)

    def _camera_fps(self, name: str) -> float:
        pipeline = self.pipeline
        runtime = pipeline.cameras.get(name) if pipeline else None
        return runtime.stats.snapshot.fps(time.monotonic()) if runtime else 0.0

    def _publish_camera(self, status: SourceStatus) -> None:
        if self.link is None:
            return
        try:
            message = CameraStatus(
                device=self.config.mqtt.device,
                camera=status.camera,
                state=_CAMERA_STATE[status.state],
                source=status.kind,
                fps=round(self._camera_fps(status.camera), 3),
                frames=status.frames,
                drops=status.dropped,
                reconnects=status.reconnects,
                reconnect_attempts=status.reconnect_attempts,
                last_frame_at=None,
                error=status.reason[:1024] or None,
                ts=_now(),
            )
            self.link.set_retained(self.topics.camera_status(status.camera), encode_json(message))
        except Exception:
            log.exception("camera_status_failed", camera=status.camera)

    # ------------------------------------------------------------------ tasks

    async def _inference_task(self) -> None:
        while self.pipeline is None:  # started without a model: wait for a release that brings one
            assert self.gate is not None
            self.gate.progress()  # nothing is stuck: the watchdog keeps being fed
            assert self._model_ready is not None
            try:
                await asyncio.wait_for(self._model_ready.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        assert self.pipeline is not None and self.inference is not None and self.gate is not None
        pipeline, thread, gate = self.pipeline, self.inference, self.gate
        idle = self.config.daemon.idle_poll_s
        while True:
            processed = await thread.call(pipeline.step)
            gate.progress()
            if not processed:
                await asyncio.sleep(idle)

    async def _commands_task(self) -> None:
        queue = self.link.commands
        assert queue is not None
        while True:
            command = await queue.get()
            try:
                reply = await self._handle_command(command)
            except Exception as exc:
                log.exception("command_failed", type=command.type, request_id=command.request_id)
                reply = CommandReply.failure(
                    command.request_id, self.config.mqtt.device, _now(), "internal", f"{type(exc).__name__}: {exc}"
                )
            self.link.reply(reply)

    def _fail(self, command: Command, code: str, message: str) -> CommandReply:
        return CommandReply.failure(command.request_id, self.config.mqtt.device, _now(), code, message)

    async def _handle_command(self, command: Command) -> CommandReply:
        pipeline = self.pipeline
        if pipeline is None and not isinstance(command, RollbackCommand):
            return self._fail(command, "no_model", f"no model runs on this box: {self.model_error}")
        device = self.config.mqtt.device
        known = {c.name for c in self.config.cameras if c.enabled}
        if isinstance(command, FlagWindowCommand):
            if command.camera not in known:
                return self._fail(command, "unknown_camera", f"no camera {command.camera!r}")
            try:
                window = FlagWindow(
                    command.camera, command.start.timestamp(), command.end.timestamp(), command.note or ""
                )
            except ValueError as exc:
                return self._fail(command, "invalid", str(exc))
            assert pipeline is not None
            pipeline.add_flag_window(window)
            return CommandReply.ok(command.request_id, device, _now(), {"camera": command.camera})
        if isinstance(command, RequestSnapshotCommand):
            if command.camera not in known:
                return self._fail(command, "unknown_camera", f"no camera {command.camera!r}")
            assert pipeline is not None
            pipeline.request_snapshot(command.camera, command.request_id)
            return CommandReply.ok(command.request_id, device, _now(), {"camera": command.camera})
        if isinstance(command, SetThresholdsCommand):
            return await self._set_thresholds(command, known)
        if isinstance(command, RollbackCommand):
            if self.updates is None:
                return self._fail(command, "unsupported", "OTA is not configured")
            guard = (command.if_active.name, command.if_active.counter) if command.if_active else None
            try:
                record = await self.updates.rollback(command.reason or "command", guard)
            except OtaError as exc:
                return self._fail(command, "rollback_failed", str(exc))
            if record is None:  # the named release is not active (any more): nothing to do
                active = self.updates.active_release()
                now_active = f"{active.name} {active.version}" if active else None
                return CommandReply.ok(command.request_id, device, _now(), {"active": now_active, "rolled_back": False})
            return CommandReply.ok(
                command.request_id, device, _now(), {"active": f"{record.name} {record.version}", "rolled_back": True}
            )
        return self._fail(command, "unsupported", f"command {command.type!r} is not handled here")

    async def _set_thresholds(self, command: SetThresholdsCommand, known: Any) -> CommandReply:
        """Handed to the inference thread, which owns the rules and applies the change between frames; the
        reply waits for it (commands are handled one at a time, so the next one sees this one applied)."""
        pipeline = self.pipeline
        assert pipeline is not None
        if command.camera is not None and command.camera not in known:
            return self._fail(command, "unknown_camera", f"no camera {command.camera!r}")
        targets = [c.name for c in self.config.cameras if c.enabled and (command.camera in (None, c.name))]
        applied = pipeline.update_thresholds(targets, dict(command.thresholds))
        try:
            await asyncio.wait_for(asyncio.wrap_future(applied), COMMAND_APPLY_TIMEOUT_S)
        except (KeyError, ValueError) as exc:
            return self._fail(command, "invalid", str(exc).strip('"'))
        except asyncio.TimeoutError:
            return self._fail(
                command, "timeout", f"the inference thread did not apply it within {COMMAND_APPLY_TIMEOUT_S:.0f} s"
            )
        return CommandReply.ok(
            command.request_id, self.config.mqtt.device, _now(), {"applied": len(command.thresholds)}
        )

    async def _pushes_task(self) -> None:
        """Without OTA configured, pushes are logged and dropped (the queue must not grow)."""
        queue = self.link.pushes
        assert queue is not None
        while True:
            _topic, push = await queue.get()
            log.warning("model_push_ignored", reason="OTA is not configured", release=push.release.name)

    async def _sync_model(self) -> None:
        """Swap the detector when the installer's active model differs from the one running (or bring up the
        pipeline and the cameras when the daemon started without a model)."""
        if self.installer is None:
            return
        if self.pipeline is None:
            await self._first_model()
            return
        assert self._swap_lock is not None
        async with self._swap_lock:
            path = self.installer.active_model_path()
            if path is None or path == self.model_path:
                return
            record = self.installer.state().active
            await self.swap_model(Path(path), record.name if record else None, record.version if record else None)

    async def _load_detector(self, path: Path) -> Detector:
        """Build a detector for ``path`` in a loader thread (a model load blocks for seconds)."""
        backend = self.config.model.backend
        detector: Detector = await _in_thread(lambda: self._detector_factory(path, backend), "model-loader")
        return detector

    async def _first_model(self) -> None:
        assert self.installer is not None and self._swap_lock is not None and self.writer is not None
        async with self._swap_lock:
            path = self.installer.active_model_path()
            if path is None or self.pipeline is not None:
                return
            record = self.installer.state().active
            try:
                detector = await self._load_detector(Path(path))
            except Exception as exc:
                self.model_error = _model_problem(Path(path), exc)
                log.error("model_load_failed", path=str(path), error=str(exc))
                return
            info = ModelInfo.of(detector, record.name if record else None, record.version if record else None)
            self.pipeline = Pipeline(detector, info, self.config.model.decode_params(), self.writer)
            self.model_path, self.model_error = Path(path), None
            log.info("model_loaded", recovered=True, **{k: str(v) for k, v in detector.describe().items()})
            self._add_cameras()

    async def swap_model(self, path: Path, name: Optional[str] = None, version: Optional[str] = None) -> bool:
        """Build a detector for ``path`` off the loop, then swap it in between batches. False if refused."""
        pipeline = self.pipeline
        assert pipeline is not None and self._loop is not None
        try:
            detector = await self._load_detector(path)
        except Exception as exc:
            log.error("model_load_failed", path=str(path), error=str(exc))
            self.errors.append(f"model load failed: {exc}")
            return False
        info = ModelInfo.of(detector, name, version)
        loop = self._loop
        done: asyncio.Future[Optional[Exception]] = loop.create_future()

        def finished(err: Optional[Exception]) -> None:
            loop.call_soon_threadsafe(_settle, done, err, None)

        pipeline.swap_detector(detector, info, finished)
        error = await done
        if error is None:
            self.model_path = path
            return True
        return False

    async def _status_task(self) -> None:
        interval = self.config.daemon.status_interval_s
        while True:
            await asyncio.sleep(interval)
            if self.link is not None and self.link.failure is not None:
                self._task_exited("mqtt-link", self.link.failure)  # a thread's death is never silent
                return
            self._write_status()
            self._update_metrics()
            if self.link is not None:
                self.link.set_retained(self.topics.status, encode_json(self._device_status()))
            for status in list(self.camera_status.values()):
                self._publish_camera(status)
            await self._probation()

    async def _probation(self) -> None:
        if self.updates is not None:
            await self.updates.probation(self._aggregate_fps, self.config.daemon.health_min_fps)

    async def _reload_task(self) -> None:
        assert self._reload_event is not None
        while True:
            await self._reload_event.wait()
            self._reload_event.clear()
            self.reload()

    # ------------------------------------------------------------------ reload

    def reload(self) -> bool:
        """Re-read the configuration file and apply what is safe; False when the file is invalid."""
        if self.config_path is None:
            log.warning("reload_unavailable", reason="no configuration file")
            return False
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload_rejected", problems=exc.problems)
            self.errors.append(f"reload rejected: {exc.problems[:3]}")
            return False
        return self.apply_config(new)

    def apply_config(self, new: AgentConfig) -> bool:
        old = self.config
        pipeline = self.pipeline
        if pipeline is None:
            log.warning("reload_deferred", reason="no model runs yet; restart to apply the new configuration")
            self.errors.append("reload deferred: no model runs yet")
            return False
        restart = [
            name
            for name in ("mqtt", "spool", "disk_budget", "ota", "metrics", "output")
            if getattr(old, name) != getattr(new, name)
        ]
        if old.model.path != new.model.path or old.model.backend != new.model.backend:
            restart.append("model")
        if old.daemon.state_dir != new.daemon.state_dir:
            restart.append("daemon.state_dir")
        if restart:
            log.warning("reload_needs_restart", sections=restart)
        if new.logging.level != old.logging.level:
            set_level(new.logging.level)
        pipeline.set_decode(new.model.decode_params())
        old_cams = {c.name: c for c in old.cameras if c.enabled}
        new_cams = {c.name: c for c in new.cameras if c.enabled}
        for name in old_cams.keys() - new_cams.keys():
            self._remove_camera(name)
        for name, camera in new_cams.items():
            before = old_cams.get(name)
            if before is None:
                self._add_camera(camera)
            elif before.model_copy(update={"rules": camera.rules}) != camera:
                self._remove_camera(name)
                self._add_camera(camera)
            elif before.rules != camera.rules:
                pipeline.set_rules(name, camera.rules)
        # Sections that need a restart keep their running values.
        kept = {name: getattr(old, name) for name in ("mqtt", "spool", "disk_budget", "ota", "metrics", "output")}
        kept["model"] = new.model.model_copy(update={"path": old.model.path, "backend": old.model.backend})
        kept["daemon"] = new.daemon.model_copy(update={"state_dir": old.daemon.state_dir})
        self.config = new.model_copy(update=kept)
        self.reloads += 1
        log.info("reloaded", cameras=sorted(new_cams), restart_needed=restart)
        return True

    # ------------------------------------------------------------------ status

    def _aggregate_fps(self) -> float:
        pipeline = self.pipeline
        if pipeline is None:
            return 0.0
        now = time.monotonic()
        return sum(r.stats.snapshot.fps(now) for r in list(pipeline.cameras.values()))

    def _device_status(self) -> DeviceStatus:
        pipeline = self.pipeline
        cameras = []
        for name, status in sorted(self.camera_status.items()):
            cameras.append(
                CameraSummary(camera=name, state=_CAMERA_STATE[status.state], fps=round(self._camera_fps(name), 3))
            )
        quality = None
        if pipeline is not None:
            q = pipeline.quality  # a frozen snapshot the rules' thread publishes
            quality = ModelQuality(
                model_sha256=q.model_sha256,
                since=datetime.fromtimestamp(q.since_wall, timezone.utc),
                frames=q.frames,
                detections=q.detections,
                confidence_sum=round(q.confidence_sum, 4),
                alerts=q.alerts,
                uncertain_frames=q.uncertain_frames,
            )
        return DeviceStatus(
            device=self.config.mqtt.device,
            site=self.config.mqtt.site,
            state="online",
            agent_version=__version__,
            model=pipeline.model.ref() if pipeline else None,
            model_error=None if pipeline else (self.model_error or "")[:1024] or None,
            cameras=cameras,
            groups=list(self.config.mqtt.groups),
            quality=quality,
            ts=_now(),
        )

    def _status_line(self) -> str:
        return f"{self.state}; cameras {len(self.camera_status)}; fps {self._aggregate_fps():.1f}"

    def status_document(self) -> Dict[str, Any]:
        """Everything ``edge-agent status`` shows (also the content of status.json)."""
        now = time.monotonic()
        pipeline = self.pipeline
        cameras: Dict[str, Any] = {}
        for camera in self.config.cameras:
            if not camera.enabled:
                continue
            record: Dict[str, Any] = {"name": camera.name, "source": camera.source.type}
            status = self.camera_status.get(camera.name)
            if status is not None:
                record.update(status.as_record())
            runtime = pipeline.cameras.get(camera.name) if pipeline else None
            if runtime is not None:
                st = runtime.stats.snapshot
                lat = list(st.latencies_ms)
                record.update(
                    processed=st.processed,
                    alerts=st.alerts,
                    samples=st.samples,
                    fps=round(st.fps(now), 3),
                    latency_p50_ms=percentile(lat, 50),
                    latency_p99_ms=percentile(lat, 99),
                )
            cameras[camera.name] = record
        spool: Dict[str, Any] = {}
        if self.spool is not None:
            try:
                stats = self.spool.stats()
                spool = {
                    "items": stats.items,
                    "bytes": stats.bytes,
                    "max_bytes": stats.max_bytes,
                    "in_flight": stats.in_flight,
                    "by_kind": stats.items_by_kind,
                    "counters": stats.counters,
                }
            except Exception as exc:
                spool = {"error": str(exc)}
        output: Dict[str, Any] = {}
        if self.writer is not None:
            counters = self.writer.snapshot()
            output = dict(vars(counters))
            output["disk_ok"] = counters.disk_ok
            output["queued"] = self.writer.pending()
        link: Dict[str, Any] = {}
        if self.link is not None:
            link = dict(vars(self.link.metrics()))
            # since when the broker is out of reach: `edge-agent status` judges it against its grace period
            if link.get("connected"):
                self._mqtt_down_since = None
            elif self._mqtt_down_since is None:
                self._mqtt_down_since = _now().isoformat()
            link["down_since"] = self._mqtt_down_since
        inference: Dict[str, Any] = {}
        model: Dict[str, Any] = {}
        if pipeline is not None:
            counters_p = pipeline.counters
            inference = {k: v for k, v in vars(counters_p).items() if k != "busy_since"}
            inference["busy_s"] = None if counters_p.busy_since is None else round(now - counters_p.busy_since, 3)
            inference["aggregate_fps"] = round(self._aggregate_fps(), 3)
            model = {**vars(pipeline.model), "path": str(self.model_path)}
        problems = list(self.errors[-10:])
        if self.pipeline is None and self.model_error:
            problems.insert(0, f"model: error: {self.model_error} (waiting for a signed release)")
            model = {"error": self.model_error}
        if output and not output["disk_ok"]:
            problems.append(f"spool writes failing: {output.get('last_error')}")
        if self.native_stderr is not None and self.native_stderr.failure is not None:
            problems.append(f"native-stderr thread died ({self.native_stderr.failure!r}): library output is unwrapped")
        return {
            "version": 1,
            "agent_version": __version__,
            "pid": os.getpid(),
            "state": self.state,
            "started": datetime.fromtimestamp(self.started_wall, timezone.utc).isoformat(),
            "updated": _now().isoformat(),
            "device": self.config.mqtt.device,
            "site": self.config.mqtt.site,
            "model": model,
            "cameras": cameras,
            "inference": inference,
            "spool": spool,
            "output": output,
            "mqtt": link,
            "ota": self.ota_last,
            "model_updates": None if self.updates is None else self.updates.status(),
            "watchdog": {
                "enabled": self.notifier.watchdog_interval_s is not None,
                "pings": self.gate.pings if self.gate else 0,
            },
            "reloads": self.reloads,
            "problems": problems,
        }

    def _write_status(self) -> None:
        try:
            write_status(self.status_path, self.status_document())
        except Exception as exc:
            log.warning("status_write_failed", error=str(exc))
        self.notifier.status(self._status_line())

    def _update_metrics(self) -> None:
        m = self.metrics
        pipeline = self.pipeline
        now = time.monotonic()
        if pipeline is not None:
            c = pipeline.counters
            m.set("frames_processed_total", c.frames, "Frames run through the model.", "counter")
            m.set("batches_total", c.batches, "Inference batches.", "counter")
            m.set("inference_errors_total", c.inference_errors, "Failed inference batches.", "counter")
            m.set("model_swaps_total", c.swaps, "Hot model swaps.", "counter")
            for stage in ("preprocess", "inference", "postprocess", "rules"):
                m.set("stage_ms", getattr(c, f"{stage}_ms"), "Milliseconds of the last batch per stage.", stage=stage)
            for name, runtime in list(pipeline.cameras.items()):
                st = runtime.stats.snapshot
                m.set("camera_fps", st.fps(now), "Processed frames per second.", camera=name)
                m.set("camera_alerts_total", st.alerts, "Alerts fired.", "counter", camera=name)
                m.set("camera_samples_total", st.samples, "Triage samples selected.", "counter", camera=name)
                p99 = percentile(list(st.latencies_ms), 99)
                if p99 is not None:
                    m.set("camera_latency_p99_ms", p99, "Capture-to-rules latency p99.", camera=name)
        for name, status in list(self.camera_status.items()):
            m.set(
                "camera_frames_dropped_total",
                status.dropped,
                "Frames replaced before inference took them.",
                "counter",
                camera=name,
            )
            m.set("camera_reconnects_total", status.reconnects, "Successful camera reconnects.", "counter", camera=name)
            m.set(
                "camera_reconnect_attempts_total",
                status.reconnect_attempts,
                "Camera reconnect attempts, failed ones included.",
                "counter",
                camera=name,
            )
            m.set(
                "camera_streaming",
                1.0 if status.state == SourceState.STREAMING else 0.0,
                "1 while streaming.",
                camera=name,
            )
        if self.spool is not None:
            try:
                stats = self.spool.stats()
                m.set("spool_items", stats.items, "Messages queued in the spool.")
                m.set("spool_bytes", stats.bytes, "Payload bytes queued in the spool.")
                for key, value in stats.counters.items():
                    if key.startswith(("evicted.", "refused_full.")):
                        kind, what = key.split(".", 1)[1], key.split(".", 1)[0]
                        m.set(f"spool_{what}_total", value, f"Spool {what} per kind.", "counter", kind=kind)
            except Exception:
                pass
        if self.writer is not None:
            oc = self.writer.snapshot()
            m.set("spool_write_errors_total", oc.spool_write_errors, "Failed spool writes.", "counter")
            m.set("disk_ok", 1.0 if oc.disk_ok else 0.0, "0 while spool writes fail.")
        if self.link is not None:
            lm = self.link.metrics()
            m.set("mqtt_connected", 1.0 if lm.connected else 0.0, "1 while connected to the broker.")
            for key in (
                "connects",
                "disconnects",
                "published",
                "acked",
                "quarantined",
                "commands",
                "commands_malformed",
            ):
                m.set(f"mqtt_{key}_total", getattr(lm, key), f"MQTT {key}.", "counter")

    # ------------------------------------------------------------------ OTA events (installer thread)

    def _on_ota_event(self, event: Any) -> None:
        """Keep the latest event for the status document (the service publishes the MQTT report)."""
        self.ota_last = {
            "kind": event.kind,
            "release": event.release,
            "reason": event.reason,
            "detail": event.detail,
            "ts": _now().isoformat(),
        }
        log.info("ota_event", **{k: v for k, v in self.ota_last.items() if v is not None})

    # ------------------------------------------------------------------ stop

    async def _shutdown(self) -> None:
        bound = self.config.daemon.shutdown_timeout_s
        deadline = time.monotonic() + bound

        def left(share: float = 1.0) -> float:
            return max(0.05, (deadline - time.monotonic()) * share)

        self.state = "stopping"
        self.notifier.stopping(f"stopping: {self.stop_reason}")
        if self._install_signals and self._loop is not None:
            self._signals(False)
        if self._tasks is not None:
            stuck = await self._tasks.cancel_all(left(0.3))
            if stuck:
                log.error("tasks_not_stopped", tasks=stuck)
        pipeline = self.pipeline
        if pipeline is not None:
            sources = [r.source for r in pipeline.cameras.values()]
            await _in_thread(lambda: _stop_sources(sources, left(0.3)), "cameras-stop")
        inference_stuck = False
        if self.inference is not None:
            self.inference.stop()
            inference_stuck = not await _in_thread(lambda: self.inference.join(left(0.2)), "inference-join")  # type: ignore[union-attr]
            if inference_stuck:
                log.error("inference_stuck_at_shutdown")
        if self.writer is not None:
            await _in_thread(lambda: self.writer.stop(left(0.4)), "writer-stop")  # type: ignore[union-attr]
        if self.link is not None:
            await _in_thread(lambda: self.link.stop(left(0.5)), "link-stop")
        self.state = "stopped"
        try:  # whatever broke the status task must not also break the way out
            self._write_status()
        except Exception:
            log.exception("final_status_write_failed")
        if self.spool is not None:
            try:
                self.spool.close()
            except Exception:
                log.exception("spool_close_failed")
        if pipeline is not None and not inference_stuck:
            pipeline.close()  # joins the rules thread before the model it may still reference goes away
            pipeline.detector.close()
        if self.updates is not None:
            updates = self.updates
            if not await _in_thread(lambda: updates.stop(left(0.5)), "ota-worker-stop"):
                log.error("ota_worker_busy_at_shutdown")
        if self.installer is not None and self.exit_code in (EXIT_OK, EXIT_SIDE_TASK):
            # an orderly stop, and the model was not at fault: not a probation crash
            try:
                self.installer.mark_clean_shutdown()
            except Exception:
                log.exception("ota_mark_clean_failed")
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.notifier.close()
        self.stopped.set()
        log.info("daemon_stopped", reason=self.stop_reason, seconds=round(bound - (deadline - time.monotonic()), 3))


def _stop_sources(sources: List[CameraSource], timeout: float) -> None:
    threads = [threading.Thread(target=s.stop, args=(timeout,), daemon=True) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


# ------------------------------------------------------------------ command line


def run_daemon(config_path: Path) -> int:
    """Load the configuration, set up logging, run until SIGTERM. Returns the exit code."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        setup_logging("info", "json")
        log.error("config_invalid", source=exc.source, problems=exc.problems)
        import sys

        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.logging.level, config.logging.format)
    native = None
    if config.logging.format == "json":
        # FFmpeg / GStreamer / OpenCV / ONNX Runtime write to fd 2 between our JSON lines: wrap theirs too
        native = capture_native_stderr()
    daemon = Daemon(config, config_path, model_updates=config.model_updates, native_stderr=native)
    try:
        return asyncio.run(daemon.run())
    finally:
        if native is not None:
            native.close()


def _check_model(config: AgentConfig) -> Optional[str]:
    """``run --check``: the factory model must exist and parse (no runtime needed), or OTA must be able to
    provide one."""
    from agent.engine.errors import EngineError
    from agent.engine.model import read_model

    if config.model.path is None:
        return None if config.ota is not None else "model.path: no model configured and OTA is disabled"
    try:
        read_model(config.model.path)
    except EngineError as exc:
        return f"model.path: {exc}"
    return None


def add_run_parser(subparsers: Any) -> Any:
    """``edge-agent run --config PATH`` (for agent/cli.py)."""
    parser = subparsers.add_parser("run", help="Run the edge agent daemon (under systemd: Type=notify).")
    add_config_argument(parser)
    parser.add_argument("--check", action="store_true", help="Validate the configuration and exit.")

    def handler(args: Any) -> int:
        if args.check:
            try:
                config = load_config(args.config)
            except ConfigError as exc:
                print(str(exc))
                return EXIT_CONFIG
            problem = _check_model(config)
            if problem:
                print(f"{args.config}: {problem}")
                return EXIT_CONFIG
            print(f"{args.config}: ok")
            return EXIT_OK
        return run_daemon(args.config)

    parser.set_defaults(handler=handler)
    return parser


__all__ = ["Daemon", "DetectorFactory", "TaskGroup", "add_run_parser", "run_daemon"]


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m agent.app.daemon --config PATH`` (the same as ``edge-agent run``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="edge-agent")
    add_run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *(argv if argv is not None else __import__("sys").argv[1:])])
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
