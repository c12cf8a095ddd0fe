"""The daemon's model-update service: model pushes → OTA installer → reports → hot swap; probation.

::

    link.pushes (asyncio) ──► run() ──submit──► ota-worker thread (one; every Installer call runs here)
                                                  │ _consider(): newest desired push per topic
                                                  │   decide_push(): current / stale / other channel /
                                                  │   handled / probation running → ignore or defer
                                                  ├─ URL mode:   Installer.install_url(url) for each URL
                                                  └─ chunk mode: subscribe {push}/chunks/{counter}/+
                link thread: chunk ──submit──►      _on_chunk(): parse_model_chunk (digest) →
                                                    check_chunk_header → StagedFile.append (in order;
                                                    early chunks spilled to disk) → finish (bundle
                                                    SHA-256) → Installer.install_bundle(tar)
    every OtaEvent / chunk progress ──► OtaStateReport on {p}/ota/state (through the spool)
    after any switch or rollback ──► the daemon's swap coroutine (hot swap of the Detector) ──► Serving
                                     (the model it runs now) ──► _on_served(): Installer.mark_serving
    every tick: state.json changed? ──► swap request (another process — `edge-agent ota install`, the USB
                                       unit — may have switched); a queued bundle and no trial left ──►
                                       Installer.install_queued()

Installs by another process: the CLI holds the installer's lock while it installs and replaces ``state.json``
atomically; the worker notices the new file at its next tick and asks the daemon to swap, as after a push.
A trial's probation runs from the moment the daemon serves its model (``mark_serving``), never from the
switch, and a trial whose model the daemon cannot serve is rolled back (it would otherwise commit a model
that never ran). The bundle that ``ota install`` queued during a probation is installed here once the trial
commits or rolls back, before any push (a push is deferred while a trial runs or a bundle waits).

Why one worker thread: the installer takes an exclusive lock on its state directory; running installs,
commits, rollbacks and chunk writes in one queue means they never collide (a probation commit during an
install would otherwise fail with "another OTA operation is running"), and the asyncio loop never blocks.

Catch-up and dedupe: pushes are retained, so a box that was offline receives the desired release when it
(re)subscribes. A push is ignored when its counter is not above the active release and the anti-rollback
floor, when it names another channel, or when the same push (counter, bundle digest, channel) was already
handled; handled pushes are persisted in ``<ota state_dir>/pushes.json`` so a rejected release is not fetched
again at every start. Transport failures are retried with capped backoff.

Resume (chunk mode): the bundle is assembled in ``<staging>/push/<bundle sha256>/bundle.tar.part``
(:class:`agent.ota.StagedFile`); after a restart or reconnect the retained chunks are delivered again and
those already held are dropped. Chunks that arrive ahead of a gap are kept in ``spill/`` and appended
once the gap closes; a transfer that makes no progress for ``chunk_stall_s`` re-subscribes, which makes the
broker deliver the retained chunks again (the protocol has no resend request).

Above 400 lines for one reason: :class:`ModelUpdateService` is the ``ota-worker`` thread's whole state (the
installer, desired pushes, the chunk transfer, handled pushes, probation) and every call that must run on
that thread; the pure decisions are in ``agent/ota/push.py`` and the chunk assembly in ``agent/ota/chunks.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Protocol, Set, Tuple

import structlog

from agent.core.backoff import Backoff
from agent.ota.chunks import ChunkTransfer, TransferCounters
from agent.ota.config import ModelUpdatesConfig, OtaConfig
from agent.ota.errors import OtaError, StateError, TransportError, VerificationError
from agent.ota.fetchers import TooSlowError, TransferPace
from agent.ota.fsutil import remove_tree
from agent.ota.installer import Installer, OtaEvent, ServingContext
from agent.ota.probation import served_s
from agent.ota.push import (
    Decision,
    PushRejected,
    check_chunk_header,
    check_chunk_plan,
    decide_push,
    push_key,
    release_ref,
)
from agent.ota.state import InstallState, SlotRecord, Trial
from agent.protocol.config import ProtocolLimits
from agent.protocol.errors import ProtocolError
from agent.protocol.models import ModelPush, OtaPhase, OtaStateReport, ReleaseRef
from agent.protocol.parse import encode_json, parse_model_chunk
from agent.protocol.topics import Topics
from agent.threads import SIDE_TASK, SerialWorker, Supervisor

log = structlog.get_logger("agent.model_updates")

SpoolPut = Callable[..., Any]
"""``Spool.put(kind, topic, payload, message_id=...)``."""


@dataclass(frozen=True)
class Serving:
    """The daemon's answer to a swap request: what its pipeline runs now.

    Attributes:
        model: the model file the pipeline runs (``None``: no pipeline).
        wanted: the installer's active model the daemon tried to bring in (``None``: nothing to change).
        refused: why ``wanted`` does not run (it does not load, or the pipeline refused it).
    """

    model: Optional[Path]
    wanted: Optional[Path] = None
    refused: Optional[str] = None


SwapCallback = Callable[[], Awaitable[Serving]]
"""Coroutine function that makes the pipeline serve the installer's active model (the daemon's)."""
RawHandler = Callable[[str, bytes], None]


@dataclass(frozen=True)
class UpdatesView:
    """The worker's view of the installer for the status document (replaced whole by the worker, never changed:
    ``trial`` is a copy no one writes)."""

    release: Optional[Dict[str, Any]] = None  # the release on probation
    trial: Optional[Trial] = None
    served_by_daemon: bool = False
    queued: Optional[Dict[str, Any]] = None
    deferred: Optional[Dict[str, Any]] = None  # the push waiting for the trial (or the queued bundle) to end


class ChunkSubscriptions(Protocol):
    """What the service needs of the MQTT link: its public subscription API (``agent.link.MqttLink``)."""

    def add_subscription(self, topic_filter: str, handler: RawHandler) -> None: ...

    def remove_subscription(self, topic_filter: str) -> None: ...


# --------------------------------------------------------------------------- the service


class ModelUpdateService:
    """Owns the :class:`Installer` on one worker thread; see the module docstring.

    Life cycle: construct → ``await start()`` (``Installer.on_start``; returns the model to load) →
    ``attach(...)`` once the spool and link exist (buffered reports are flushed) → ``run(link.pushes)`` as
    a daemon task → ``stop()``.

    Args:
        ota: the installer's configuration.
        device: device id (in reports).
        config: timings and bounds.
        on_event: also receives every installer event (the daemon's status keeps the latest).
        installer: an installer to use instead of building one (tests pass a health-check seam).
    """

    def __init__(
        self,
        ota: OtaConfig,
        device: str,
        config: Optional[ModelUpdatesConfig] = None,
        on_event: Optional[Callable[[OtaEvent], None]] = None,
        installer: Optional[Installer] = None,
        serving: Optional[Callable[[], ServingContext]] = None,
        supervisor: Optional[Supervisor] = None,
    ) -> None:
        self.ota = ota
        self.device = device
        self.config = config or ModelUpdatesConfig()
        self._on_event_hook = on_event
        self.installer = installer or Installer(ota, serving=serving)
        self.installer.on_event = self._installer_event
        self._worker = SerialWorker("ota-worker", SIDE_TASK, supervisor)
        self._spool_put: Optional[SpoolPut] = None
        self._topics: Optional[Topics] = None
        self._link: Optional[ChunkSubscriptions] = None
        self._swap: Optional[SwapCallback] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._limits = ProtocolLimits()
        self._buffered: List[OtaStateReport] = []
        self._report_lock = threading.Lock()
        self.reports_published = 0
        # worker-thread state
        self._desired: Dict[str, ModelPush] = {}
        self._handled_path = ota.state_dir / "pushes.json"
        self._handled: Dict[str, str] = self._load_handled()
        self._transfer: Optional[ChunkTransfer] = None
        # The release a push announces, while the installer works on that push: the installer's own reports
        # carry no release until a manifest is verified, and a refusal before that (foreign keys, a damaged
        # bundle) must still say which push it refuses, or the cloud waits on "downloading" for ever.
        self._installing: Optional[ReleaseRef] = None
        self._retry: Dict[str, Tuple[int, float]] = {}
        cfg = self.config
        self._retry_backoff = Backoff(
            cfg.retry_initial_s, max(cfg.retry_max_s, cfg.retry_initial_s), 2.0, cfg.retry_jitter
        )
        self._deferred_logged: Optional[str] = None
        self._tick_pending = False
        # link-thread → worker backpressure
        self._queued_chunk_bytes = 0
        self._queued_lock = threading.Lock()
        self.installs = 0
        self.last_transfer: Optional[TransferCounters] = None
        # the installer's state as the worker last saw it (another process may change it), what the daemon
        # serves, and the releases this worker switched to itself (the others were installed elsewhere)
        self._state_seen: Optional[Tuple[int, int, int]] = None
        self._serving: Optional[Serving] = None
        self._serving_unsettled = False  # mark_serving / the rollback found the lock taken: again next tick
        self._own_slots: Set[str] = set()
        self._queue_retry_at = 0.0
        self._queued_seen: Optional[str] = None  # the queued bundle last reported (slot)
        self._view = UpdatesView()

    # ------------------------------------------------------------------ wiring (event loop)

    async def start(self) -> Optional[Path]:
        """``Installer.on_start`` on the worker; returns the model path the daemon should load (or None)."""
        result = await self._call(self.installer.on_start)
        return None if result is None else Path(result)

    def attach(
        self,
        spool_put: SpoolPut,
        topics: Topics,
        link: ChunkSubscriptions,
        swap: SwapCallback,
        loop: asyncio.AbstractEventLoop,
        limits: Optional[ProtocolLimits] = None,
    ) -> None:
        """Connect the service to the outbound spool, the MQTT link and the daemon's swap coroutine."""
        self._topics, self._link, self._swap, self._loop = topics, link, swap, loop
        self._limits = limits or ProtocolLimits()
        with self._report_lock:
            self._spool_put = spool_put
            buffered, self._buffered = self._buffered, []
        for report in buffered:
            self._publish(report)

    async def run(self, pushes: asyncio.Queue[Tuple[str, ModelPush]]) -> None:
        """Forward pushes to the worker and tick it (retries, stalls, deferred pushes). Runs until cancelled."""
        while True:
            try:
                topic, push = await asyncio.wait_for(pushes.get(), self.config.tick_s)
            except asyncio.TimeoutError:
                self._schedule_tick()
                continue
            self._worker.submit(lambda t=topic, p=push: self._on_push(t, p))  # type: ignore[misc]

    async def probation(self, fps: Callable[[], float], min_fps: float) -> None:
        """Commit a trial once its period is over, or roll it back when the FPS health metric fails."""
        await self._call(lambda: self._probation(fps, min_fps))

    async def rollback(self, reason: str, if_active: Optional[Tuple[str, int]] = None) -> Optional[SlotRecord]:
        """Roll back (operator command) on the worker; the pipeline is swapped afterwards. With ``if_active``
        only while that release (name, counter) is active; None when nothing was done.

        Raises:
            OtaError: nothing to roll back to.
        """
        if if_active is None:
            record: Optional[SlotRecord] = await self._call(lambda: self.installer.rollback(reason))
        else:
            name, counter = if_active
            record = await self._call(lambda: self.installer.rollback_if_active(name, counter, reason))
        if record is not None:
            await self._swap_now()
        return record

    def active_release(self) -> Optional[SlotRecord]:
        """The installer's active release (state on disk)."""
        return self.installer.state().active

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the worker (a running install is left to the installer's crash-safe state)."""
        return self._worker.stop_and_join(timeout)

    def status(self) -> Dict[str, Any]:
        """For the daemon's status document."""
        transfer = self._transfer
        view = self._view
        probation = None
        if view.trial is not None:
            trial = view.trial
            probation = {
                "release": view.release,
                "served_by_daemon": view.served_by_daemon,
                "serving_since": trial.serving_since,
                "served_s": round(served_s(trial, datetime.now(timezone.utc)), 1),
                "period_s": self.ota.probation.period_s,
                "starts": trial.starts,
                "crashes": trial.crashes,
                "power_losses": trial.power_losses,
            }
        return {
            "installs": self.installs,
            "reports": self.reports_published,
            "desired": {t: p.release.model_dump() for t, p in list(self._desired.items())},
            "probation": probation,
            "queued": view.queued,
            "deferred": view.deferred,
            "transfer": None
            if transfer is None
            else {
                "release": transfer.push.release.model_dump(),
                "offset": transfer.offset,
                "size": transfer.push.bundle_size,
                **vars(transfer.counters),
            },
        }

    async def _call(self, fn: Callable[[], Any]) -> Any:
        return await self._worker.call(fn)

    def _schedule_tick(self) -> None:
        if self._tick_pending:
            return
        self._tick_pending = True
        self._worker.submit(self._tick)

    async def _swap_now(self) -> None:
        if self._swap is not None:
            serving = await self._swap()
            self._worker.submit(lambda: self._on_served(serving))

    def _request_swap(self) -> None:
        """From the worker: let the loop swap the detector to the installer's active model; what it serves
        then comes back to the worker (:meth:`_on_served`)."""
        loop, swap = self._loop, self._swap
        if loop is None or swap is None or loop.is_closed():
            return
        try:
            future = asyncio.run_coroutine_threadsafe(swap(), loop)
        except RuntimeError:  # loop closing
            return

        def done(f: concurrent.futures.Future[Serving]) -> None:
            if f.cancelled():
                return
            error = f.exception()
            if error is not None:
                log.error("model_swap_failed", error=f"{type(error).__name__}: {error}")
                return
            serving = f.result()
            self._worker.submit(lambda: self._on_served(serving))

        future.add_done_callback(done)

    # ------------------------------------------------------------------ reports (any thread)

    def _installer_event(self, event: OtaEvent) -> None:
        if self._on_event_hook is not None:
            try:
                self._on_event_hook(event)
            except Exception:
                log.exception("ota_event_hook_failed")
        detail = " ".join(x for x in (event.reason, event.detail) if x) or None
        release = release_ref(event.release)
        if release is None:
            release = self._installing  # as the push announced it: not yet verified, hence the detail says so
            if release is not None and detail is not None and event.kind in ("rejected", "failed"):
                detail = f"{detail} (release as announced by the push)"
        self.report(OtaPhase(event.phase), release, detail)

    def report(
        self,
        phase: OtaPhase,
        release: Optional[ReleaseRef] = None,
        detail: Optional[str] = None,
        progress: Optional[float] = None,
    ) -> None:
        """Queue an :class:`OtaStateReport` (buffered until :meth:`attach`)."""
        active: Optional[ReleaseRef] = None
        try:
            record = self.installer.state().active
            active = None if record is None else release_ref(record.ref())
        except Exception:  # an unreadable state file is reported by the installer itself
            pass
        report = OtaStateReport(
            id=uuid.uuid4().hex,
            device=self.device,
            phase=phase,
            release=release,
            active=active,
            progress=None if progress is None else max(0.0, min(1.0, progress)),
            detail=None if detail is None else detail[:2048],
            ts=datetime.now(timezone.utc),
        )
        with self._report_lock:
            if self._spool_put is None:
                self._buffered.append(report)
                return
        self._publish(report)

    def _publish(self, report: OtaStateReport) -> None:
        assert self._spool_put is not None
        topics = self._topics
        assert topics is not None
        try:
            self._spool_put("ota", topics.ota_state, encode_json(report), message_id=report.id)
            self.reports_published += 1
        except Exception as exc:  # spool full / disk error: the daemon keeps running, the log says it
            log.error("ota_report_not_queued", phase=report.phase.value, error=str(exc))

    # ------------------------------------------------------------------ handled pushes (worker)

    def _load_handled(self) -> Dict[str, str]:
        try:
            data = json.loads(self._handled_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("push_state_unreadable", path=str(self._handled_path), error=str(exc))
            return {}
        handled = data.get("handled") if isinstance(data, dict) else None
        if not isinstance(handled, dict):
            return {}
        return {str(k): str(v) for k, v in handled.items()}

    def _mark_handled(self, key: str, outcome: str) -> None:
        self._handled[key] = outcome
        while len(self._handled) > 32:
            self._handled.pop(next(iter(self._handled)))
        self._retry.pop(key, None)
        tmp = self._handled_path.with_suffix(".tmp")
        try:
            self._handled_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"handled": self._handled}, indent=1), encoding="utf-8")
            os.replace(tmp, self._handled_path)
        except OSError as exc:
            log.warning("push_state_not_saved", error=str(exc))

    # ------------------------------------------------------------------ decisions (worker)

    def _on_push(self, topic: str, push: ModelPush) -> None:
        self._desired[topic] = push
        self._consider()

    def _tick(self) -> None:
        self._tick_pending = False
        self._watch_state()
        transfer = self._transfer
        if transfer is not None and self._too_slow(transfer):
            transfer = None
        if transfer is not None and time.monotonic() - transfer.last_progress > self.config.chunk_stall_s:
            # No progress: ask the broker for the retained chunks again (re-subscribe).
            transfer.counters.resubscribes += 1
            transfer.last_progress = time.monotonic()
            log.info("ota_chunks_resubscribe", release=transfer.push.release.counter, offset=transfer.offset)
            if self._link is not None:
                self._link.remove_subscription(transfer.filter)
                self._subscribe(transfer)
        if self._desired:
            self._consider()

    def _too_slow(self, transfer: ChunkTransfer) -> bool:
        """A transfer past its deadline or below the minimum rate ends (a broker trickling retained chunks
        would hold it forever otherwise): reported ``too_slow``, what arrived stays for the retry."""
        pace = TransferPace(self.config.chunk_deadline_s, self.config.chunk_min_rate, self.config.chunk_grace_s)
        received = transfer.counters.bytes_appended + transfer.counters.bytes_spilled
        try:
            pace.check(transfer.staged.label, received, time.monotonic() - transfer.started)
        except TooSlowError as exc:
            log.warning("ota_chunks_too_slow", counter=transfer.push.release.counter, error=str(exc))
            self._cancel_transfer()
            self.report(OtaPhase.FAILED, transfer.push.release, f"too_slow: {exc}")
            self._retry_later(transfer.key, f"too_slow: {exc}")
            return True
        return False

    def _consider(self) -> None:
        if not self._desired:
            return
        topic, push = max(self._desired.items(), key=lambda item: item[1].release.counter)
        key = push_key(push)
        try:
            state = self.installer.state()
        except OtaError as exc:
            log.error("ota_state_unreadable", error=str(exc))
            return
        decision = decide_push(push, state, self.ota.channel, self._handled)
        if self._transfer is not None and (self._transfer.key != key or decision != Decision.INSTALL):
            self._cancel_transfer()
        if decision == Decision.DEFER:
            if self._deferred_logged != key:
                self._deferred_logged = key
                reason = "a release is in probation" if state.trial is not None else "a queued bundle installs first"
                log.info("model_push_deferred", counter=push.release.counter, reason=reason)
                self._publish_view(state)
            return
        if decision == Decision.STALE:
            log.warning("model_push_stale", counter=push.release.counter, floor=state.floor)
            self.report(
                OtaPhase.FAILED,
                push.release,
                f"stale_push: release counter {push.release.counter} is not above the active release / floor",
            )
            self._mark_handled(key, "stale")
            return
        if decision != Decision.INSTALL:
            return  # current, handled, or another channel: nothing to do (checked again on every tick)
        _attempts, not_before = self._retry.get(key, (0, 0.0))
        if time.monotonic() < not_before:
            return
        if self._transfer is not None:
            return  # chunks are flowing; _on_chunk finishes it
        self._install(topic, push, key)

    def _retry_later(self, key: str, why: str) -> None:
        attempts, _ = self._retry.get(key, (0, 0.0))
        delay = self._retry_backoff.delay(attempts)  # jittered: boxes that failed together do not retry together
        self._retry[key] = (attempts + 1, time.monotonic() + delay)
        log.warning("model_push_retry_later", delay_s=delay, reason=why)

    def _install(self, topic: str, push: ModelPush, key: str) -> None:
        log.info("model_push_install", counter=push.release.counter, urls=len(push.urls), chunks=bool(push.chunks))
        transport_error: Optional[str] = None
        for url in push.urls:
            try:
                self._installing = push.release
                record = self.installer.install_url(url)
                if isinstance(record, SlotRecord):
                    self._installed(record)
            except TransportError as exc:
                transport_error = str(exc)
                log.warning("ota_url_failed", url=url, error=transport_error)
                continue
            except OtaError as exc:
                self._finished(key, exc)
                return
            finally:
                self._installing = None
            self._finished(key, None)
            return
        if push.chunks is not None:
            self._start_transfer(topic, push)
            return
        if transport_error is not None:
            self._retry_later(key, transport_error)
            return
        self.report(OtaPhase.FAILED, push.release, "push_invalid: the push offers neither URLs nor chunks")
        self._mark_handled(key, "invalid")

    def _installed(self, record: SlotRecord) -> None:
        """A release this worker switched to (its reports are the installer's own events)."""
        self._own_slots.add(record.slot)

    def _finished(self, key: str, error: Optional[OtaError]) -> None:
        if error is None:
            self.installs += 1
            self._mark_handled(key, "installed")
            self._request_swap()
            return
        log.error("ota_install_failed", error=str(error))
        if isinstance(error, TransportError) or error.reason == "state":  # "state": e.g. the CLI holds the lock
            self._retry_later(key, str(error))
        else:
            self._mark_handled(key, f"rejected:{error.reason}")  # the installer has reported it

    # ------------------------------------------------------------------ chunk mode (worker)

    def _start_transfer(self, topic: str, push: ModelPush) -> None:
        key = push_key(push)
        try:
            check_chunk_plan(push, topic, self.ota.limits.max_bundle_bytes, self._limits.max_chunk_bytes)
        except PushRejected as exc:
            self.report(OtaPhase.FAILED, push.release, f"{exc.reason}: {exc.detail}")
            self._mark_handled(key, f"rejected:{exc.reason}")
            return
        directory = self.installer.staging_dir / "push" / push.bundle_sha256
        parent = directory.parent
        if parent.exists():  # leftovers of superseded pushes
            for other in parent.iterdir():
                if other.name != push.bundle_sha256:
                    remove_tree(other)
        transfer = ChunkTransfer(push, topic, directory)
        self._transfer = transfer
        self.last_transfer = transfer.counters
        log.info("ota_chunks_start", counter=push.release.counter, offset=transfer.offset, size=push.bundle_size)
        self.report(
            OtaPhase.DOWNLOADING,
            push.release,
            f"chunked transfer from byte {transfer.offset}",
            transfer.offset / push.bundle_size,
        )
        if transfer.done:
            self._complete_transfer(transfer)
            return
        self._subscribe(transfer)

    def _subscribe(self, transfer: ChunkTransfer) -> None:
        if self._link is None:
            return

        def on_chunk(topic: str, payload: bytes) -> None:  # link thread: keep short
            size = len(payload)
            with self._queued_lock:
                if self._queued_chunk_bytes + size > self.config.max_queued_chunk_bytes:
                    transfer.counters.dropped_backpressure += 1
                    return
                self._queued_chunk_bytes += size
            self._worker.submit(lambda: self._on_chunk(transfer, topic, payload))

        self._link.add_subscription(transfer.filter, on_chunk)

    def _on_chunk(self, transfer: ChunkTransfer, topic: str, payload: bytes) -> None:
        with self._queued_lock:
            self._queued_chunk_bytes -= len(payload)
        if self._transfer is not transfer or not payload:
            return  # superseded or cancelled; empty = a cleared retained chunk
        push = transfer.push
        try:
            topic_index = int(topic.rsplit("/", 1)[-1])
            header, body = parse_model_chunk(topic, payload, self._limits)
            check_chunk_header(header, push, topic_index)
            transfer.accept(header, body)
        except (ProtocolError, PushRejected, ValueError) as exc:
            transfer.counters.refused += 1
            reason = getattr(exc, "reason", "invalid")
            reason = getattr(reason, "value", reason)
            detail = getattr(exc, "detail", str(exc))
            log.warning("ota_chunk_refused", topic=topic, reason=reason, detail=detail)
            self.report(OtaPhase.DOWNLOADING, push.release, f"chunk refused ({reason}): {detail}"[:2048])
            return
        except VerificationError as exc:  # more bytes than the push announced
            self._abort_transfer(transfer, exc)
            return
        except OtaError as exc:  # a gap StagedFile refused; cannot happen with the checks above
            log.error("ota_chunk_append_failed", error=str(exc))
            return
        except OSError as exc:  # disk full: keep what we have, try again on the next delivery
            log.error("ota_chunk_write_failed", error=str(exc))
            return
        fraction = transfer.offset / push.bundle_size
        if transfer.done or fraction - transfer.last_reported >= self.config.progress_step:
            transfer.last_reported = fraction
            self.report(OtaPhase.DOWNLOADING, push.release, "chunks", fraction)
        if transfer.done:
            self._complete_transfer(transfer)

    def _complete_transfer(self, transfer: ChunkTransfer) -> None:
        if self._link is not None:
            self._link.remove_subscription(transfer.filter)
        try:
            path = transfer.finish()
        except VerificationError as exc:
            self._abort_transfer(transfer, exc)
            return
        self._transfer = None
        try:
            self._installing = transfer.push.release
            record = self.installer.install_bundle(path)
            if isinstance(record, SlotRecord):
                self._installed(record)
        except OtaError as exc:
            if not isinstance(exc, TransportError) and exc.reason != "state":
                transfer.discard()
            self._finished(transfer.key, exc)
            return
        finally:
            self._installing = None
        transfer.discard()
        self._finished(transfer.key, None)

    def _abort_transfer(self, transfer: ChunkTransfer, exc: OtaError) -> None:
        """The assembled bytes are not the pushed bundle: report, forget them, do not fetch them again."""
        if self._link is not None:
            self._link.remove_subscription(transfer.filter)
        self._transfer = None
        transfer.discard()
        log.error("ota_chunks_rejected", error=str(exc))
        self.report(OtaPhase.FAILED, transfer.push.release, f"{exc.reason}: {exc.detail}")
        self._mark_handled(transfer.key, f"rejected:{exc.reason}")

    def _cancel_transfer(self) -> None:
        transfer = self._transfer
        if transfer is None:
            return
        self._transfer = None
        if self._link is not None:
            self._link.remove_subscription(transfer.filter)
        log.info("ota_chunks_cancelled", counter=transfer.push.release.counter)

    # ------------------------------------------------------------------ probation (worker)

    def _probation(self, fps: Callable[[], float], min_fps: float) -> None:
        try:
            state = self.installer.state()
            trial = state.trial
            if trial is None or trial.serving_since is None or not self._serves_trial(state):
                return  # its probation has not begun: the daemon does not run its model (yet)
            since = datetime.fromisoformat(trial.serving_since)
            elapsed = (datetime.now(timezone.utc) - since).total_seconds()
            if min_fps > 0 and elapsed > self.config.health_grace_s:
                current = fps()
                if current < min_fps:
                    reason = f"aggregate fps {current:.2f} below {min_fps} during probation"
                    if self.installer.report_unhealthy(reason):
                        self._request_swap()
                    return
            self.installer.maybe_commit()
        except OtaError as exc:
            log.error("ota_probation_failed", error=str(exc))

    # ------------------------------------------------------------------ the installer's state (worker)

    def _trial_model(self, state: InstallState) -> Optional[Path]:
        """The model file of the release on probation (``None``: no trial)."""
        active, trial = state.active, state.trial
        if trial is None or active is None or active.slot != trial.slot:
            return None
        return self.installer.slot_dir(active.slot) / active.model

    def _serves_trial(self, state: InstallState) -> bool:
        serving, model = self._serving, self._trial_model(state)
        return serving is not None and model is not None and serving.model == model

    def _watch_state(self) -> None:
        """Notice what another process changed in the installer's state: a switch (``ota install``, by hand
        or from the USB unit), a commit or rollback (``ota commit`` / ``rollback``), a queued bundle."""
        path = self.installer.state_file.path
        try:
            st = path.stat()
            seen: Optional[Tuple[int, int, int]] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        except OSError as exc:
            log.error("ota_state_unreadable", error=str(exc))
            return
        changed = seen != self._state_seen
        retry_queue = self._queue_retry_at > 0 and time.monotonic() >= self._queue_retry_at
        if not (changed or retry_queue or self._serving_unsettled):
            return
        self._state_seen = seen
        try:
            state = self.installer.state()
        except OtaError as exc:
            log.error("ota_state_unreadable", error=str(exc))
            return
        if changed or self._serving is None:
            self._request_swap()  # a no-op on the loop when the daemon serves the active model already
        elif self._serving_unsettled and self._serving is not None:
            self._on_served(self._serving)
        self._publish_view(state)
        queued = state.queued
        if queued is not None and queued.slot != self._queued_seen:
            # queued by `edge-agent ota install` (the installer's own event went to that process's output)
            self.report(
                OtaPhase.STAGING,
                release_ref(queued.release),
                "queued: verified and kept on the box (edge-agent ota install during probation); installs when the "
                "release on probation commits or rolls back, verified again then",
            )
        self._queued_seen = None if queued is None else queued.slot
        if queued is not None and state.trial is None and self._transfer is None:
            self._install_queued()

    def _install_queued(self) -> None:
        self._queue_retry_at = 0.0
        try:
            record = self.installer.install_queued()
        except StateError as exc:  # the lock: another process works on the installer; try again shortly
            self._queue_retry_at = time.monotonic() + self.config.retry_initial_s
            log.info("ota_queued_install_later", error=str(exc))
            return
        except OtaError as exc:  # refused or failed: the installer reported it and dropped it from the queue
            log.error("ota_queued_install_failed", error=str(exc))
            return
        except OSError as exc:  # the disk: try again later (the installer drops it after MAX_QUEUED_ATTEMPTS)
            self._queue_retry_at = time.monotonic() + self.config.retry_max_s
            log.error("ota_queued_install_failed", error=str(exc))
            return
        if record is not None:
            self.installs += 1
            self._installed(record)
            self._request_swap()

    def _on_served(self, serving: Serving) -> None:
        """What the daemon serves after a swap request: a trial's probation begins when its model runs; a trial
        whose model cannot be served is rolled back (it would otherwise commit a model that never ran)."""
        self._serving = serving
        self._serving_unsettled = False
        try:
            state = self.installer.state()
            model = self._trial_model(state)
            active = state.active
            if model is None or active is None:
                return
            if serving.model == model:
                if self.installer.mark_serving(active.slot):
                    log.info("ota_trial_serving", release=active.ref())
                    if active.slot not in self._own_slots:
                        self.report(
                            OtaPhase.PROBATION,
                            release_ref(active.ref()),
                            "installed by another process (edge-agent ota install); served by the daemon from "
                            "now, its probation counts from here",
                        )
            elif (
                serving.refused is not None
                and serving.wanted == model
                and self.installer.report_unhealthy(f"the daemon cannot serve its model: {serving.refused}"[:500])
            ):
                self._request_swap()  # back to the known-good release
        except StateError as exc:  # the lock is taken (a CLI command): settle it at a later tick
            self._serving_unsettled = True
            log.info("ota_serving_unsettled", error=str(exc))
        except OtaError as exc:
            log.error("ota_serving_failed", error=str(exc))
        try:
            self._publish_view(self.installer.state())
        except OtaError:
            pass

    def _publish_view(self, state: InstallState) -> None:
        trial = state.trial
        deferred = None
        if self._desired and (trial is not None or state.queued is not None):
            push = max(self._desired.values(), key=lambda p: p.release.counter)
            if decide_push(push, state, self.ota.channel, self._handled) == Decision.DEFER:
                deferred = push.release.model_dump()
        self._view = UpdatesView(
            release=None if state.active is None or trial is None else state.active.ref(),
            trial=None if trial is None else replace(trial),
            served_by_daemon=self._serves_trial(state),
            queued=None if state.queued is None else dict(vars(state.queued)),
            deferred=deferred,
        )


__all__ = ["ChunkSubscriptions", "ModelUpdateService", "Serving", "UpdatesView"]
