"""``edge-trainer serve``: the ingest service's threads, supervision, status and shutdown. The command's wiring
(trainer/commands/ingest.py) builds it from trainer.yaml and adds what runs beside it (the learning rounds'
``round-policy`` thread, a :class:`SideTask`).

Threads::

    main            supervision (1 s), metrics, status file, sd_notify; SIGTERM / SIGINT set the stop event
    mqtt-ingest     IngestClient: paho network loop, PUBACKs (trainer.ingest.client)
    store-writer    StoreWriter: decode, blobs + index per batch, then ack (trainer.ingest.writer)
    metrics-http    GET /metrics, /status, /healthz (agent.observability.MetricsServer)

Every thread is an :class:`agent.threads.Worker` under one supervisor (a death ends the service with status 1).
    blob-write-*    the local blob store's fsync pool (work items of the writer's batches)

Shutdown (SIGTERM) drains: the client stops handing over new messages (they stay unacknowledged in the
broker's session), the writer stores and acknowledges everything it was handed, the acks are flushed, and
the client disconnects normally (the session, and what is queued in it, stays). Bounded by
``ingest.drain_timeout_s``; past it the writer is abandoned unacknowledged (the broker re-delivers).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Protocol, Sequence, Tuple

import structlog

from agent.observability import MetricsServer, Sample, SdNotifier, SnapshotCollector, counter, gauge, registry_of
from agent.threads import OnDeath, Policy, Supervisor, Worker
from agent.web.server import Request, Response, Route
from trainer.ingest.client import IngestClient
from trainer.ingest.config import IngestConfig
from trainer.ingest.writer import StoreWriter
from trainer.store import SampleStore, StoreConfig

log = structlog.get_logger("trainer.ingest.service")


class HttpSettings(Protocol):
    """The status and metrics endpoint's settings (trainer.yaml ``http``)."""

    enabled: bool
    host: str
    port: int


class ServiceSettings(Protocol):
    """What the service reads of trainer.yaml (``trainer.settings.TrainerConfig`` is one)."""

    state_dir: Path
    ingest: Optional[IngestConfig]
    store: StoreConfig

    @property
    def http(self) -> HttpSettings: ...


@dataclass(frozen=True)
class SideTask:
    """A long-lived thread the wiring runs beside the service's own (``edge-trainer serve`` adds the learning
    rounds' ``round-policy``): supervised like them (its death ends the service with status 1), and told to stop
    first when the service drains."""

    name: str
    run: Callable[[], None]
    stop: Callable[[], None]


