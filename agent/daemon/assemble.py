"""The daemon's parts, started in order by :func:`assemble` and closed in reverse by :meth:`Parts.close`::

    OTA        ModelUpdateService (its ota-worker thread; installs, probation)
    model      the active release's model, else the factory one (a loader thread); may be none yet
    spool      the durable outbound queue (SQLite WAL)
    writer     the output-writer worker (JPEG encoding, Spool.put)
    pipeline   Pipeline (rules thread) on the inference worker, when a model loaded
    link       the mqtt-link worker; the command handler and the reporter that read from it
    cameras    one worker per camera; HotSwap, which swaps models (and brings up the first one)
    metrics    the metrics-http worker (optional)
    pages      the box page's console-http worker (optional; a port in use is reported, not fatal)

What changes while the daemon runs (the pipeline, the configuration, the cameras' states) is the
:class:`~agent.app.live.LiveState`, not this record. When a step fails, what the steps before it started is
closed again, in reverse, before the error propagates (the daemon then exits 3).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Coroutine, List, Optional, Tuple

import structlog

from agent.app.box_page import BoxPageBackend
from agent.app.commands import CommandHandler
from agent.app.live import LiveState
from agent.app.model_updates import ModelUpdateService
from agent.app.pipeline import OutputWriter
from agent.app.report import Reporter, camera_message, device_status
from agent.app.tasks import in_thread
from agent.box_page.server import BoxPageServer
from agent.daemon.cameras import CameraWiring, stop_sources
from agent.daemon.hot_swap import DetectorFactory, HotSwap, new_pipeline, open_start_model
from agent.link.link import MqttLink
from agent.observability.metrics import MetricsServer, SnapshotCollector, registry_of
from agent.observability.sdnotify import SdNotifier, WatchdogGate
from agent.ota.config import ModelUpdatesConfig
from agent.ota.errors import OtaError
from agent.ota.installer import Installer
from agent.protocol.models import Command, CommandReply
from agent.protocol.parse import encode_json
from agent.protocol.topics import Topics
from agent.sources.frame import SourceStatus
from agent.spool.store import Spool
from agent.threads import FRAME_PATH, SerialWorker, Supervisor

__all__ = ["Parts", "assemble"]

log = structlog.get_logger("agent.daemon")

Undo = Tuple[str, Callable[[], Any]]


@dataclass(frozen=True)
class Parts:
    """What :func:`assemble` started, in start order (see the module docstring)."""

    supervisor: Supervisor
    notifier: SdNotifier
    gate: WatchdogGate  # the watchdog pings, fed by the inference task's progress
    updates: Optional[ModelUpdateService]  # None: OTA is not configured
    spool: Spool
    topics: Topics
    writer: OutputWriter
    inference: SerialWorker
    link: MqttLink
    commands: CommandHandler
    report: Reporter
    cameras: CameraWiring
    hot_swap: HotSwap
    metrics: Optional[MetricsServer]
    pages: Optional[BoxPageServer]

    @property
    def installer(self) -> Optional[Installer]:
        return None if self.updates is None else self.updates.installer

    async def close(
        self, live: LiveState, timeout_s: float, clean: Callable[[], bool], quiet: Callable[[], None]
    ) -> None:
        """Stop every part in reverse start order within ``timeout_s``. ``quiet`` runs once nothing writes to
        the spool any more (the final status); ``clean()`` says whether the stop was orderly and not the
        model's fault: then the installer records a clean shutdown (not a probation crash)."""
        deadline = time.monotonic() + timeout_s

        def left(share: float = 1.0) -> float:
            return max(0.05, (deadline - time.monotonic()) * share)

        if self.pages is not None:
            self.pages.stop()
        if self.metrics is not None:
            self.metrics.stop()
        pipeline = live.pipeline
        if pipeline is not None:
            sources = [r.source for r in pipeline.cameras.values()]
            await in_thread(lambda: stop_sources(sources, left(0.3)), "cameras-stop")
        link = self.link
        await in_thread(lambda: link.stop(left(0.5)), "link-stop")
        inference = self.inference
        inference_stuck = not await in_thread(lambda: inference.stop_and_join(left(0.2)), "inference-join")
        if inference_stuck:
            log.error("inference_stuck_at_shutdown")
        elif pipeline is not None:
            pipeline.close()  # joins the rules thread before the model it may still reference goes away
            pipeline.detector.close()
        writer = self.writer
        await in_thread(lambda: writer.stop(left(0.4)), "writer-stop")
        try:  # whatever broke the status task must not also break the way out
            quiet()
        except Exception:
            log.exception("final_status_write_failed")
        try:
            self.spool.close()
        except Exception:
            log.exception("spool_close_failed")
        updates = self.updates
        if updates is not None and not await in_thread(lambda: updates.stop(left(0.5)), "ota-worker-stop"):
            log.error("ota_worker_busy_at_shutdown")
        installer = self.installer
        if installer is not None and clean():
            try:
                installer.mark_clean_shutdown()
            except Exception:
                log.exception("ota_mark_clean_failed")


