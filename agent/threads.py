"""Supervised long-lived threads: the one primitive every long-lived thread of the agent (and of the cloud
ingest) runs on, so that no thread can die unseen.

::

    Supervisor ── Worker(name, body, policy) ──> thread ``name`` runs body()
        ^                                              │ body() raised
        └──────────── death recorded (WorkerDeath) ────┘
             policy.on_death RESTART  body() again after a jittered backoff; more than ``max_restarts``
                                      deaths within ``window_s`` and the worker gives up (``give_up``)
                             REPORT   recorded and shown (status, metrics, log); the worker has its own
                                      fallback (e.g. native-stderr puts fd 2 back)
                             STOP     ``Supervisor.on_fatal(death)``: the daemon stops with the exit code
                                      the death calls for (``policy.blames_model``: may the model be at
                                      fault, so that probation counts it as a crash of the release?)

A body that returns ends its worker normally (that is how a worker stops: its owner sets a flag or closes
its queue, and the body returns). The supervisor's :meth:`Supervisor.states` are frozen snapshots, safe to
read from any thread (the status task, the metrics collector). :class:`SerialWorker` is the worker for the
common "run these blocking calls in order on one thread" case (inference, OTA installs).

Every worker is a daemon thread: one stuck in a native call must never keep a SIGTERMed process alive; the
owner joins it only up to its shutdown bound.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import enum
import queue
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import structlog

from agent.core.backoff import Backoff

__all__ = [
    "BEST_EFFORT",
    "CAMERA",
    "FRAME_PATH",
    "SIDE_TASK",
    "OnDeath",
    "Policy",
    "SerialWorker",
    "Supervisor",
    "Worker",
    "WorkerDeath",
    "WorkerState",
]

log = structlog.get_logger("agent.threads")


def _prctl() -> Optional[Callable[..., int]]:
    try:
        import ctypes

        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return function
    except (OSError, AttributeError):  # not Linux / not glibc
        return None


_PRCTL = _prctl()
_PR_SET_NAME = 15


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in the kernel too (15 bytes: what ``top -H``, ``ps -L``, py-spy and the
    benchmarks see; Python's thread names stay inside Python). Best effort, Linux only."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_NAME, name.encode("utf-8", "replace")[:15])


MAX_DEATHS_KEPT = 20  # the supervisor's recent deaths (for the status document's problems)


class OnDeath(str, enum.Enum):
    """What a worker's death leads to."""

    RESTART = "restart"
    REPORT = "report"
    STOP = "stop"


@dataclass(frozen=True)
class Policy:
    """How a worker's death is handled (see the module docstring)."""

    on_death: OnDeath = OnDeath.STOP
    max_restarts: int = 5
    window_s: float = 600.0
    give_up: OnDeath = OnDeath.STOP
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, max_s=60.0))
    blames_model: bool = False

    def __post_init__(self) -> None:
        if self.give_up == OnDeath.RESTART:
            raise ValueError("give_up must be REPORT or STOP")
        if self.max_restarts < 0 or self.window_s <= 0:
            raise ValueError("need max_restarts >= 0 and window_s > 0")


FRAME_PATH = Policy(OnDeath.STOP, blames_model=True)
"""Inference and rules: a death stops the daemon with the exit code probation counts (the model may be why)."""
SIDE_TASK = Policy(OnDeath.RESTART, give_up=OnDeath.STOP)
"""Output writer, MQTT link, OTA worker, metrics: restarted; if it keeps dying the daemon stops, and the stop
is not the model's fault."""
CAMERA = Policy(OnDeath.RESTART, give_up=OnDeath.REPORT)
"""Camera readers: restarted; if one keeps dying that camera is reported failed and the others go on."""
BEST_EFFORT = Policy(OnDeath.REPORT)
"""Threads with a fallback of their own (native-stderr): reported, nothing else."""


@dataclass(frozen=True)
class WorkerDeath:
    """One death of one worker, and what was done about it (``action``: restart, report, stop)."""

    worker: str
    error: str
    traceback: str
    at_wall: float
    deaths: int
    action: OnDeath
    blames_model: bool

    def describe(self) -> str:
        then = {OnDeath.RESTART: "restarting", OnDeath.REPORT: "not restarted", OnDeath.STOP: "stopping"}
        return f"thread {self.worker} died ({self.error}); {then[self.action]}"


@dataclass(frozen=True)
class WorkerState:
    """A snapshot of one worker (``state``: starting, running, restarting, stopped, died, gave_up)."""

    name: str
    state: str
    deaths: int
    restarts: int
    last_error: Optional[str]

    @property
    def alive(self) -> bool:
        return self.state in ("running", "restarting")


