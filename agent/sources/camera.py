"""A camera source: one reader thread, the newest frame in a one-slot buffer, reconnects, stall detection.

Threads (both daemon threads, named after the camera):

- ``camera-<name>``           opens the reader, reads, paces, delivers into the slot, reconnects with capped
                              exponential backoff and jitter;
- ``camera-<name>-watchdog``  marks the source STALLED when one read has blocked longer than the stall
                              timeout (the reader thread cannot notice: it is the one blocked). Network
                              readers also carry an FFmpeg read timeout, after which the read fails and the
                              reader thread reconnects.

Consumers take frames with :meth:`CameraSource.latest` (threads, non-blocking),
:meth:`CameraSource.wait_frame` (threads, blocking) or ``await`` :meth:`CameraSource.next_frame` (asyncio):
newest frame wins, and a frame nobody took before a newer one replaced it is counted in ``dropped``. The
inference loop uses :meth:`CameraSource.take_next`, which also hands over the frame just before the newest when
it arrived less than ``TAKE_SLACK_S`` ago: network cameras deliver frames unevenly (two 15 fps frames 23 ms
apart, measured on loopback), and a loop busy with other cameras for those 23 ms lost the first of the pair
although it had the time to spare for both.

Frame listeners (:meth:`CameraSource.add_frame_listener`) are called with no argument from the reader thread
after every delivery: a consumer serving several cameras waits on one event instead of polling each slot.
They must be quick (an ``Event.set``); one that raises is logged and otherwise ignored.

State listeners are called from the source's threads with a :class:`SourceStatus`; they must be quick and
thread-safe (the daemon hands them to its loop with ``call_soon_threadsafe``). A listener that raises is
logged and otherwise ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Set, Tuple

import structlog

from agent.core.backoff import Backoff
from agent.sources.errors import SourceConfigError, SourceStoppedError, SourceUnavailableError
from agent.sources.frame import DecodeStats, Frame, SourceState, SourceStatus, SyntheticOrigin
from agent.sources.readers import FrameReader, Image, Opener
from agent.threads import CAMERA, Supervisor, Worker, WorkerDeath

if TYPE_CHECKING:
    from agent.sources.stills import MainStream, Still

log = structlog.get_logger(__name__)

StateListener = Callable[[SourceStatus], None]
FrameListener = Callable[[], None]

_END = "end"
_LOST = "lost"
_STOPPED = "stopped"


TAKE_SLACK_S = 0.1
"""How old the frame before the newest may be for :meth:`CameraSource.take_next` to hand it over: a burst of
two frames is processed in full; a loop that falls behind (the older frame more than 1.5 frame intervals old at
15 fps) gets the newest, as before. One held frame at most, so a held frame is never more than two frame
intervals old at 20 fps or more. Measured with 8 RTSP substream cameras at 15 fps (bench/bench_rtsp_cameras.py,
one alert every 30 s): 76 of 7200 frames lost at 50 ms, 11 at 100 ms; frame-to-alert p95 of four 1080p cameras
94 and 100 ms."""


def default_stall_timeout(expected_fps: Optional[float]) -> float:
    """Ten frame intervals at the expected rate, never under 2 s (an I-frame interval of a slow stream)."""
    if not expected_fps:
        return 2.0
    return max(2.0, 10.0 / expected_fps)


class CameraSource:
    """See the module docstring.

    Args:
        name: the camera's name.
        kind: the source type, reported in the status (``rtsp``, ``file``, ...).
        opener: opens a :class:`FrameReader`; called again for every reconnect (and every loop of a file).
        loop: at the end of a finite source, open it again (files, folders) instead of stopping.
        fps_limit: deliver at most this many frames per second (live streams are still read at full rate
            and the extra frames grabbed without decoding, so the camera's buffer never fills up).
        backoff: reconnect delays.
        stall_timeout_s: one read blocking this long is a stall; ``None``: :func:`default_stall_timeout`
            of the expected rate.
        rng: jitter source (tests pass a seeded one).
        address: where the frames come from, without credentials (status and reasons show it).
        main: the camera's main stream (decoded only for stills), started and stopped with the source.
    """

    def __init__(
        self,
        name: str,
        kind: str,
        opener: Opener,
        *,
        loop: bool = False,
        fps_limit: Optional[float] = None,
        backoff: Optional[Backoff] = None,
        stall_timeout_s: Optional[float] = None,
        rng: Optional[random.Random] = None,
        supervisor: Optional[Supervisor] = None,
        address: str = "",
        main: Optional[MainStream] = None,
    ) -> None:
        if fps_limit is not None and fps_limit <= 0:
            raise ValueError(f"fps_limit must be > 0, got {fps_limit}")
        self.name = name
        self.kind = kind
        self.address = address
        self.main = main
        self._opener = opener
        self._loop_source = loop
        self._fps_limit = fps_limit
        self._backoff = backoff or Backoff()
        self._stall_timeout_config = stall_timeout_s
        self._stall_timeout = stall_timeout_s or default_stall_timeout(fps_limit)
        self._rng = rng or random.Random()

        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._listeners: List[StateListener] = []
        self._frame_listeners: List[FrameListener] = []
        self._async_waiters: Set[Tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

        # Everything below is guarded by self._cond.
        self._latest: Optional[Frame] = None
        self._latest_taken = True
        self._held: Optional[Frame] = None  # the frame before the newest, not taken yet (take_next's slack)
        self._next_index = 0
        self._frames = 0
        self._dropped = 0
        self._skipped = 0
        self._reconnects = 0
        self._reconnect_attempts = 0
        self._failed_attempts = 0
        self._read_started: Optional[float] = None
        self._state = SourceState.STARTING
        self._previous: Optional[SourceState] = None
        self._reason = ""
        self._changed_monotonic = time.monotonic()
        self._changed_wall = time.time()
        # decode figures: the closed connections' sum and the open reader (asked for its own at each status)
        self._decode_closed: Optional[DecodeStats] = None
        self._reader: Optional[FrameReader] = None

        self._supervisor = supervisor
        self._thread: Optional[Worker] = None
        self._watchdog: Optional[Worker] = None

    # ------------------------------------------------------------------------------------------ control

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(status)`` on every state change (from the source's threads)."""
        self._listeners.append(listener)

    def add_frame_listener(self, listener: FrameListener) -> None:
        """Call ``listener()`` after every frame delivered into the slot (from the reader thread)."""
        self._frame_listeners = [*self._frame_listeners, listener]  # copy on write: _deliver iterates unlocked

    def remove_frame_listener(self, listener: FrameListener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        self._frame_listeners = [known for known in self._frame_listeners if known != listener]  # == : bound methods

    def start(self) -> None:
        """Start the reader and watchdog threads; a source starts once."""
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name!r} already started")
        # Supervised: a reader that dies of a bug is restarted with backoff; one that keeps dying marks the
        # camera failed (the other cameras go on).
        self._thread = Worker(f"camera-{self.name}", self._run, CAMERA, self._supervisor, self._gave_up)
        self._watchdog = Worker(f"camera-{self.name}-watchdog", self._watch, CAMERA, self._supervisor, self._gave_up)
        self._notify_listeners(self.status())
        self._thread.start()
        self._watchdog.start()
        if self.main is not None:
            self.main.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading and wait up to ``timeout`` s for the threads; False if the reader is still blocked.

        A reader blocked in a read that never returns is left to its (daemon) thread: it closes the reader
        as soon as the read returns or times out.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        finished = True
        if self.main is not None:
            finished = self.main.stop(timeout / 2) and finished
        for worker in (self._thread, self._watchdog):
            if worker is not None and not worker.is_current:
                worker.cancel_restarts()
                finished = worker.join(max(0.0, deadline - time.monotonic())) and finished
        self._set_state(SourceState.STOPPED, "stopped")
        return finished

    # ------------------------------------------------------------------------------------------- status

    @property
    def state(self) -> SourceState:
        with self._cond:
            return self._state

    @property
    def stall_timeout_s(self) -> float:
        return self._stall_timeout

    def status(self) -> SourceStatus:
        with self._cond:
            return self._status_locked()

    def _decode_locked(self) -> Optional[DecodeStats]:
        stats = getattr(self._reader, "stats", None)
        current: Optional[DecodeStats] = stats() if callable(stats) else None
        if current is None:
            return self._decode_closed
        return current if self._decode_closed is None else self._decode_closed + current

    def _status_locked(self) -> SourceStatus:
        latest = self._latest
        return SourceStatus(
            camera=self.name,
            kind=self.kind,
            state=self._state,
            previous=self._previous,
            reason=self._reason,
            changed_monotonic=self._changed_monotonic,
            changed_wall=self._changed_wall,
            frames=self._frames,
            dropped=self._dropped,
            skipped=self._skipped,
            reconnects=self._reconnects,
            reconnect_attempts=self._reconnect_attempts,
            failed_attempts=self._failed_attempts,
            last_frame_monotonic=latest.captured_monotonic if latest else None,
            width=latest.width if latest else 0,
            height=latest.height if latest else 0,
            address=self.address,
            decode=self._decode_locked(),
            main=None if self.main is None else self.main.status(),
        )

    def _set_reason(self, reason: str) -> None:
        """A new reason without a new state (what the source is trying now, why the last try failed). Not a
        state change: listeners are not called; :meth:`status` (read at every status interval) shows it."""
        with self._cond:
            if not self._state.terminal:
                self._reason = reason

    def _set_state(self, state: SourceState, reason: str = "") -> None:
        with self._cond:
            if self._state == state or (self._state.terminal and state != self._state):
                return  # no news; and nothing leaves STOPPED/FAILED
            self._previous, self._state, self._reason = self._state, state, reason
            self._changed_monotonic = time.monotonic()
            self._changed_wall = time.time()
            status = self._status_locked()
            if state.terminal:
                self._cond.notify_all()
            waiters = list(self._async_waiters) if state.terminal else []
        log.info("camera_state", camera=self.name, state=state.value, previous=status.previous, reason=reason)
        self._wake_async(waiters)
        self._notify_listeners(status)

    def _notify_listeners(self, status: SourceStatus) -> None:
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:  # a broken listener must not kill the camera thread
                log.exception("camera_state_listener_failed", camera=self.name)

    # ------------------------------------------------------------------------------------------ frames

    def still_of(self, frame: Frame) -> Optional[Callable[[], Optional[Still]]]:
        """For a camera with a main stream: a call that decodes its picture of ``frame``'s moment (for the
        output writer's thread, which makes snapshots and samples); ``None`` without one."""
        main = self.main
        if main is None:
            return None
        at = frame.captured_monotonic
        return lambda: main.still(at)

    def latest(self) -> Optional[Frame]:
        """The newest frame, marked taken (replacing it is no drop); ``None`` before the first."""
        with self._cond:
            frame = self._latest
            if frame is not None:
                self._skip_held_locked()
                self._latest_taken = True
            return frame

    def take_next(self, slack_s: float = TAKE_SLACK_S) -> Optional[Frame]:
        """The inference loop's take: the oldest frame nobody took yet, if it is the one just before the newest
        and arrived at most ``slack_s`` ago; else the newest (the older one counted as dropped); ``None`` when
        every frame was taken. Call again for the newest after an older one was handed over."""
        with self._cond:
            held = self._held
            if held is not None and time.monotonic() - held.captured_monotonic <= slack_s:
                self._held = None
                return held
            self._skip_held_locked()  # too old by now: counted as dropped
            if self._latest is None or self._latest_taken:
                return None
            self._latest_taken = True
            return self._latest

    def _skip_held_locked(self) -> None:
        if self._held is not None:  # a consumer of the newest frame skips the one before it
            self._held = None
            self._dropped += 1

    def wait_frame(self, after_index: int = -1, timeout: Optional[float] = None) -> Optional[Frame]:
        """Block until a frame newer than ``after_index`` arrives; ``None`` on timeout.

        Raises:
            SourceStoppedError: the source stopped or failed and holds no newer frame.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: (self._latest is not None and self._latest.index > after_index) or self._state.terminal,
                timeout,
            )
            return self._take_newer_locked(after_index)

    async def next_frame(self, after_index: int = -1) -> Frame:
        """Wait (without blocking the event loop) for a frame newer than ``after_index`` and take it.

        Cancel it (e.g. ``asyncio.wait_for``) to give up waiting.

        Raises:
            SourceStoppedError: the source stopped or failed and holds no newer frame.
        """
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._cond:
            self._async_waiters.add(waiter)
        try:
            while True:
                event.clear()
                with self._cond:
                    frame = self._take_newer_locked(after_index)
                if frame is not None:
                    return frame
                await event.wait()
        finally:
            with self._cond:
                self._async_waiters.discard(waiter)

    def _take_newer_locked(self, after_index: int) -> Optional[Frame]:
        frame = self._latest
        if frame is not None and frame.index > after_index:
            self._skip_held_locked()
            self._latest_taken = True
            return frame
        if self._state.terminal:
            raise SourceStoppedError(
                f"source is {self._state.value}: {self._reason}",
                self.name,
                state=self._state.value,
                reason=self._reason,
            )
        return None

    def _deliver(
        self,
        image: Image,
        origin: Optional[SyntheticOrigin] = None,
        capture: Optional[Tuple[float, float]] = None,
    ) -> None:
        # the moment the frame's data reached the box when the reader knows it (before decoding), else now
        now, wall = capture if capture is not None else (time.monotonic(), time.time())
        with self._cond:
            frame = Frame(self.name, self._next_index, now, wall, image, origin)
            self._next_index += 1
            if not self._latest_taken:
                if self._held is not None:
                    self._dropped += 1  # a third frame before anyone took the first: the first is lost
                self._held = self._latest
            self._latest = frame
            self._latest_taken = False
            self._frames += 1
            self._failed_attempts = 0
            self._cond.notify_all()
            waiters = list(self._async_waiters)
            state = self._state
        self._wake_async(waiters)
        for listener in self._frame_listeners:
            try:
                listener()
            except Exception:  # a broken consumer must not kill the camera thread
                log.exception("camera_frame_listener_failed", camera=self.name)
        if state is not SourceState.STREAMING:
            self._set_state(SourceState.STREAMING, "frames arriving")

    @staticmethod
    def _wake_async(waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in waiters:
            # RuntimeError: the waiter's loop is closed; its own finally clause can no longer run either.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    # ------------------------------------------------------------------------------------ reader thread

    def _run(self) -> None:
        attempt = 0
        opened_before = False
        tried_before = False
        looping = False
        try:
            while not self._stop.is_set():
                if tried_before and not looping:
                    with self._cond:
                        self._reconnect_attempts += 1
                tried_before = True
                if self.address and not looping:
                    self._set_reason(f"opening {self.address}")
                try:
                    reader = self._opener()
                except SourceConfigError as exc:
                    self._set_state(SourceState.FAILED, str(exc))
                    return
                except Exception as exc:  # unavailable, or anything else an opener raises: retry
                    looping = False  # the next successful open is a reconnect, not the next loop
                    with self._cond:
                        self._failed_attempts += 1
                    at_least = exc.retry_after_s if isinstance(exc, SourceUnavailableError) else None
                    if self._sleep_backoff(attempt, f"open failed: {exc}", at_least):
                        break
                    attempt += 1
                    continue
                with self._cond:
                    self._reader = reader
                if opened_before and not looping:
                    with self._cond:
                        self._reconnects += 1
                opened_before = True
                try:
                    outcome, delivered, reason = self._stream(reader)
                finally:
                    try:
                        reader.close()
                    except Exception:
                        log.exception("camera_reader_close_failed", camera=self.name)
                    with self._cond:
                        self._decode_closed = self._decode_locked()
                        self._reader = None
                if delivered:
                    attempt = 0
                if outcome == _STOPPED:
                    break
                if outcome == _END and delivered:
                    if self._loop_source:
                        looping = True
                        continue
                    self._set_state(SourceState.STOPPED, "end of stream")
                    return
                # Lost, or a whole pass without a single frame (an empty or unreadable file): back off so a
                # broken source is not reopened in a tight loop.
                looping = False
                if outcome == _END:
                    reason = "end of stream without a frame"
                if self._sleep_backoff(attempt, reason):
                    break
                attempt += 1
        except Exception as exc:  # a bug: say so in the status; the supervisor restarts the reader
            self._set_state(SourceState.RECONNECTING, f"internal error: {exc!r}")
            raise
        self._set_state(SourceState.STOPPED, "stopped")

    def _gave_up(self, death: WorkerDeath) -> None:
        """A reader (or its watchdog) kept dying: the camera is failed, with the last error."""
        self._set_state(SourceState.FAILED, f"internal error: {death.error}")

    def _sleep_backoff(self, attempt: int, reason: str, at_least: Optional[float] = None) -> bool:
        """RECONNECTING, then wait the backoff delay (``at_least`` when the failure asks for a longer wait: a
        refused login); True when stop() was called meanwhile."""
        self._set_state(SourceState.RECONNECTING, reason)
        self._set_reason(reason)  # already reconnecting: the newest failure is the reason, not the first one
        delay = max(self._backoff.delay(attempt, self._rng), at_least or 0.0)
        log.info("camera_reconnect_wait", camera=self.name, attempt=attempt, delay_s=round(delay, 3), reason=reason)
        return self._stop.wait(delay)

    def _timed(self, call: Callable[[], Any]) -> Any:
        with self._cond:
            self._read_started = time.monotonic()
        try:
            return call()
        finally:
            with self._cond:
                self._read_started = None

    def _stream(self, reader: FrameReader) -> Tuple[str, int, str]:
        """Read until the end, a failure or stop(); returns (outcome, frames delivered, reason)."""
        rate: Optional[float]
        if reader.live:
            rate = None
        else:
            rates = [r for r in (reader.nominal_fps, self._fps_limit) if r]
            rate = min(rates) if rates else None
        expected = rate or reader.nominal_fps or self._fps_limit
        if self._stall_timeout_config is None:
            self._stall_timeout = default_stall_timeout(expected)
        pace_interval = 1.0 / rate if rate else 0.0
        limit_interval = 1.0 / self._fps_limit if (reader.live and self._fps_limit) else 0.0
        next_due = time.monotonic()
        delivered = 0
        while not self._stop.is_set():
            try:
                if limit_interval and time.monotonic() < next_due:
                    if not self._timed(reader.grab):
                        return _END, delivered, "end of stream"
                    with self._cond:
                        self._skipped += 1
                    continue
                if pace_interval:
                    wait = next_due - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        return _STOPPED, delivered, "stopped"
                image = self._timed(reader.read)
            except Exception as exc:
                return _LOST, delivered, f"read failed: {exc}"
            if image is None:
                return _END, delivered, "end of stream"
            # only the synthetic reader knows what it rendered, only stream readers when the data arrived
            self._deliver(image, getattr(reader, "last_origin", None), getattr(reader, "last_capture", None))
            delivered += 1
            interval = pace_interval or limit_interval
            if interval:
                now = time.monotonic()
                # Keep an even cadence, but never try to catch up a backlog with a burst.
                next_due = max(next_due + interval, now - interval)
        return _STOPPED, delivered, "stopped"

    # --------------------------------------------------------------------------------- watchdog thread

    def _watch(self) -> None:
        while not self._stop.wait(min(0.25, self._stall_timeout / 4.0)):
            with self._cond:
                started = self._read_started
                state = self._state
                timeout = self._stall_timeout
            if state.terminal:
                return
            if state is SourceState.STREAMING and started is not None:
                blocked = time.monotonic() - started
                if blocked > timeout:
                    self._set_state(SourceState.STALLED, f"no frame for {blocked:.1f} s (limit {timeout:.1f} s)")