async def assemble(
    live: LiveState,
    *,
    supervisor: Supervisor,
    notifier: SdNotifier,
    factory: DetectorFactory,
    updates_config: ModelUpdatesConfig,
) -> Parts:
    """Start the daemon's parts in order (module docstring) on the running event loop; on a failure, close
    what was started and raise."""
    undo: List[Undo] = []
    try:
        return await _assemble(live, supervisor, notifier, factory, updates_config, undo)
    except BaseException:
        for name, close in reversed(undo):
            try:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("start_undo_failed", part=name)
        raise


async def _assemble(
    live: LiveState,
    supervisor: Supervisor,
    notifier: SdNotifier,
    factory: DetectorFactory,
    updates_config: ModelUpdatesConfig,
    undo: List[Undo],
) -> Parts:
    cfg = live.config
    loop = asyncio.get_running_loop()
    bound = cfg.daemon.shutdown_timeout_s  # each undo's own bound: only taken when a start fails
    live.state_dir.mkdir(parents=True, exist_ok=True)
    interval = notifier.watchdog_interval_s
    gate = WatchdogGate(notifier, interval / 2.0 if interval else 1.0)

    # OTA: every installer call runs on the service's worker thread (see agent.app.model_updates)
    updates = None
    if cfg.ota is not None:
        updates = ModelUpdateService(
            cfg.ota,
            cfg.mqtt.device,
            updates_config,
            on_event=live.record_ota_event,
            serving=live.serving_context,
            supervisor=supervisor,
        )
        service = updates
        undo.append(("ota", lambda: in_thread(lambda: service.stop(bound), "ota-worker-stop")))

    # model
    detector = await open_start_model(live, factory, updates)
    rolled_back = False
    on_trial = updates is not None and updates.installer.state().trial is not None
    if detector is None and updates is not None and on_trial:
        # a release on probation whose model does not load is the release's fault: back to known-good,
        # whose model HotSwap loads below, as it would that of a pushed release
        try:
            reason = f"model does not load: {live.model_error}"[:500]
            rolled_back = await updates.rollback(reason) is not None
        except OtaError as rollback_error:
            log.error("trial_rollback_failed", error=str(rollback_error))

    # spool
    spool_cfg = cfg.spool_config()
    if not spool_cfg.path.is_absolute():
        spool_cfg = spool_cfg.model_copy(update={"path": live.state_dir / spool_cfg.path})
    spool = Spool(spool_cfg)
    undo.append(("spool", spool.close))

    # writer
    topics = Topics(cfg.mqtt.topic_prefix, cfg.mqtt.site, cfg.mqtt.device)
    out = cfg.output
    writer = OutputWriter(
        spool.put,
        topics,
        cfg.mqtt.device,
        queue_size=out.queue_size,
        queue_max_bytes=out.queue_max_mb * 1024 * 1024,
        sample_quality=out.sample_jpeg_quality,
        snapshot_quality=out.snapshot_jpeg_quality,
        alert_snapshots=out.alert_snapshots,
        supervisor=supervisor,
    )
    writer.start()
    undo.append(("writer", lambda: in_thread(lambda: writer.stop(bound), "writer-stop")))

    # pipeline
    installer = None if updates is None else updates.installer
    if detector is not None:
        live.pipeline = new_pipeline(live, detector, writer, supervisor, installer)
        undo.append(("pipeline", lambda: _close_pipeline(live)))
        log.info("model_loaded", **{k: str(v) for k, v in detector.describe().items()})
    inference = SerialWorker("inference", FRAME_PATH, supervisor)
    undo.append(("inference", lambda: in_thread(lambda: inference.stop_and_join(bound), "inference-join")))

    # link, and what reads from it
    link = MqttLink(cfg.mqtt, spool, lambda: device_status(live), supervisor=supervisor)
    link.start(loop)
    undo.append(("link", lambda: in_thread(lambda: link.stop(bound), "link-stop")))
    commands = CommandHandler(live, updates)
    report = Reporter(
        live,
        supervisor=supervisor,
        notifier=notifier,
        gate=gate,
        spool=spool,
        writer=writer,
        link=link,
        updates=updates,
    )

    # cameras, and HotSwap, which brings them up when the first model arrives later
    def publish(status: SourceStatus) -> None:
        try:
            link.set_retained(topics.camera_status(status.camera), encode_json(camera_message(live, status)))
        except Exception:
            log.exception("camera_status_failed", camera=status.camera)

    cameras = CameraWiring(live, supervisor, loop, publish)
    undo.append(("cameras", lambda: _stop_cameras(live, bound)))
    hot_swap = HotSwap(live, factory, writer, supervisor, installer, on_first_model=cameras.start_all)
    if updates is not None:
        updates.attach(spool.put, topics, link, hot_swap.sync, loop, cfg.mqtt.limits)
    if live.pipeline is not None:
        cameras.start_all()
    elif rolled_back:
        await hot_swap.first_model()

    # metrics
    metrics = None
    if cfg.metrics.enabled:
        registry = registry_of(SnapshotCollector("edge_agent_", report.samples))
        metrics = MetricsServer(registry, cfg.metrics.host, cfg.metrics.port, supervisor=supervisor)
        metrics.start()
        undo.append(("metrics", metrics.stop))
        log.info("metrics_serving", host=cfg.metrics.host, port=metrics.port)

    # pages
    pages = None
    if cfg.console.enabled:

        async def page_command(command: Command) -> CommandReply:
            """A command from the box page: answered like an MQTT command, and its reply also published."""
            reply = await commands.reply_to(command)
            link.reply(reply)
            return reply

        side = BoxPageBackend(live, cfg.console, loop, document=report.document, writer=writer, command=page_command)
        try:  # the page is a side feature: a port in use is a problem to report, not a reason to stop
            pages = BoxPageServer(cfg.console, side, topics.cmd, cfg.mqtt.limits, supervisor=supervisor)
        except OSError as exc:
            live.errors.append(f"console: cannot serve on {cfg.console.host}:{cfg.console.port}: {exc}")
            log.error("console_bind_failed", host=cfg.console.host, port=cfg.console.port, error=str(exc))
        else:
            pages.start()
            log.info("console_serving", host=cfg.console.host, port=pages.port)

    return Parts(
        supervisor=supervisor,
        notifier=notifier,
        gate=gate,
        updates=updates,
        spool=spool,
        topics=topics,
        writer=writer,
        inference=inference,
        link=link,
        commands=commands,
        report=report,
        cameras=cameras,
        hot_swap=hot_swap,
        metrics=metrics,
        pages=pages,
    )


def _close_pipeline(live: LiveState) -> None:
    pipeline = live.pipeline
    if pipeline is not None:
        pipeline.close()
        pipeline.detector.close()


def _stop_cameras(live: LiveState, timeout: float) -> Coroutine[Any, Any, None]:
    pipeline = live.pipeline
    sources = [] if pipeline is None else [r.source for r in pipeline.cameras.values()]
    return in_thread(lambda: stop_sources(sources, timeout), "cameras-stop")
