"""agent/threads.py: the supervised worker primitive every long-lived thread runs on.

Each test drives a real thread; bodies that die raise on purpose. Backoffs are tiny so that restart tests take
milliseconds (the backoff maths itself is tested in tests/agent/core/test_backoff.py).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from typing import Callable, List

import pytest

from agent.core.backoff import Backoff
from agent.threads import (
    BEST_EFFORT,
    CAMERA,
    FRAME_PATH,
    SIDE_TASK,
    OnDeath,
    Policy,
    SerialWorker,
    Supervisor,
    Worker,
    WorkerDeath,
)

TINY = Backoff(initial_s=0.001, max_s=0.002)


def fast(policy: Policy, **changes: object) -> Policy:
    return dataclasses.replace(policy, backoff=TINY, **changes)  # type: ignore[arg-type]


def dies_times(n: int, then: Callable[[], None] = lambda: None) -> Callable[[], None]:
    """A body that raises on its first ``n`` runs, then runs ``then``."""
    runs = [0]

    def body() -> None:
        runs[0] += 1
        if runs[0] <= n:
            raise RuntimeError(f"boom {runs[0]}")
        then()

    return body


def always_dies() -> None:
    raise RuntimeError("always")


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


class Recorder:
    """A supervisor's ``on_fatal`` that records what it was handed."""

    def __init__(self) -> None:
        self.fatal: List[WorkerDeath] = []

    def __call__(self, death: WorkerDeath) -> None:
        self.fatal.append(death)


@pytest.mark.parametrize(
    "preset, deaths, final_state, fatal_calls, blames_model",
    [
        # FRAME_PATH: the first death stops the daemon, and the model may be why.
        (FRAME_PATH, 1, "died", 1, True),
        # BEST_EFFORT: recorded, nothing else.
        (BEST_EFFORT, 1, "died", 0, False),
        # SIDE_TASK: restarted max_restarts times, then stops the daemon (not the model's fault).
        (SIDE_TASK, 6, "gave_up", 1, False),
        # CAMERA: restarted max_restarts times, then reported (the others go on).
        (CAMERA, 6, "gave_up", 0, False),
    ],
    ids=["frame_path", "best_effort", "side_task", "camera"],
)
def test_each_preset_handles_a_body_that_keeps_dying(
    preset: Policy, deaths: int, final_state: str, fatal_calls: int, blames_model: bool
) -> None:
    recorder = Recorder()
    supervisor = Supervisor(on_fatal=recorder)
    given_up: List[WorkerDeath] = []
    worker = Worker("w", always_dies, fast(preset), supervisor, on_give_up=given_up.append).start()
    assert worker.join(5.0)
    state = worker.state()
    assert (state.state, state.deaths, state.restarts) == (final_state, deaths, deaths - 1)
    assert state.last_error == "RuntimeError: always"
    assert not state.alive
    assert len(recorder.fatal) == fatal_calls
    assert all(d.blames_model is blames_model for d in recorder.fatal)
    assert len(given_up) == 1 and given_up[0].deaths == deaths
    assert [d.deaths for d in supervisor.deaths()] == list(range(1, deaths + 1))
    assert supervisor.problems() == [f"thread w {final_state.replace('_', ' ')}: RuntimeError: always"]


def test_a_restarted_body_that_then_runs_normally_ends_stopped_and_is_no_problem() -> None:
    supervisor = Supervisor(on_fatal=Recorder())
    worker = Worker("w", dies_times(2), fast(SIDE_TASK), supervisor).start()
    assert worker.join(5.0)
    state = worker.state()
    assert (state.state, state.deaths, state.restarts) == ("stopped", 2, 2)
    assert [d.action for d in supervisor.deaths()] == [OnDeath.RESTART, OnDeath.RESTART]
    assert supervisor.problems() == []


def test_a_body_that_returns_is_a_normal_end_not_a_death() -> None:
    recorder = Recorder()
    supervisor = Supervisor(on_fatal=recorder)
    worker = Worker("w", lambda: None, FRAME_PATH, supervisor).start()
    assert worker.join(5.0)
    assert worker.state().state == "stopped"
    assert supervisor.deaths() == () and recorder.fatal == []


def test_the_restart_budget_counts_only_deaths_inside_the_window() -> None:
    """Deaths spread wider than ``window_s`` never exhaust the budget: a thread that dies once an hour is
    restarted forever; five deaths inside the window and the sixth gives up."""
    recorder = Recorder()
    policy = fast(SIDE_TASK, max_restarts=2, window_s=0.05)
    stop = threading.Event()
    runs = [0]

    def body() -> None:
        runs[0] += 1
        if runs[0] > 8:
            stop.wait()
            return
        time.sleep(0.06)  # each death comes after the previous one left the window
        raise RuntimeError("slow death")

    worker = Worker("w", body, policy, Supervisor(on_fatal=recorder)).start()
    wait_until(lambda: runs[0] > 8)
    assert worker.state().state == "running" and worker.state().restarts == 8
    assert recorder.fatal == []
    stop.set()
    assert worker.join(5.0)

    fast_deaths = Worker("v", always_dies, fast(SIDE_TASK, max_restarts=2, window_s=60.0), Supervisor(recorder))
    assert fast_deaths.start().join(5.0)
    assert fast_deaths.state().deaths == 3 and len(recorder.fatal) == 1