class Worker:
    """A named, supervised thread running ``body`` (see the module docstring).

    Args:
        name: the thread's name (also in logs, status and metrics).
        body: the thread's work; returning ends the worker, raising is a death.
        policy: what a death leads to.
        supervisor: records deaths and applies STOP (default: a log-only supervisor, for components used
            on their own).
        on_give_up: called (on the worker's thread) with the last death when the worker ends by a death it is
            not restarted from (e.g. a camera marks itself failed).
        rng: jitter source for the restart backoff (tests pass a seeded one).
    """

    def __init__(
        self,
        name: str,
        body: Callable[[], None],
        policy: Policy = FRAME_PATH,
        supervisor: Optional[Supervisor] = None,
        on_give_up: Optional[Callable[[WorkerDeath], None]] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._body = body
        self._supervisor = supervisor if supervisor is not None else Supervisor()
        self._on_give_up = on_give_up
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state = "starting"
        self._deaths: Deque[float] = collections.deque()
        self._death_count = 0
        self._restarts = 0
        self._last_error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._supervisor.register(self)

    # ---------------------------------------------------------------- control (owner's thread)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def cancel_restarts(self) -> None:
        """No more restarts (a pending backoff wait ends): the owner is stopping it."""
        self._stop.set()

    def join(self, timeout: Optional[float] = None) -> bool:
        """True when the thread has ended (or never started)."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def is_current(self) -> bool:
        return threading.current_thread() is self._thread

    def state(self) -> WorkerState:
        with self._lock:
            return WorkerState(self.name, self._state, self._death_count, self._restarts, self._last_error)

    # ---------------------------------------------------------------- the thread

    def _set(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _run(self) -> None:
        name_os_thread(self.name)
        while True:
            self._set("running")
            try:
                self._body()
            except BaseException as exc:  # the point: a thread never dies unseen
                death = self._died(exc)
                if death.action != OnDeath.RESTART:
                    self._set("gave_up" if self.policy.on_death == OnDeath.RESTART else "died")
                    if self._on_give_up is not None:
                        try:
                            self._on_give_up(death)
                        except Exception:
                            log.exception("worker_give_up_hook_failed", worker=self.name)
                    return
                self._set("restarting")
                delay = self.policy.backoff.delay(len(self._deaths) - 1, self._rng)
                if self._stop.wait(delay):
                    self._set("stopped")
                    return
                with self._lock:
                    self._restarts += 1
                log.warning("worker_restarted", worker=self.name, restarts=self._restarts)
                continue
            self._set("stopped")
            return

    def _died(self, exc: BaseException) -> WorkerDeath:
        now = time.monotonic()
        policy = self.policy
        with self._lock:
            self._deaths.append(now)
            while self._deaths and now - self._deaths[0] > policy.window_s:
                self._deaths.popleft()
            self._death_count += 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            self._last_error = error
            action = policy.on_death
            if action == OnDeath.RESTART and (len(self._deaths) > policy.max_restarts or self._stop.is_set()):
                action = policy.give_up
            death = WorkerDeath(
                self.name,
                error,
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:],
                time.time(),
                self._death_count,
                action,
                policy.blames_model,
            )
        self._supervisor.died(death)
        return death


class Supervisor:
    """Knows every worker; records deaths; hands a STOP to ``on_fatal`` (from the dying thread: it must be
    thread-safe, e.g. ``loop.call_soon_threadsafe``). While :attr:`closing`, deaths are recorded only."""

    def __init__(self, on_fatal: Optional[Callable[[WorkerDeath], None]] = None) -> None:
        self.on_fatal = on_fatal
        self.closing = False
        self._lock = threading.Lock()
        self._workers: Dict[str, Worker] = {}
        self._deaths: Deque[WorkerDeath] = collections.deque(maxlen=MAX_DEATHS_KEPT)

    def register(self, worker: Worker) -> None:
        """Track ``worker`` (a later worker of the same name, e.g. a re-added camera, replaces the earlier)."""
        with self._lock:
            self._workers[worker.name] = worker

    def forget(self, name: str) -> None:
        with self._lock:
            self._workers.pop(name, None)

    def died(self, death: WorkerDeath) -> None:
        level = log.error if death.action == OnDeath.RESTART else log.critical
        level("worker_died", worker=death.worker, error=death.error, action=death.action.value, deaths=death.deaths)
        with self._lock:
            self._deaths.append(death)
            fatal = death.action == OnDeath.STOP and not self.closing
            on_fatal = self.on_fatal
        if fatal and on_fatal is not None:
            try:
                on_fatal(death)
            except Exception:
                log.exception("supervisor_on_fatal_failed", worker=death.worker)

    def states(self) -> Tuple[WorkerState, ...]:
        """Every tracked worker's snapshot, by name."""
        with self._lock:
            workers = sorted(self._workers.values(), key=lambda w: w.name)
        return tuple(w.state() for w in workers)

    def deaths(self) -> Tuple[WorkerDeath, ...]:
        """The recent deaths, oldest first."""
        with self._lock:
            return tuple(self._deaths)

    def problems(self) -> List[str]:
        """One line per worker that is down by a death (for the status document)."""
        out = []
        for state in self.states():
            if state.state in ("died", "gave_up"):
                out.append(f"thread {state.name} {state.state.replace('_', ' ')}: {state.last_error}")
        return out


_Call = Tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class SerialWorker:
    """A worker running submitted blocking calls in order; each call's result or exception goes to its future
    (so a failing call is its caller's business, not a death). Await one with ``asyncio.wrap_future``."""

    def __init__(self, name: str, policy: Policy = FRAME_PATH, supervisor: Optional[Supervisor] = None) -> None:
        self._queue: queue.Queue[Optional[_Call]] = queue.Queue()
        self.worker = Worker(name, self._run, policy, supervisor)
        self.worker.start()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self.submit(fn))

    def stop(self) -> None:
        """End the thread after the calls queued so far."""
        self.worker.cancel_restarts()
        self._queue.put(None)

    def join(self, timeout: float) -> bool:
        return self.worker.join(timeout)

    def stop_and_join(self, timeout: float) -> bool:
        self.stop()
        return self.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to whoever awaits it
                future.set_exception(exc)
            else:
                future.set_result(result)
