"""A camera reader thread that dies of a bug: restarted (the camera says why meanwhile), and failed for good
only when it keeps dying, while the other cameras go on. The policy's backoff is shortened for the test
(the real CAMERA policy waits 1 s doubling to 60 s)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any, List, Tuple

import pytest

import agent.sources.camera as camera_module
from agent.core.backoff import Backoff
from agent.sources import CameraConfig, CameraSource, SourceState, build_source
from agent.threads import CAMERA, Supervisor

from .helpers import StateRecorder, wait_until

FAST_BACKOFF = {"initial_s": 0.05, "max_s": 0.2, "multiplier": 2.0, "jitter": 0.0}


@pytest.fixture(autouse=True)
def fast_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(camera_module, "CAMERA", dataclasses.replace(CAMERA, backoff=Backoff(0.01, 0.02)))


def looping_camera(name: str, video_file: Path, supervisor: Supervisor) -> CameraSource:
    data = {
        "name": name,
        "source": {"type": "file", "path": str(video_file), "loop": True},
        "fps_limit": 50,
        "reconnect": FAST_BACKOFF,
    }
    return build_source(CameraConfig.model_validate(data), rng=random.Random(0), supervisor=supervisor)


def break_stream(source: CameraSource, times: int) -> List[int]:
    """Make the reader's streaming loop raise (a bug, not a camera fault) on its first ``times`` calls."""
    real = source._stream
    calls = [0]

    def broken(reader: Any) -> Tuple[str, int, str]:
        calls[0] += 1
        if calls[0] <= times:
            raise KeyError("bug in the reader loop")
        return real(reader)

    source._stream = broken  # type: ignore[method-assign]
    return calls


def test_a_reader_that_dies_once_is_restarted_and_streams_again(video_file: Path) -> None:
    supervisor = Supervisor()
    source = looping_camera("cam", video_file, supervisor)
    recorder = StateRecorder()
    source.add_listener(recorder)
    calls = break_stream(source, times=1)
    source.start()
    try:
        assert wait_until(lambda: calls[0] >= 2 and source.status().frames > 5)
        assert source.state is SourceState.STREAMING
        assert SourceState.RECONNECTING in recorder.states  # said why while it was down
        reasons = [s.reason for s in recorder.statuses if s.state is SourceState.RECONNECTING]
        assert any("internal error" in r and "bug in the reader loop" in r for r in reasons), reasons
        state = {s.name: s for s in supervisor.states()}["camera-cam"]
        assert (state.state, state.deaths, state.restarts) == ("running", 1, 1)
        assert supervisor.problems() == []
    finally:
        assert source.stop(5.0)


def test_a_reader_that_keeps_dying_fails_its_camera_and_the_others_go_on(video_file: Path) -> None:
    supervisor = Supervisor(on_fatal=lambda death: pytest.fail(f"a camera must not stop the daemon: {death}"))
    broken = looping_camera("broken", video_file, supervisor)
    healthy = looping_camera("healthy", video_file, supervisor)
    break_stream(broken, times=1000)
    broken.start()
    healthy.start()
    try:
        assert wait_until(lambda: broken.state is SourceState.FAILED, timeout=10)
        status = broken.status()
        assert "internal error" in status.reason and "bug in the reader loop" in status.reason
        state = {s.name: s for s in supervisor.states()}["camera-broken"]
        assert state.state == "gave_up" and state.deaths == CAMERA.max_restarts + 1
        assert any(line.startswith("thread camera-broken gave up") for line in supervisor.problems())
        frames = healthy.status().frames
        assert wait_until(lambda: healthy.status().frames > frames + 5)
        assert healthy.state is SourceState.STREAMING
    finally:
        assert broken.stop(5.0) and healthy.stop(5.0)
    assert broken.state is SourceState.FAILED  # stop() does not hide the failure
