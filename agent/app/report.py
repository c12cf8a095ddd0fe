"""What the daemon says about itself, built from the snapshots its threads publish: the status document
(``status.json``, ``edge-agent status``), the retained device and camera statuses on MQTT, the
Prometheus samples (read at scrape time) and the systemd status line.

Read-only: nothing here changes a component; every value comes from a frozen snapshot or a copy the owner
hands out (``CameraStats.snapshot``, ``Pipeline.quality`` / ``counters``, ``OutputWriter.snapshot()``,
``MqttLink.metrics()``, ``Spool.stats()``, ``Supervisor.states()``). The one piece of state of its own,
since when MQTT is down, is written only by the status task.

What it reads: the daemon's :class:`~agent.app.live.LiveState` and the parts it is given, never the daemon.
:func:`device_status` needs the live state only: the MQTT link, started before the reporter exists, sends it
at every (re)connection.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from agent import __version__
from agent.app.live import LiveState
from agent.app.pipeline import OutputWriter, percentile
from agent.observability.metrics import Sample, counter, gauge
from agent.observability.sdnotify import SdNotifier, WatchdogGate
from agent.protocol.models import (
    CameraDecode,
    CameraMainStream,
    CameraState,
    CameraStatus,
    CameraSummary,
    DeviceStatus,
    ModelQuality,
)
from agent.sources.frame import SourceState, SourceStatus
from agent.threads import Supervisor

if TYPE_CHECKING:
    from agent.app.model_updates import ModelUpdateService
    from agent.link.link import MqttLink
    from agent.spool.store import Spool

__all__ = [
    "CAMERA_STATE",
    "Reporter",
    "aggregate_fps",
    "camera_message",
    "device_status",
    "line",
    "thread_problems",
    "threads_document",
    "unassembled_document",
]

CAMERA_STATE = {
    SourceState.STARTING: CameraState.STARTING,
    SourceState.STREAMING: CameraState.STREAMING,
    SourceState.STALLED: CameraState.STALLED,
    SourceState.RECONNECTING: CameraState.RECONNECTING,
    SourceState.STOPPED: CameraState.STOPPED,
    SourceState.FAILED: CameraState.ERROR,
}

RECENT_DEATHS_S = 600.0  # a restarted thread stays among the problems this long


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _main_stream(status: SourceStatus) -> CameraMainStream:
    main = status.main
    assert main is not None
    return CameraMainStream(
        address=main.address[:512],
        state=CAMERA_STATE[main.state],
        error=None if main.state is SourceState.STREAMING else main.reason[:1024] or None,
        codec=main.codec[:16],
        received_bytes=main.received_bytes,
        stills=main.stills,
        still_failures=main.still_failures,
        still_ms=main.still_ms,
        width=main.width or None,
        height=main.height or None,
    )


def camera_fps(live: LiveState, name: str) -> float:
    pipeline = live.pipeline
    runtime = pipeline.cameras.get(name) if pipeline else None
    return runtime.stats.snapshot.fps(time.monotonic()) if runtime else 0.0


def aggregate_fps(live: LiveState) -> float:
    pipeline = live.pipeline
    if pipeline is None:
        return 0.0
    now = time.monotonic()
    return sum(r.stats.snapshot.fps(now) for r in list(pipeline.cameras.values()))


def camera_stale(live: LiveState, name: str) -> int:
    pipeline = live.pipeline
    runtime = pipeline.cameras.get(name) if pipeline else None
    return runtime.stale_frames if runtime else 0


def camera_message(live: LiveState, status: SourceStatus) -> CameraStatus:
    """The retained camera status on MQTT."""
    decode = status.decode
    last_frame = None
    if status.last_frame_monotonic is not None:  # monotonic -> wall, for a reader elsewhere
        last_frame = datetime.fromtimestamp(
            time.time() - (time.monotonic() - status.last_frame_monotonic), timezone.utc
        )
    return CameraStatus(
        device=live.config.mqtt.device,
        camera=status.camera,
        state=CAMERA_STATE[status.state],
        source=(status.address or status.kind)[:512],
        fps=round(camera_fps(live, status.camera), 3),
        frames=status.frames,
        drops=status.dropped,
        reconnects=status.reconnects,
        reconnect_attempts=status.reconnect_attempts,
        last_frame_at=last_frame,
        error=status.reason[:1024] or None,
        width=status.width or None,
        height=status.height or None,
        stale=camera_stale(live, status.camera),
        decode=None
        if decode is None
        else CameraDecode(
            codec=decode.codec[:16],
            decoder=decode.decoder[:256],
            received=decode.received,
            decoded=decode.decoded,
            decode_errors=decode.decode_errors,
            waited_for_keyframe=decode.waited,
            decode_ms=decode.decode_ms,
        ),
        main=None if status.main is None else _main_stream(status),
        ts=_now(),
    )


def device_status(live: LiveState) -> DeviceStatus:
    """The retained device status on MQTT (also the link's birth message)."""
    pipeline = live.pipeline
    cameras = [
        CameraSummary(camera=name, state=CAMERA_STATE[status.state], fps=round(camera_fps(live, name), 3))
        for name, status in sorted(live.camera_status.items())
    ]
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
        device=live.config.mqtt.device,
        site=live.config.mqtt.site,
        state="online",
        agent_version=__version__,
        model=pipeline.model.ref() if pipeline else None,
        model_error=None if pipeline else (live.model_error or "")[:1024] or None,
        cameras=cameras,
        groups=list(live.config.mqtt.groups),
        quality=quality,
        ts=_now(),
    )