def test_cancel_restarts_ends_a_pending_backoff_and_a_death_while_stopping_is_not_restarted() -> None:
    recorder = Recorder()
    slow = dataclasses.replace(SIDE_TASK, backoff=Backoff(initial_s=30.0, max_s=30.0))
    worker = Worker("w", always_dies, slow, Supervisor(on_fatal=recorder)).start()
    wait_until(lambda: worker.state().state == "restarting")
    started = time.monotonic()
    worker.cancel_restarts()
    assert worker.join(5.0)
    assert time.monotonic() - started < 2.0  # not the 30 s backoff
    assert worker.state().state == "stopped" and recorder.fatal == []

    dying_while_stopping = Worker("v", always_dies, fast(SIDE_TASK), Supervisor(on_fatal=recorder))
    dying_while_stopping.cancel_restarts()
    assert dying_while_stopping.start().join(5.0)
    assert dying_while_stopping.state().deaths == 1  # the owner is stopping it: no restart


def test_while_closing_a_stop_death_is_recorded_but_not_fatal() -> None:
    recorder = Recorder()
    supervisor = Supervisor(on_fatal=recorder)
    supervisor.closing = True
    assert Worker("w", always_dies, FRAME_PATH, supervisor).start().join(5.0)
    assert recorder.fatal == [] and len(supervisor.deaths()) == 1


def test_a_failing_on_fatal_or_give_up_hook_does_not_hide_the_death() -> None:
    def broken(_: WorkerDeath) -> None:
        raise ValueError("hook bug")

    supervisor = Supervisor(on_fatal=broken)
    worker = Worker("w", always_dies, FRAME_PATH, supervisor, on_give_up=broken).start()
    assert worker.join(5.0)
    assert worker.state().state == "died" and len(supervisor.deaths()) == 1


def test_the_restart_backoff_uses_the_policy_and_the_injected_rng() -> None:
    """Delays grow along the policy's Backoff, drawn from the worker's rng (seeded: reproducible)."""
    policy = dataclasses.replace(CAMERA, max_restarts=3, backoff=Backoff(initial_s=0.02, max_s=0.08, jitter=0.0))
    starts: List[float] = []

    def body() -> None:
        starts.append(time.monotonic())
        raise RuntimeError("x")

    assert Worker("w", body, policy, Supervisor(), rng=random.Random(1)).start().join(5.0)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (0.02, 0.04, 0.08)):
        assert expected * 0.9 <= gap < expected + 0.5


def test_states_are_frozen_snapshots_by_name_and_a_later_worker_of_a_name_replaces_the_earlier() -> None:
    supervisor = Supervisor()
    hold = threading.Event()
    first = Worker("cam-a", hold.wait, CAMERA, supervisor).start()
    Worker("b", hold.wait, SIDE_TASK, supervisor).start()
    wait_until(lambda: all(s.state == "running" for s in supervisor.states()))
    snapshot = supervisor.states()
    assert [s.name for s in snapshot] == ["b", "cam-a"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot[0].state = "died"  # type: ignore[misc]
    replacement = Worker("cam-a", hold.wait, CAMERA, supervisor)
    assert len(supervisor.states()) == 2 and supervisor.states()[1].state == "starting"
    supervisor.forget("b")
    assert [s.name for s in supervisor.states()] == ["cam-a"]
    hold.set()
    assert first.join(5.0) and replacement.join(5.0)  # never started: join is immediate


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Policy(OnDeath.RESTART, give_up=OnDeath.RESTART)
    with pytest.raises(ValueError):
        Policy(window_s=0)
    with pytest.raises(ValueError):
        Policy(max_restarts=-1)


def test_worker_death_describes_what_was_done() -> None:
    death = WorkerDeath("link", "OSError: x", "", 0.0, 1, OnDeath.RESTART, False)
    assert death.describe() == "thread link died (OSError: x); restarting"
    assert dataclasses.replace(death, action=OnDeath.STOP).describe().endswith("stopping")


def test_serial_worker_runs_calls_in_order_and_hands_exceptions_to_their_futures() -> None:
    recorder = Recorder()
    supervisor = Supervisor(on_fatal=recorder)
    serial = SerialWorker("inference", FRAME_PATH, supervisor)
    order: List[int] = []
    futures = [serial.submit(lambda i=i: order.append(i) or i) for i in range(5)]  # type: ignore[func-returns-value]
    failing = serial.submit(lambda: 1 / 0)
    after = serial.submit(lambda: "still serving")
    assert [f.result(5.0) for f in futures] == [0, 1, 2, 3, 4]
    assert order == [0, 1, 2, 3, 4]
    with pytest.raises(ZeroDivisionError):
        failing.result(5.0)
    assert after.result(5.0) == "still serving"
    assert recorder.fatal == [] and serial.worker.state().deaths == 0  # a failing call is not a death
    assert serial.stop_and_join(5.0)
    assert serial.worker.state().state == "stopped"


def test_serial_worker_skips_a_cancelled_call_and_awaits_through_asyncio() -> None:
    import asyncio

    serial = SerialWorker("ota-worker", SIDE_TASK, Supervisor())
    gate = threading.Event()
    blocker = serial.submit(gate.wait)
    ran: List[str] = []
    cancelled = serial.submit(lambda: ran.append("cancelled one ran"))
    assert cancelled.cancel()
    gate.set()
    assert blocker.result(5.0) is True

    async def main() -> str:
        return str(await serial.call(lambda: "awaited"))

    assert asyncio.run(main()) == "awaited"
    assert ran == []
    assert serial.stop_and_join(5.0)
