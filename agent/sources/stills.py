"""A camera's main stream: received all the time, decoded only for a still.

A plant camera offers a full-resolution main stream and a low-resolution substream. The model runs on the
substream (the camera's ``url``, decoded frame by frame: a 640x360 frame costs a tenth of a 1080p one); what a
person or the trainer looks at — an alert's snapshot, a sample — should be the main stream's picture of the
same moment. Decoding the main stream continuously would cost what the substream saves, so it is only
received: its access units since the last keyframe are kept (:class:`GopBuffer`, pure), and a still is decoded
from that keyframe up to the unit that arrived nearest to the detect frame, in the thread that wants it (the
output writer), only when one is wanted.

Threads: ``camera-<name>-main`` (a supervised :data:`agent.threads.CAMERA` worker) receives, reconnects with
the camera's backoff and owns the connection; the buffer is shared under a lock (the receiver appends, a still
copies the run it needs and decodes outside the lock). When the main stream is down, or has nothing near the
moment, the caller uses the detect frame and says so.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import structlog

from agent.core.backoff import Backoff
from agent.sources.errors import SourceConfigError, SourceUnavailableError
from agent.sources.frame import AccessUnit, MainStreamStatus, SourceState
from agent.sources.gst import GstUnitReader, decode_still
from agent.sources.readers import Image
from agent.threads import CAMERA, Supervisor, Worker, WorkerDeath

log = structlog.get_logger(__name__)

__all__ = ["GopBuffer", "MainStream", "Still"]

UnitOpener = Callable[[], GstUnitReader]


class GopBuffer:
    """The access units of the last ``keep`` GOPs (pure: no I/O, no locking; the owner locks)."""

    def __init__(self, keep: int = 2, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.keep = max(1, keep)
        self.max_bytes = max_bytes
        self._gops: List[List[AccessUnit]] = []
        self._bytes = 0

    def clear(self) -> None:
        self._gops = []
        self._bytes = 0

    def add(self, unit: AccessUnit) -> None:
        if unit.keyframe:
            self._gops.append([unit])
        elif self._gops:
            self._gops[-1].append(unit)
        else:
            return  # nothing decodable before the first keyframe
        self._bytes += len(unit.data)
        # keep whole GOPs: a still needs its keyframe; a stream with very long GOPs is cut by bytes
        while len(self._gops) > self.keep or (len(self._gops) > 1 and self._bytes > self.max_bytes):
            dropped = self._gops.pop(0)
            self._bytes -= sum(len(u.data) for u in dropped)

    @property
    def units(self) -> int:
        return sum(len(g) for g in self._gops)

    @property
    def bytes(self) -> int:
        return self._bytes

    def run_to(self, monotonic: float) -> Optional[List[AccessUnit]]:
        """The units from a keyframe up to the one that arrived nearest ``monotonic``; ``None`` when empty."""
        best: Optional[Tuple[float, int, int]] = None
        for g, gop in enumerate(self._gops):
            for u, unit in enumerate(gop):
                distance = abs(unit.arrived_monotonic - monotonic)
                if best is None or distance < best[0]:
                    best = (distance, g, u)
        if best is None:
            return None
        _distance, g, u = best
        return list(self._gops[g][: u + 1])


@dataclass(frozen=True)
class Still:
    """A main-stream picture of the moment of a detect frame.

    Attributes:
        image: BGR, the main stream's resolution.
        offset_s: how far (seconds) the decoded unit arrived from the detect frame.
        decode_ms: wall milliseconds it took to decode (a keyframe and the units after it).
    """

    image: Image
    offset_s: float
    decode_ms: float


class MainStream:
    """See the module docstring. ``opener`` connects (``open_rtsp_units`` with the camera's settings)."""

    def __init__(
        self,
        camera: str,
        address: str,
        opener: UnitOpener,
        *,
        backoff: Optional[Backoff] = None,
        max_offset_s: float = 1.0,
        supervisor: Optional[Supervisor] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.camera = camera
        self.address = address
        self._opener = opener
        self._backoff = backoff or Backoff(0.5, 2.0)
        self.max_offset_s = max_offset_s
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # guarded by _lock
        self._buffer = GopBuffer()
        self._codec = ""
        self._state = SourceState.STARTING
        self._reason = f"opening {address}"
        self._received_units = self._received_bytes = self._reconnects = 0
        self._stills = self._still_failures = 0
        self._still_ms = 0.0
        self._size = (0, 0)
        self._worker = Worker(f"camera-{camera}-main", self._run, CAMERA, supervisor, self._gave_up)

    # ------------------------------------------------------------------------------------------ control

    def start(self) -> None:
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> bool:
        self._stop.set()
        self._worker.cancel_restarts()
        finished = self._worker.join(timeout)
        with self._lock:
            self._state, self._reason = SourceState.STOPPED, "stopped"
            self._buffer.clear()
        return finished

    def status(self) -> MainStreamStatus:
        with self._lock:
            return MainStreamStatus(
                self.address,
                self._state,
                self._reason,
                self._codec,
                self._buffer.units,
                self._buffer.bytes,
                self._received_units,
                self._received_bytes,
                self._reconnects,
                self._stills,
                self._still_failures,
                self._still_ms,
                self._size[0],
                self._size[1],
            )

    # --------------------------------------------------------------------------------------------- stills

    def still(self, at_monotonic: float) -> Optional[Still]:
        """The main stream's picture nearest ``at_monotonic`` (decoded now, in the caller's thread), or ``None``
        when the stream has none within ``max_offset_s`` (down, just reconnected, or the moment is gone)."""
        with self._lock:
            run = self._buffer.run_to(at_monotonic)
            codec = self._codec
        if not run or not codec:
            return None
        offset = abs(run[-1].arrived_monotonic - at_monotonic)
        if offset > self.max_offset_s:
            return None
        started = time.monotonic()
        try:
            image = decode_still(codec, run)
        except Exception as exc:  # a broken run: the caller falls back to the detect frame
            with self._lock:
                self._still_failures += 1
            log.warning("main_stream_still_failed", camera=self.camera, error=str(exc))
            return None
        took_ms = (time.monotonic() - started) * 1000.0
        with self._lock:
            self._stills += 1
            self._still_ms += took_ms
            self._size = (int(image.shape[1]), int(image.shape[0]))
        return Still(image, offset, took_ms)

    # ----------------------------------------------------------------------------------- receiver thread

    def _set(self, state: SourceState, reason: str) -> None:
        with self._lock:
            if self._state is not SourceState.STOPPED:
                self._state, self._reason = state, reason

    def _gave_up(self, death: WorkerDeath) -> None:
        self._set(SourceState.FAILED, f"internal error: {death.error}")

    def _run(self) -> None:
        attempt = 0
        opened_before = False
        while not self._stop.is_set():
            try:
                reader = self._opener()
            except SourceConfigError as exc:
                self._set(SourceState.FAILED, str(exc))
                return
            except Exception as exc:
                at_least = exc.retry_after_s if isinstance(exc, SourceUnavailableError) else None
                reason = f"open failed: {exc}"
                self._set(SourceState.RECONNECTING, reason)
                delay = max(self._backoff.delay(attempt, self._rng), at_least or 0.0)
                attempt += 1
                if self._stop.wait(delay):
                    return
                continue
            if opened_before:
                with self._lock:
                    self._reconnects += 1
            opened_before = True
            attempt = 0
            with self._lock:
                self._codec = reader.codec
                self._buffer.clear()  # a new connection: the old GOPs are another stream's past
            self._set(SourceState.STREAMING, "receiving (decoded only for stills)")
            try:
                while not self._stop.is_set():
                    unit = reader.read_unit()
                    if unit is None:
                        break
                    with self._lock:
                        self._buffer.add(unit)
                        self._received_units += 1
                        self._received_bytes += len(unit.data)
            except Exception as exc:
                self._set(SourceState.RECONNECTING, f"read failed: {exc}")
            finally:
                reader.close()
            if self._stop.wait(self._backoff.delay(0, self._rng)):
                return