def threads_document(supervisor: Supervisor) -> Dict[str, Any]:
    return {
        s.name: {"state": s.state, "deaths": s.deaths, "restarts": s.restarts, "last_error": s.last_error}
        for s in supervisor.states()
    }


def thread_problems(supervisor: Supervisor) -> List[str]:
    """Threads down, and threads that died and were restarted lately."""
    problems = supervisor.problems()
    down = {line.split()[1] for line in problems}
    cutoff = time.time() - RECENT_DEATHS_S
    recent: Dict[str, List[str]] = {}
    for death in supervisor.deaths():
        if death.at_wall >= cutoff and death.worker not in down:
            recent.setdefault(death.worker, []).append(death.error)
    for name, errors in sorted(recent.items()):
        problems.append(
            f"thread {name} died {len(errors)} time(s) in the last {RECENT_DEATHS_S / 60:.0f} min and was "
            f"restarted (last: {errors[-1]})"
        )
    return problems


def _document(live: LiveState, supervisor: Supervisor, **sections: Any) -> Dict[str, Any]:
    """The status document's frame around ``sections`` (``edge-agent status`` reads the keys in this order)."""
    document: Dict[str, Any] = {
        "version": 1,
        "agent_version": __version__,
        "pid": os.getpid(),
        "state": live.phase,
        "started": datetime.fromtimestamp(live.started_wall, timezone.utc).isoformat(),
        "updated": _now().isoformat(),
        "device": live.config.mqtt.device,
        "site": live.config.mqtt.site,
        "model": {},
        "cameras": {},
        "inference": {},
        "spool": {},
        "output": {},
        "mqtt": {},
        "ota": live.ota_last,
        "model_updates": None,
        "threads": threads_document(supervisor),
        "watchdog": {"enabled": False, "pings": 0},
        "reloads": live.reloads,
        "problems": [],
    }
    document.update(sections)
    return document


def unassembled_document(live: LiveState, supervisor: Supervisor, watchdog: bool) -> Dict[str, Any]:
    """The status document while the parts do not run (before the start, or after one that failed: exit 3):
    what is known, and why."""
    return _document(
        live,
        supervisor,
        model={"error": live.model_error} if live.model_error else {},
        watchdog={"enabled": watchdog, "pings": 0},
        problems=list(live.errors[-10:]) + thread_problems(supervisor),
    )


def line(live: LiveState) -> str:
    """The systemd status line."""
    return f"{live.phase}; cameras {len(live.camera_status)}; fps {aggregate_fps(live):.1f}"