def write_json_atomic(path: Path, document: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def status_path(config: ServiceSettings) -> Path:
    assert config.ingest is not None
    return config.state_dir / f"ingest-{config.ingest.worker_name}.status.json"


class IngestService:
    """See the module docstring. ``open_store`` replaces the configured store (tests); ``side_tasks`` run beside
    the ingest's threads; ``reports`` add their documents to the status document, under their keys."""

    def __init__(
        self,
        config: ServiceSettings,
        open_store: Optional[Callable[[], SampleStore]] = None,
        side_tasks: Sequence[SideTask] = (),
        reports: Optional[Mapping[str, Callable[[], Any]]] = None,
    ) -> None:
        if config.ingest is None:
            raise ValueError("trainer.yaml has no ingest section: nothing to serve")
        self.config = config
        self.ingest = config.ingest
        self.started_at = time.time()
        self.state = "starting"
        self.writer = StoreWriter(open_store or (lambda: SampleStore(config.store)), self.ingest, self._ack)
        self.client = IngestClient(self.ingest, self.writer.submit)
        # a dead worker ends the service with status 1 (systemd restarts it; nothing unstored was acknowledged)
        self.supervisor = Supervisor()
        stop_on_death = Policy(OnDeath.STOP)
        self.threads = [
            Worker("mqtt-ingest", self.client.run, stop_on_death, self.supervisor),
            Worker("store-writer", self.writer.run, stop_on_death, self.supervisor),
        ]
        self.side_tasks = tuple(side_tasks)
        self.threads.extend(Worker(task.name, task.run, stop_on_death, self.supervisor) for task in self.side_tasks)
        self.reports = dict(reports or {})
        self.metrics = registry_of(SnapshotCollector("edge_ingest_", self.samples))
        self.http: Optional[MetricsServer] = None
        if config.http.enabled:
            self.http = MetricsServer(
                self.metrics,
                config.http.host,
                config.http.port,
                routes=[Route("GET", "/status", self._status_route), Route("GET", "/healthz", self._health_route)],
                supervisor=self.supervisor,
            )
        self.notifier = SdNotifier()
        self._progress: Dict[str, Tuple[int, float]] = {}

    def _ack(self, tokens: Any) -> None:
        self.client.ack(tokens)

    # ------------------------------------------------------------------ what it reports

    def problems(self) -> List[str]:
        """What makes the service unhealthy right now (empty: healthy)."""
        found = [f"thread {t.name} died: {t.last_error}" for t in self.supervisor.states() if t.state == "died"]
        writer = self.writer.snapshot()
        if writer.retrying:
            found.append(f"storage failing: {writer.last_error}")
        return found

    def warnings(self) -> List[str]:
        client, writer = self.client.snapshot(), self.writer.snapshot()
        found = []
        if not client.connected:
            found.append(f"not connected to the broker ({client.last_error or 'connecting'})")
        if writer.store_full:
            found.append("store full: new samples and snapshots are refused (counted store_full)")
        if client.connected and client.protocol == "3.1.1":
            found.append("MQTT 3.1.1: no shared subscription, run a single worker")
        return found

    def status(self) -> Dict[str, Any]:
        client, writer = self.client.snapshot(), self.writer.snapshot()
        store = self.config.store
        writer_doc = asdict(writer)
        writer_doc["outcomes"] = {f"{kind}:{outcome}": n for (kind, outcome), n in sorted(writer.outcomes.items())}
        return {
            "worker": self.ingest.worker_name,
            "state": self.state,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "uptime_s": round(time.time() - self.started_at, 1),
            "updated_at": time.time(),
            "sites": list(self.ingest.sites),
            "mqtt": asdict(client),
            "writer": writer_doc,
            "store": {
                "path": str(store.path),
                "blobs": store.blobs.type,
                "full": writer.store_full,
                "used_bytes": writer.used_bytes,
                "max_bytes": store.budget.max_bytes,
                "room_bytes": writer.room_bytes,
            },
            "threads": {t.name: ("alive" if t.alive else t.state) for t in self.supervisor.states()},
            **{key: report() for key, report in self.reports.items()},
            "problems": self.problems(),
            "warnings": self.warnings(),
        }

    def _status_route(self, request: Request) -> Response:
        return Response(200, "application/json", json.dumps(self.status(), default=str).encode("utf-8"))

    def _health_route(self, request: Request) -> Response:
        problems = self.problems()
        body = json.dumps({"ok": not problems, "problems": problems, "warnings": self.warnings()}).encode("utf-8")
        return Response(503 if problems else 200, "application/json", body)

    def samples(self) -> Iterator[Sample]:
        """The metrics, read at scrape time from the client's and writer's snapshots."""
        client, writer = self.client.snapshot(), self.writer.snapshot()
        yield gauge("mqtt_connected", 1 if client.connected else 0, "1 while connected to the broker")
        yield counter("mqtt_connects_total", client.connects, "Successful connections")
        yield counter("mqtt_disconnects_total", client.disconnects, "Connections lost")
        yield counter("mqtt_connect_failures_total", client.connect_failures, "Failed connection attempts")
        yield counter("messages_received_total", client.received, "Messages handed to the writer")
        yield counter("acks_total", client.acked, "PUBACKs sent (each after its message was stored)")
        yield counter("stale_acks_total", client.stale_acks, "Acks dropped: their connection had closed")
        yield counter("batches_total", writer.batches, "Batches stored")
        for (kind, outcome), count in writer.outcomes.items():
            yield counter("records_total", count, "Messages by kind and outcome", kind=kind, outcome=outcome)
        for reason, count in writer.drops.items():
            yield counter("rejected_total", count, "Messages rejected, by reason", reason=reason)
        yield counter("store_write_errors_total", writer.write_errors, "Failed batch writes (retried)")
        yield gauge("store_full", 1 if writer.store_full else 0, "1 while new images are refused")
        yield gauge("store_used_bytes", writer.used_bytes, "Bytes of stored images")
        yield gauge("writer_queue_depth", writer.queue_depth, "Messages received, not yet stored")
        yield gauge("last_batch_seconds", writer.last_batch_s, "Duration of the last batch (store + ack)")
        for state in self.supervisor.states():
            yield gauge("thread_alive", 1 if state.alive else 0, "1 while the thread runs", thread=state.name)

    def _write_status(self) -> None:
        try:
            write_json_atomic(status_path(self.config), self.status())
        except OSError as exc:
            log.warning("status_file_failed", error=str(exc))

    def _making_progress(self, now: float) -> bool:
        """Both loops turned within the last 30 s (the watchdog only pings then)."""
        ok = True
        client = self.client.snapshot()
        for name, count in (
            ("mqtt-ingest", client.iterations + client.connect_attempts),
            ("store-writer", self.writer.snapshot().iterations),
        ):
            previous = self._progress.get(name)
            if previous is None or previous[0] != count:
                self._progress[name] = (count, now)
            elif now - previous[1] > 30.0:
                ok = False
        return ok

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        if self.http is not None:
            self.http.start()
            log.info("http_listening", host=self.config.http.host, port=self.http.port)
        for thread in reversed(self.threads):  # the writer first: it opens the store
            thread.start()
        self.state = "running"

    def drain(self) -> bool:
        """Stop taking messages, store and acknowledge what was taken, disconnect. True when nothing was left."""
        self.state = "draining"
        self.notifier.notify("STOPPING=1")
        log.info("ingest_draining", queued=self.writer.snapshot().queue_depth)
        for task in self.side_tasks:
            task.stop()
        self.client.close_intake()
        self.writer.finish()
        writer_thread = self.threads[1]
        clean = writer_thread.join(self.ingest.drain_timeout_s)
        if not clean:
            log.error("drain_timeout", timeout_s=self.ingest.drain_timeout_s, detail="left unacknowledged")
            self.writer.abort()
            writer_thread.join(5.0)
        self.client.request_stop()
        self.threads[0].join(10.0)
        for thread in self.threads[2:]:
            thread.join(5.0)
        self.state = "stopped"
        return clean

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set or a thread dies; returns the process exit status."""
        self.start()
        self.notifier.notify("READY=1")
        code = 0
        interval = 1.0
        if self.notifier.watchdog_interval_s:
            interval = min(interval, self.notifier.watchdog_interval_s / 2)
        try:
            while not stop.wait(interval):
                dead = [t.state() for t in self.threads if not t.alive]
                if dead:
                    for thread in dead:
                        log.critical("worker_thread_ended", thread=thread.name, error=thread.last_error)
                    code = 1
                    break
                self._write_status()
                if self._making_progress(time.monotonic()):
                    self.notifier.notify("WATCHDOG=1")
            clean = self.drain()
            if not clean and code == 0:
                code = 1
            self._write_status()
        finally:
            self.close()
        log.info("ingest_stopped", code=code)
        return code
