"""The daemon behind ``edge-agent run``: the life cycle of the process (start, supervision, reload, stop).

It assembles the parts in order (:func:`agent.daemon.assemble.assemble`: OTA → model → spool → writer →
pipeline → link → cameras → metrics → pages), runs its asyncio tasks over them, and closes them in reverse
(:meth:`~agent.daemon.assemble.Parts.close`). What the parts do lives in ``agent/app/`` and below; they are
given the parts they use and the :class:`~agent.app.live.LiveState`, never this object.

Threads are :mod:`agent.threads` workers under one :class:`~agent.threads.Supervisor` (the thread table is
docs/DAEMON.md); asyncio tasks are a :class:`~agent.app.tasks.TaskGroup`::

    inference   awaits Pipeline.step() on the inference worker; WatchdogGate.progress() after every completed
                step (so a stuck runtime stops the watchdog pings)
    commands    link.commands -> CommandHandler -> link.reply
    pushes      model pushes -> ModelUpdateService (OTA worker) -> hot swap
    status      every status_interval_s: status.json, retained statuses, OTA probation commit / health
    reload      SIGHUP -> agent.app.reload.apply_reload

A death of a worker or task is never silent: it is logged, shown in the status (``threads``, ``problems``)
and in the metrics, and handled by its policy. When the daemon stops because of one, its exit code says
whose fault it may be: ``EXIT_FAILED`` (1) when the model may be (inference, rules: probation counts it as a
crash of the release), ``EXIT_SIDE_TASK`` (4) otherwise, with a clean-shutdown mark so that probation does
not roll back a healthy release for it. Stop: STOPPING=1 -> cancel tasks -> close the parts in reverse ->
OTA mark_clean_shutdown; all bounded by ``daemon.shutdown_timeout_s``.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

import structlog

from agent.app.live import LiveState
from agent.app.reload import apply_reload
from agent.app.report import device_status, line, unassembled_document
from agent.app.status import write_status
from agent.app.tasks import TaskGroup
from agent.config import AgentConfig, ConfigError, load_config
from agent.daemon.assemble import Parts, assemble
from agent.daemon.hot_swap import DetectorFactory, default_detector_factory
from agent.observability.sdnotify import SdNotifier
from agent.ota.config import ModelUpdatesConfig
from agent.protocol.parse import encode_json
from agent.threads import Supervisor, WorkerDeath

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_SIDE_TASK",
    "EXIT_START_FAILED",
    "MODEL_TASKS",
    "Daemon",
]

log = structlog.get_logger("agent.daemon")

EXIT_OK = 0
EXIT_FAILED = 1  # the inference path failed: possibly the model; counts as a crash during probation
EXIT_CONFIG = 2
EXIT_START_FAILED = 3
EXIT_SIDE_TASK = 4  # a side task or thread died (status, commands, MQTT link, ...): not the model's fault
# Tasks whose failure can be the model's (threads say so in their policy: agent.threads.FRAME_PATH).
MODEL_TASKS = frozenset({"inference"})


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

    After :meth:`run` has assembled them, :attr:`parts` are the started parts and :attr:`live` what changes.
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
        self.live = LiveState(config)
        self.config_path = config_path
        self.notifier = notifier or SdNotifier()
        self.supervisor = supervisor or Supervisor()
        self.supervisor.on_fatal = self._worker_fatal
        self._detector_factory = detector_factory or default_detector_factory
        self._install_signals = install_signal_handlers
        self._updates_config = model_updates or ModelUpdatesConfig()
        self._parts: Optional[Parts] = None
        self.stop_reason = ""
        self.exit_code = EXIT_OK
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop_event: Optional[asyncio.Event] = None  # made on the loop (Python 3.8 binds it at creation)
        self._reload_event: Optional[asyncio.Event] = None
        self._tasks: Optional[TaskGroup] = None
        self.ready = threading.Event()
        self.stopped = threading.Event()

    @property
    def parts(self) -> Parts:
        """The started parts (only once the daemon is ready: ``ready`` is set)."""
        if self._parts is None:
            raise RuntimeError("the daemon's parts are not assembled (not started, or the start failed)")
        return self._parts

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

    # ------------------------------------------------------------------ start

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._reload_event = asyncio.Event()
        try:
            self._parts = await assemble(
                self.live,
                supervisor=self.supervisor,
                notifier=self.notifier,
                factory=self._detector_factory,
                updates_config=self._updates_config,
            )
            self._start_tasks(self._parts)
        except Exception as exc:
            log.error("daemon_start_failed", error=f"{type(exc).__name__}: {exc}")
            self.live.errors.append(f"start failed: {exc}")
            self.exit_code = EXIT_START_FAILED
            await self._shutdown()
            return self.exit_code
        self.live.phase = "running"
        self.write_status()
        self.notifier.ready(line(self.live))
        self.ready.set()
        log.info("daemon_ready", cameras=self.live.enabled_cameras(), model=str(self.live.model_path))
        await self._stop_event.wait()
        log.info("daemon_stopping", reason=self.stop_reason)
        await self._shutdown()
        return self.exit_code

    def _start_tasks(self, parts: Parts) -> None:
        self._tasks = TaskGroup(self._task_exited)
        self._tasks.start("inference", self._inference_task(parts))
        self._tasks.start("commands", self._commands_task(parts))
        if parts.updates is not None:
            assert parts.link.pushes is not None
            self._tasks.start("pushes", parts.updates.run(parts.link.pushes))
        else:
            self._tasks.start("pushes", self._pushes_task(parts))
        self._tasks.start("status", self._status_task(parts))
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

    # ------------------------------------------------------------------ supervision

    def _task_exited(self, name: str, error: Optional[BaseException], blames_model: Optional[bool] = None) -> None:
        """A task ended or a worker died for good (event loop): stop with the exit code that says whose fault."""
        if error is not None:
            log.error("task_failed", task=name, error=f"{type(error).__name__}: {error}")
            self.live.errors.append(f"task {name} failed: {error}")
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
        if loop is None or self.live.phase in ("stopping", "stopped"):
            return

        def stop() -> None:
            log.error("worker_fatal", worker=death.worker, error=death.error, blames_model=death.blames_model)
            self.live.errors.append(f"thread {death.worker} died: {death.error}")
            if self.exit_code == EXIT_OK:
                self.exit_code = EXIT_FAILED if death.blames_model else EXIT_SIDE_TASK
            self.request_stop(f"thread {death.worker} died")

        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop is closed: the daemon is gone already
            pass

    # ------------------------------------------------------------------ tasks

    async def _inference_task(self, parts: Parts) -> None:
        live = self.live
        while live.pipeline is None:  # started without a model: wait for a release that brings one
            parts.gate.progress()  # nothing is stuck: the watchdog keeps being fed
            try:
                await asyncio.wait_for(parts.cameras.started.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        pipeline, worker, gate = live.pipeline, parts.inference, parts.gate
        idle = live.config.daemon.idle_poll_s
        while True:
            processed = await worker.call(pipeline.step)
            gate.progress()
            if not processed:
                await asyncio.sleep(idle)

    async def _commands_task(self, parts: Parts) -> None:
        link, queue = parts.link, parts.link.commands
        assert queue is not None
        while True:
            command = await queue.get()
            link.reply(await parts.commands.reply_to(command))

    async def _pushes_task(self, parts: Parts) -> None:
        """Without OTA configured, pushes are logged and dropped (the queue must not grow)."""
        queue = parts.link.pushes
        assert queue is not None
        while True:
            _topic, push = await queue.get()
            log.warning("model_push_ignored", reason="OTA is not configured", release=push.release.name)

    async def _status_task(self, parts: Parts) -> None:
        live = self.live
        while True:
            await asyncio.sleep(live.config.daemon.status_interval_s)
            parts.cameras.refresh()
            self.write_status()
            parts.link.set_retained(parts.topics.status, encode_json(device_status(self.live)))
            parts.cameras.publish_all()
            if parts.updates is not None:
                await parts.updates.probation(parts.report.aggregate_fps, live.config.daemon.health_min_fps)

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
            self.live.errors.append(f"reload rejected: {exc.problems[:3]}")
            return False
        return self.apply_config(new)

    def apply_config(self, new: AgentConfig) -> bool:
        return apply_reload(self.live, self.parts.cameras, new)

    # ------------------------------------------------------------------ status

    def status_document(self) -> Dict[str, Any]:
        """Everything ``edge-agent status`` shows (also the content of status.json)."""
        if self._parts is None:  # not started, or the start failed: say why
            return unassembled_document(self.live, self.supervisor, self.notifier.watchdog_interval_s is not None)
        return self._parts.report.document()

    def write_status(self) -> None:
        """status.json and the systemd status line."""
        try:
            write_status(self.live.status_path, self.status_document())
        except Exception as exc:
            log.warning("status_write_failed", error=str(exc))
        self.notifier.status(line(self.live))

    # ------------------------------------------------------------------ stop

    async def _shutdown(self) -> None:
        bound = self.live.config.daemon.shutdown_timeout_s
        deadline = time.monotonic() + bound
        self.live.phase = "stopping"
        self.supervisor.closing = True  # deaths during the stop are recorded, not acted on
        self.notifier.stopping(f"stopping: {self.stop_reason}")
        if self._install_signals and self._loop is not None:
            self._signals(False)
        if self._tasks is not None:
            stuck = await self._tasks.cancel_all(max(0.05, bound * 0.3))
            if stuck:
                log.error("tasks_not_stopped", tasks=stuck)
        if self._parts is None:
            self.live.phase = "stopped"
            self.write_status()
        else:

            def final_status() -> None:
                self.live.phase = "stopped"
                self.write_status()

            def clean() -> bool:
                """An orderly stop, and the model was not at fault: not a probation crash."""
                return self.exit_code in (EXIT_OK, EXIT_SIDE_TASK)

            await self._parts.close(self.live, max(0.05, deadline - time.monotonic()), clean, final_status)
        self.live.phase = "stopped"
        self.notifier.close()
        self.stopped.set()
        log.info("daemon_stopped", reason=self.stop_reason, seconds=round(bound - (deadline - time.monotonic()), 3))