class Reporter:
    """Builds the status document and the Prometheus samples from ``live`` and the parts it is given."""

    def __init__(
        self,
        live: LiveState,
        *,
        supervisor: Supervisor,
        notifier: SdNotifier,
        gate: WatchdogGate,
        spool: Spool,
        writer: OutputWriter,
        link: MqttLink,
        updates: Optional[ModelUpdateService],
    ) -> None:
        self._live = live
        self._supervisor = supervisor
        self._notifier = notifier
        self._gate = gate
        self._spool = spool
        self._writer = writer
        self._link = link
        self._updates = updates
        self._mqtt_down_since: Optional[str] = None  # status task only

    def camera_fps(self, name: str) -> float:
        return camera_fps(self._live, name)

    def aggregate_fps(self) -> float:
        return aggregate_fps(self._live)

    def line(self) -> str:
        """The systemd status line."""
        return line(self._live)

    # ---------------------------------------------------------------- status.json

    def _cameras(self, now: float) -> Dict[str, Any]:
        live = self._live
        pipeline = live.pipeline
        cameras: Dict[str, Any] = {}
        for camera in live.config.cameras:
            if not camera.enabled:
                continue
            record: Dict[str, Any] = {"name": camera.name, "source": camera.source.type}
            status = live.camera_status.get(camera.name)
            if status is not None:
                record.update(status.as_record())
                record["source"] = status.address or camera.source.type
            runtime = pipeline.cameras.get(camera.name) if pipeline else None
            if runtime is not None:
                st = runtime.stats.snapshot
                lat = list(st.latencies_ms)
                record.update(
                    processed=st.processed,
                    stale=runtime.stale_frames,
                    alerts=st.alerts,
                    samples=st.samples,
                    fps=round(st.fps(now), 3),
                    latency_p50_ms=percentile(lat, 50),
                    latency_p99_ms=percentile(lat, 99),
                )
            cameras[camera.name] = record
        return cameras

    def _spool_document(self) -> Dict[str, Any]:
        try:
            stats = self._spool.stats()
        except Exception as exc:
            return {"error": str(exc)}
        return {
            "items": stats.items,
            "bytes": stats.bytes,
            "max_bytes": stats.max_bytes,
            "in_flight": stats.in_flight,
            "by_kind": stats.items_by_kind,
            "oldest_by_kind": {
                k: datetime.fromtimestamp(t, timezone.utc).isoformat() for k, t in stats.oldest_by_kind.items()
            },
            "counters": stats.counters,
        }

    def _link_document(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = dict(vars(self._link.metrics()))
        # since when the broker is out of reach: `edge-agent status` judges it against its grace period
        if doc.get("connected"):
            self._mqtt_down_since = None
        elif self._mqtt_down_since is None:
            self._mqtt_down_since = _now().isoformat()
        doc["down_since"] = self._mqtt_down_since
        return doc

    def document(self) -> Dict[str, Any]:
        """Everything ``edge-agent status`` shows (also the content of status.json)."""
        live = self._live
        now = time.monotonic()
        pipeline = live.pipeline
        counters = self._writer.snapshot()
        output: Dict[str, Any] = dict(vars(counters))
        output["disk_ok"] = counters.disk_ok
        output["queued"] = self._writer.pending()
        inference: Dict[str, Any] = {}
        model: Dict[str, Any] = {}
        if pipeline is not None:
            counters_p = pipeline.counters
            inference = {k: v for k, v in vars(counters_p).items() if k != "busy_since"}
            inference.update(vars(pipeline.rules_timing))
            inference["busy_s"] = None if counters_p.busy_since is None else round(now - counters_p.busy_since, 3)
            inference["aggregate_fps"] = round(self.aggregate_fps(), 3)
            model = {**vars(pipeline.model), "path": str(live.model_path)}
        problems = list(live.errors[-10:])
        if pipeline is None and live.model_error:
            problems.insert(0, f"model: error: {live.model_error} (waiting for a signed release)")
            model = {"error": live.model_error}
        if not output["disk_ok"]:
            problems.append(f"spool writes failing: {output.get('last_error')}")
        # native-stderr's death too: library output is then unwrapped
        problems.extend(thread_problems(self._supervisor))
        return _document(
            live,
            self._supervisor,
            model=model,
            cameras=self._cameras(now),
            inference=inference,
            spool=self._spool_document(),
            output=output,
            mqtt=self._link_document(),
            model_updates=None if self._updates is None else self._updates.status(),
            watchdog={"enabled": self._notifier.watchdog_interval_s is not None, "pings": self._gate.pings},
            problems=problems,
        )

    # ---------------------------------------------------------------- Prometheus (scrape time)

    def samples(self) -> Iterator[Sample]:
        """Every metric of the daemon, read from the snapshots now (``edge_agent_`` is added by the collector)."""
        live = self._live
        pipeline = live.pipeline
        now = time.monotonic()
        if pipeline is not None:
            c = pipeline.counters
            yield counter("frames_processed_total", c.frames, "Frames run through the model.")
            yield counter("batches_total", c.batches, "Inference batches.")
            yield counter("inference_errors_total", c.inference_errors, "Failed inference batches.")
            yield counter("model_swaps_total", c.swaps, "Hot model swaps.")
            stage_ms = {"preprocess": c.preprocess_ms, "inference": c.inference_ms, "postprocess": c.postprocess_ms}
            stage_ms["rules"] = pipeline.rules_timing.rules_ms
            for stage, ms in stage_ms.items():
                yield gauge("stage_ms", ms, "Milliseconds of the last batch per stage.", stage=stage)
            for name, runtime in list(pipeline.cameras.items()):
                st = runtime.stats.snapshot
                yield gauge("camera_fps", st.fps(now), "Processed frames per second.", camera=name)
                yield counter("camera_alerts_total", st.alerts, "Alerts fired.", camera=name)
                yield counter("camera_samples_total", st.samples, "Triage samples selected.", camera=name)
                p99 = percentile(list(st.latencies_ms), 99)
                if p99 is not None:
                    yield gauge("camera_latency_p99_ms", p99, "Capture-to-rules latency p99.", camera=name)
        for name, status in sorted(live.camera_status.items()):
            yield counter(
                "camera_frames_dropped_total",
                status.dropped,
                "Frames replaced before inference took them.",
                camera=name,
            )
            yield counter("camera_reconnects_total", status.reconnects, "Successful camera reconnects.", camera=name)
            yield counter(
                "camera_reconnect_attempts_total",
                status.reconnect_attempts,
                "Camera reconnect attempts, failed ones included.",
                camera=name,
            )
            streaming = 1.0 if status.state == SourceState.STREAMING else 0.0
            yield gauge("camera_streaming", streaming, "1 while streaming.", camera=name)
            yield counter("camera_frames_total", status.frames, "Frames delivered by the camera.", camera=name)
            yield counter(
                "camera_frames_stale_total",
                camera_stale(live, name),
                "Frames refused as older than the camera's stall limit.",
                camera=name,
            )
            decode = status.decode
            if decode is not None:
                yield counter(
                    "camera_frames_decoded_total", decode.decoded, "Frames the video decoder produced.", camera=name
                )
                yield counter(
                    "camera_decode_errors_total",
                    decode.decode_errors,
                    "Access units the decoder dropped as undecodable.",
                    camera=name,
                )
                yield counter(
                    "camera_decode_cpu_seconds_total",
                    decode.decode_cpu_s,
                    "CPU seconds spent decoding (CPU decoder).",
                    camera=name,
                )
        yield from self._spool_samples()
        oc = self._writer.snapshot()
        yield counter("spool_write_errors_total", oc.spool_write_errors, "Failed spool writes.")
        yield gauge("disk_ok", 1.0 if oc.disk_ok else 0.0, "0 while spool writes fail.")
        lm = self._link.metrics()
        yield gauge("mqtt_connected", 1.0 if lm.connected else 0.0, "1 while connected to the broker.")
        for key in ("connects", "disconnects", "published", "acked", "quarantined", "commands", "commands_malformed"):
            yield counter(f"mqtt_{key}_total", getattr(lm, key), f"MQTT {key}.")
        for state in self._supervisor.states():
            yield gauge("thread_alive", 1.0 if state.alive else 0.0, "1 while the thread runs.", thread=state.name)
            yield counter(
                "thread_deaths_total", state.deaths, "Deaths of the thread (restarted or not).", thread=state.name
            )
            yield counter("thread_restarts_total", state.restarts, "Restarts of the thread.", thread=state.name)

    def _spool_samples(self) -> Iterator[Sample]:
        try:
            stats = self._spool.stats()
        except Exception:  # a spool that cannot be read right now: its series are missing from this scrape
            return
        yield gauge("spool_items", stats.items, "Messages queued in the spool.")
        yield gauge("spool_bytes", stats.bytes, "Payload bytes queued in the spool.")
        for key, value in sorted(stats.counters.items()):
            if key.startswith(("evicted.", "refused_full.")):
                what, kind = key.split(".", 1)
                yield counter(f"spool_{what}_total", value, f"Spool {what} per kind.", kind=kind)
