"""The daemon behind ``edge-agent run`` (the command line is ``run.py``): the supervisor. It owns the life
cycle (start, supervision, reload, stop) and wires the parts together; what they do lives elsewhere in
``agent/app/``::

    pipeline/   a frame's path: cameras -> inference (Pipeline.step, rules stage) -> outputs -> spool
    commands.py MQTT commands -> the owning thread -> one reply each
    report.py   status.json, retained device / camera status, Prometheus samples (read from snapshots)
    reload.py   SIGHUP: the plan (pure) and its application
    tasks.py    the asyncio task group and the one blocking-call bridge
    run.py      the command line: configuration, logging, native-stderr capture, asyncio.run(Daemon.run())
    model_updates.py  OTA pushes -> installer (its worker thread) -> hot swap; probation

Start::

    OTA on_start() -> model path -> Detector (loader thread) -> Spool -> output-writer worker -> Pipeline
    -> mqtt-link worker -> camera workers -> metrics-http worker -> READY=1

Threads are :mod:`agent.threads` workers under one :class:`~agent.threads.Supervisor` (the thread table is
docs/DAEMON.md); asyncio tasks are a :class:`~agent.app.tasks.TaskGroup`::

    inference   awaits Pipeline.step() on the inference worker; WatchdogGate.progress() after every completed
                step (so a stuck runtime stops the watchdog pings)
    commands    link.commands -> CommandHandler -> link.reply
    pushes      model pushes -> ModelUpdateService (OTA worker) -> hot swap
    status      every status_interval_s: status.json, retained statuses, OTA probation commit / health
    reload      SIGHUP -> reload.apply_reload

A death of a worker or task is never silent: it is logged, shown in the status (``threads``, ``problems``)
and in the metrics, and handled by its policy. When the daemon stops because of one, its exit code says
whose fault it may be: ``EXIT_FAILED`` (1) when the model may be (inference, rules: probation counts it as a
crash of the release), ``EXIT_SIDE_TASK`` (4) otherwise, with a clean-shutdown mark so that probation does
not roll back a healthy release for it. Stop: STOPPING=1 -> cancel tasks -> stop cameras, inference, writer,
link -> close spool -> OTA mark_clean_shutdown; all bounded by ``daemon.shutdown_timeout_s``.

Above 400 lines for one reason: :class:`Daemon` is the event loop's state (the configuration in force, the
model error, the camera wiring) and every step of the life cycle that changes it: start, the start without a
model and its recovery by OTA, model swaps, camera add / remove, and the bounded shutdown. Those steps share
that state and the order they run in; what is not the loop's (status documents, commands, reload plans, the
pipeline, OTA) already lives in the modules above.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

import structlog

from agent.app.commands import CommandHandler
from agent.app.model_updates import ModelUpdateService, Serving
from agent.app.pipeline import CameraRuntime, ModelInfo, OutputWriter, Pipeline
from agent.app.reload import apply_reload
from agent.app.report import Reporter
from agent.app.status import write_status
from agent.app.tasks import TaskGroup, in_thread, settle
from agent.config import AgentConfig, ConfigError, load_config
from agent.engine.config import OnnxRuntimeConfig, TensorRTConfig
from agent.engine.detector import Detector
from agent.observability.metrics import MetricsServer, SnapshotCollector, registry_of
from agent.observability.sdnotify import SdNotifier, WatchdogGate
from agent.ota.config import ModelUpdatesConfig
from agent.ota.errors import OtaError
from agent.ota.installer import Installer, OtaEvent, ServingContext
from agent.protocol.models import Command, CommandReply, DeviceStatus
from agent.protocol.parse import encode_json
from agent.rules_config import class_needs
from agent.sources.camera import CameraSource
from agent.sources.config import CameraConfig
from agent.sources.factory import build_source
from agent.sources.frame import SourceStatus
from agent.threads import FRAME_PATH, SerialWorker, Supervisor, WorkerDeath

if TYPE_CHECKING:
    from agent.console.server import ConsoleServer
    from agent.link.link import MqttLink
    from agent.protocol.topics import Topics
    from agent.spool.store import Spool

log = structlog.get_logger("agent.daemon")

Backend = Union[OnnxRuntimeConfig, TensorRTConfig]
DetectorFactory = Callable[[Path, Backend], Detector]
"""Builds a Detector from a model path and backend config (the seam tests use for a blocking backend)."""

EXIT_OK = 0
EXIT_FAILED = 1  # the inference path failed: possibly the model; counts as a crash during probation
EXIT_CONFIG = 2
EXIT_START_FAILED = 3
EXIT_SIDE_TASK = 4  # a side task or thread died (status, commands, MQTT link, ...): not the model's fault
# Tasks whose failure can be the model's (threads say so in their policy: agent.threads.FRAME_PATH).
MODEL_TASKS = frozenset({"inference"})


def _model_problem(path: Optional[Path], exc: BaseException) -> str:
    """Why a model does not run, naming its file once (engine errors name it already)."""
    text = str(exc)
    return text if path is None or str(path) in text else f"{path}: {text}"


def _default_detector_factory(path: Path, backend: Backend) -> Detector:
    return Detector.open(path, backend)


class Daemon:
    """The running agent; see the module docstring.

    Args:
        config: the validated configuration.
        config_path: the file, re-read on SIGHUP (``None``: reload disabled).
        notifier: sd_notify sender (default: from the environment).
        detector_factory: builds detectors (default: :meth:`Detector.open`); tests pass a blocking backend.
        install_signal_handlers: SIGTERM/SIGINT/SIGHUP handlers (only possible on the main thread).
        model_updates: timings of the model-update service (default: :class:`ModelUpdatesConfig`).
        supervisor: the supervisor of every thread (default: a new one; ``run_daemon`` passes the one its
            native-stderr worker already reports to).
    """

    def __init__(
        self,
        config: AgentConfig,
        config_path: Optional[Path] = None,
        notifier: Optional[SdNotifier] = None,
        detector_factory: Optional[DetectorFactory] = None,
        install_signal_handlers: bool = True,
        model_updates: Optional[ModelUpdatesConfig] = None,
        supervisor: Optional[Supervisor] = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or SdNotifier()
        self.supervisor = supervisor or Supervisor()
        self.supervisor.on_fatal = self._worker_fatal
        self._detector_factory = detector_factory or _default_detector_factory
        self._install_signals = install_signal_handlers
        self.report = Reporter(self)
        self.commands = CommandHandler(self)
        self.started_wall = time.time()
        self.state = "starting"
        self.stop_reason = ""
        self.exit_code = EXIT_OK
        self.errors: List[str] = []
        self.reloads = 0
        # event loop writes: at every state change (the cameras' listeners) and every status interval, from
        # each source's own snapshot, so the counters in status.json, MQTT and the metrics are the camera's now
        self.camera_status: Dict[str, SourceStatus] = {}
        self.sources: Dict[str, CameraSource] = {}  # event loop writes (add / remove camera)
        self.model_path: Optional[Path] = None
        self.model_error: Optional[str] = None  # why no model runs (event loop writes it)
        self.ota_last: Optional[Dict[str, Any]] = None
        self.installer: Optional[Installer] = None
        self.updates: Optional[ModelUpdateService] = None
        self._updates_config = model_updates or ModelUpdatesConfig()
        self.spool: Optional[Spool] = None
        self.link: Optional[MqttLink] = None
        self.topics: Optional[Topics] = None
        self.pipeline: Optional[Pipeline] = None
        self.writer: Optional[OutputWriter] = None
        self.inference: Optional[SerialWorker] = None
        self.metrics_server: Optional[MetricsServer] = None
        self.console_server: Optional[ConsoleServer] = None
        self.gate: Optional[WatchdogGate] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
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
        self.notifier.ready(self.report.line())
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

    async def _open_model(self) -> Optional[Detector]:
        """The model to start with: the active release's, else the factory one. ``None`` (and ``model_error``)
        when it does not load but OTA can bring another: the daemon then stays up and waits for a release
        instead of failing into a restart loop every 5 s."""
        cfg = self.config
        if self.updates is not None:
            active = await self.updates.start()
            if active is not None:
                self.model_path = Path(active)
        try:
            if self.model_path is None:
                if cfg.model.path is None:
                    raise ConfigError(["model.path: no model configured and no OTA release installed"])
                self.model_path = cfg.model.path
            return await self._load_detector(self.model_path)
        except Exception as exc:
            if self.updates is None or self.installer is None:
                raise  # nothing could ever bring a model: fail the start (exit 3), as a configuration error does
            self.model_error = _model_problem(self.model_path, exc)
            self.model_path = None
            log.error("model_unavailable_waiting_for_a_release", error=self.model_error)
            return None

    async def _start(self) -> None:
        cfg = self.config
        self._model_ready = asyncio.Event()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if cfg.ota is not None:
            # every installer call runs on the service's worker thread (see agent.app.model_updates)
            self.updates = ModelUpdateService(
                cfg.ota,
                cfg.mqtt.device,
                self._updates_config,
                on_event=self._on_ota_event,
                serving=self._serving,
                supervisor=self.supervisor,
            )
            self.installer = self.updates.installer
        detector = await self._open_model()
        rolled_back = False
        on_trial = self.installer is not None and self.installer.state().trial is not None
        if detector is None and self.updates is not None and on_trial:
            # a release on probation whose model does not load is the release's fault: back to known-good,
            # whose model _first_model loads below, as it would that of a pushed release
            try:
                reason = f"model does not load: {self.model_error}"[:500]
                rolled_back = await self.updates.rollback(reason) is not None
            except OtaError as rollback_error:
                log.error("trial_rollback_failed", error=str(rollback_error))

        from agent.link.link import MqttLink
        from agent.protocol.topics import Topics
        from agent.spool.store import Spool

        spool_cfg = cfg.spool_config()
        if not spool_cfg.path.is_absolute():
            spool_cfg = spool_cfg.model_copy(update={"path": self.state_dir / spool_cfg.path})
        self.spool = Spool(spool_cfg)
        topics = self.topics = Topics(cfg.mqtt.topic_prefix, cfg.mqtt.site, cfg.mqtt.device)
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
            supervisor=self.supervisor,
        )
        self.writer.start()
        if detector is not None:
            self.pipeline = self._new_pipeline(detector, self._release_of_active())
            log.info("model_loaded", **{k: str(v) for k, v in detector.describe().items()})
        self.inference = SerialWorker("inference", FRAME_PATH, self.supervisor)
        self.link = MqttLink(cfg.mqtt, self.spool, self._device_status, supervisor=self.supervisor)
        assert self._loop is not None
        self.link.start(self._loop)
        if self.updates is not None:
            self.updates.attach(self.spool.put, topics, self.link, self._sync_model, self._loop, cfg.mqtt.limits)
        if self.pipeline is not None:
            self._add_cameras()
        elif rolled_back:
            await self._first_model()
        if cfg.metrics.enabled:
            registry = registry_of(SnapshotCollector("edge_agent_", self.report.samples))
            self.metrics_server = MetricsServer(
                registry, cfg.metrics.host, cfg.metrics.port, supervisor=self.supervisor
            )
            self.metrics_server.start()
            log.info("metrics_serving", host=cfg.metrics.host, port=self.metrics_server.port)
        if cfg.console.enabled:
            from agent.app.console import DaemonConsole
            from agent.console.server import ConsoleServer

            console = DaemonConsole(self, cfg.console, self._loop)
            try:  # the page is a side feature: a port in use is a problem to report, not a reason to stop
                self.console_server = ConsoleServer(
                    cfg.console, console, topics.cmd, cfg.mqtt.limits, supervisor=self.supervisor
                )
            except OSError as exc:
                self.errors.append(f"console: cannot serve on {cfg.console.host}:{cfg.console.port}: {exc}")
                log.error("console_bind_failed", host=cfg.console.host, port=cfg.console.port, error=str(exc))
            else:
                self.console_server.start()
                log.info("console_serving", host=cfg.console.host, port=self.console_server.port)
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

    def _release_of_active(self) -> Optional[Dict[str, str]]:
        record = None if self.installer is None else self.installer.state().active
        return None if record is None else {"name": record.name, "version": record.version}

    def _new_pipeline(self, detector: Detector, release: Optional[Dict[str, str]]) -> Pipeline:
        assert self.writer is not None
        info = ModelInfo.of(detector, release["name"] if release else None, release["version"] if release else None)
        return Pipeline(
            detector,
            info,
            self.config.model.decode_params(),
            self.writer,
            supervisor=self.supervisor,
            keep_previews=self.config.console.enabled,
        )

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

    # ------------------------------------------------------------------ supervision

    def _task_exited(self, name: str, error: Optional[BaseException], blames_model: Optional[bool] = None) -> None:
        """A task ended or a worker died for good (event loop): stop with the exit code that says whose fault."""
        if error is not None:
            log.error("task_failed", task=name, error=f"{type(error).__name__}: {error}")
            self.errors.append(f"task {name} failed: {error}")
        else:
            log.error("task_ended_unexpectedly", task=name)
        if blames_model is None:
            blames_model = name in MODEL_TASKS
        if self.exit_code == EXIT_OK:
            self.exit_code = EXIT_FAILED if blames_model else EXIT_SIDE_TASK
        self.request_stop(f"task {name} ended")

    def _worker_fatal(self, death: WorkerDeath) -> None:
        """The supervisor's STOP (from the dying thread): handled on the loop."""
        loop = self._loop
        if loop is None or self.state in ("stopping", "stopped"):
            return

        def stop() -> None:
            log.error("worker_fatal", worker=death.worker, error=death.error, blames_model=death.blames_model)
            self.errors.append(f"thread {death.worker} died: {death.error}")
            if self.exit_code == EXIT_OK:
                self.exit_code = EXIT_FAILED if death.blames_model else EXIT_SIDE_TASK
            self.request_stop(f"thread {death.worker} died")

        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop is closed: the daemon is gone already
            pass

    # ------------------------------------------------------------------ cameras

    def _add_cameras(self) -> None:
        for camera in self.config.cameras:
            if camera.enabled:
                self.add_camera(camera)
        if self._model_ready is not None:
            self._model_ready.set()

    def add_camera(self, camera: CameraConfig) -> None:
        assert self.pipeline is not None
        source = build_source(camera, supervisor=self.supervisor)
        loop = self._loop
        assert loop is not None

        def listener(status: SourceStatus) -> None:
            loop.call_soon_threadsafe(self._camera_changed, status)

        source.add_listener(listener)
        runtime = CameraRuntime(camera, source, self.pipeline.class_names)
        self.pipeline.add_camera(runtime)
        self.sources[camera.name] = source
        source.start()
        log.info("camera_started", camera=camera.name, source=camera.source.type)

    def remove_camera(self, name: str) -> None:
        assert self.pipeline is not None
        supervisor = self.supervisor

        def stopped(runtime: CameraRuntime) -> None:
            def stop() -> None:
                runtime.source.stop()
                supervisor.forget(f"camera-{name}")
                supervisor.forget(f"camera-{name}-watchdog")

            threading.Thread(target=stop, name=f"camera-{name}-stop", daemon=True).start()

        self.pipeline.remove_camera(name, stopped)
        self.camera_status.pop(name, None)
        self.sources.pop(name, None)
        log.info("camera_removed", camera=name)

    def _camera_changed(self, status: SourceStatus) -> None:
        if status.camera not in self.sources:
            return  # a late state change of a camera removed meanwhile
        self.camera_status[status.camera] = status
        log.info("camera_state", camera=status.camera, state=status.state.value, reason=status.reason)
        self._publish_camera(status)

    def _publish_camera(self, status: SourceStatus) -> None:
        if self.link is None or self.topics is None:
            return
        try:
            message = self.report.camera_message(status)
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
        pipeline, worker, gate = self.pipeline, self.inference, self.gate
        idle = self.config.daemon.idle_poll_s
        while True:
            processed = await worker.call(pipeline.step)
            gate.progress()
            if not processed:
                await asyncio.sleep(idle)

    async def _commands_task(self) -> None:
        assert self.link is not None and self.link.commands is not None
        link, queue = self.link, self.link.commands
        while True:
            command = await queue.get()
            link.reply(await self.commands.reply_to(command))

    async def console_command(self, command: Command) -> CommandReply:
        """A command from the box page: answered like an MQTT command, and its reply also published."""
        reply = await self.commands.reply_to(command)
        if self.link is not None:
            self.link.reply(reply)
        return reply

    async def _handle_command(self, command: object) -> CommandReply:  # tests call it directly
        return await self.commands.handle(command)  # type: ignore[arg-type]

    async def _pushes_task(self) -> None:
        """Without OTA configured, pushes are logged and dropped (the queue must not grow)."""
        assert self.link is not None and self.link.pushes is not None
        queue = self.link.pushes
        while True:
            _topic, push = await queue.get()
            log.warning("model_push_ignored", reason="OTA is not configured", release=push.release.name)

    def _refresh_camera_status(self) -> None:
        """Every camera's counters as they are now (not as they were at its last state change)."""
        for name, source in list(self.sources.items()):
            self.camera_status[name] = source.status()

    async def _status_task(self) -> None:
        interval = self.config.daemon.status_interval_s
        while True:
            await asyncio.sleep(interval)
            self._refresh_camera_status()
            self._write_status()
            if self.link is not None and self.topics is not None:
                self.link.set_retained(self.topics.status, encode_json(self._device_status()))
            for status in list(self.camera_status.values()):
                self._publish_camera(status)
            if self.updates is not None:
                await self.updates.probation(self.report.aggregate_fps, self.config.daemon.health_min_fps)

    async def _reload_task(self) -> None:
        assert self._reload_event is not None
        while True:
            await self._reload_event.wait()
            self._reload_event.clear()
            self.reload()

    # ------------------------------------------------------------------ models

    async def _sync_model(self) -> Serving:
        """Swap the detector when the installer's active model differs from the one running (or bring up the
        pipeline and the cameras when the daemon started without a model). Returns what runs now: the OTA
        worker starts a trial's probation from it (an install by another process is noticed the same way)."""
        if self.installer is None:
            return Serving(self.model_path)
        if self.pipeline is None:
            await self._first_model()
            wanted = self.installer.active_model_path()
            return Serving(self.model_path, wanted, None if self.pipeline is not None else self.model_error)
        assert self._swap_lock is not None
        async with self._swap_lock:
            path = self.installer.active_model_path()
            if path is None or path == self.model_path:
                return Serving(self.model_path)
            record = self.installer.state().active
            ok = await self.swap_model(Path(path), record.name if record else None, record.version if record else None)
            return Serving(self.model_path, Path(path), None if ok else "it did not load or the pipeline refused it")

    async def _load_detector(self, path: Path) -> Detector:
        """Build a detector for ``path`` in a loader thread (a model load blocks for seconds)."""
        backend = self.config.model.backend
        return await in_thread(lambda: self._detector_factory(path, backend), "model-loader")

    async def _first_model(self) -> None:
        assert self.installer is not None and self._swap_lock is not None
        async with self._swap_lock:
            path = self.installer.active_model_path()
            if path is None or self.pipeline is not None:
                return
            try:
                detector = await self._load_detector(Path(path))
            except Exception as exc:
                self.model_error = _model_problem(Path(path), exc)
                log.error("model_load_failed", path=str(path), error=str(exc))
                return
            self.pipeline = self._new_pipeline(detector, self._release_of_active())
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
            loop.call_soon_threadsafe(settle, done, err, None)

        pipeline.swap_detector(detector, info, finished)
        error = await done
        if error is None:
            self.model_path = path
            return True
        return False

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
        return apply_reload(self, new)

    # ------------------------------------------------------------------ status

    def _device_status(self) -> DeviceStatus:
        return self.report.device_status()

    def status_document(self) -> Dict[str, object]:
        """Everything ``edge-agent status`` shows (also the content of status.json)."""
        return self.report.document()

    def _write_status(self) -> None:
        try:
            write_status(self.status_path, self.status_document())
        except Exception as exc:
            log.warning("status_write_failed", error=str(exc))
        self.notifier.status(self.report.line())

    def _on_ota_event(self, event: OtaEvent) -> None:
        """(OTA worker) Keep the latest event for the status document (the service publishes the MQTT report)."""
        from datetime import datetime, timezone

        self.ota_last = {
            "kind": event.kind,
            "release": event.release,
            "reason": event.reason,
            "detail": event.detail,
            "ts": datetime.now(timezone.utc).isoformat(),
        }
        log.info("ota_event", **{k: v for k, v in self.ota_last.items() if v is not None})

    # ------------------------------------------------------------------ stop

    async def _shutdown(self) -> None:
        bound = self.config.daemon.shutdown_timeout_s
        deadline = time.monotonic() + bound

        def left(share: float = 1.0) -> float:
            return max(0.05, (deadline - time.monotonic()) * share)

        self.state = "stopping"
        self.supervisor.closing = True  # deaths during the stop are recorded, not acted on
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
            await in_thread(lambda: _stop_sources(sources, left(0.3)), "cameras-stop")
        inference_stuck = False
        inference = self.inference
        if inference is not None:
            inference_stuck = not await in_thread(lambda: inference.stop_and_join(left(0.2)), "inference-join")
            if inference_stuck:
                log.error("inference_stuck_at_shutdown")
        writer, link, updates = self.writer, self.link, self.updates
        if writer is not None:
            await in_thread(lambda: writer.stop(left(0.4)), "writer-stop")
        if link is not None:
            await in_thread(lambda: link.stop(left(0.5)), "link-stop")
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
        if updates is not None and not await in_thread(lambda: updates.stop(left(0.5)), "ota-worker-stop"):
            log.error("ota_worker_busy_at_shutdown")
        if self.installer is not None and self.exit_code in (EXIT_OK, EXIT_SIDE_TASK):
            # an orderly stop, and the model was not at fault: not a probation crash
            try:
                self.installer.mark_clean_shutdown()
            except Exception:
                log.exception("ota_mark_clean_failed")
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.console_server is not None:
            self.console_server.stop()
        self.notifier.close()
        self.stopped.set()
        log.info("daemon_stopped", reason=self.stop_reason, seconds=round(bound - (deadline - time.monotonic()), 3))


def _stop_sources(sources: List[CameraSource], timeout: float) -> None:
    threads = [threading.Thread(target=s.stop, args=(timeout,), daemon=True) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SIDE_TASK",
    "EXIT_START_FAILED",
    "Daemon",
    "DetectorFactory",
]
