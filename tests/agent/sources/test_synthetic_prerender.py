"""Prerendered synthetic cameras (render a short loop once, replay it by reference) and frame listeners."""

from __future__ import annotations

import random
import threading
from typing import List

import numpy as np
import pytest
from pydantic import ValidationError

from agent.memory import release_free_memory
from agent.sources import CameraConfig, CameraSource, SourceState, build_source
from agent.sources.readers import SyntheticReader, bounce_order
from agent.synthetic import render_stream_frame
from agent.synthetic.render import _stream_context, render_stream_frames

from .helpers import wait_until

SMALL = (96, 160)


@pytest.mark.parametrize(
    ("count", "order"),
    [
        (1, [0]),
        (2, [0, 1]),
        (3, [0, 1, 2, 1]),
        (4, [0, 1, 2, 3, 2, 1]),
    ],
)
def test_bounce_order_goes_forward_then_back_without_repeating_the_ends(count: int, order: List[int]) -> None:
    assert bounce_order(count) == order


def test_bounce_order_rejects_an_empty_loop() -> None:
    with pytest.raises(ValueError, match="count"):
        bounce_order(0)


def test_render_stream_frames_equal_render_stream_frame_and_leave_the_cache_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Watch the cached builder for this call's own key: the global cache size would also count frames that
    # camera threads left running by other tests render meanwhile.
    import agent.synthetic.render as render

    cached_calls: List[int] = []

    def watched(domain: object, seed: int, height: int, width: int) -> object:
        if seed == 5 and (height, width) == SMALL:
            cached_calls.append(seed)
        return _stream_context(domain, seed, height, width)  # type: ignore[arg-type]

    watched.__wrapped__ = _stream_context.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.setattr(render, "_stream_context", watched)
    frames = render_stream_frames("factory", 5, [3, 4, 9], SMALL)
    assert cached_calls == []  # the belt was built for the call, not cached
    monkeypatch.undo()
    for frame, index in zip(frames, [3, 4, 9]):
        expected = render_stream_frame("factory", 5, index, SMALL)
        assert np.array_equal(frame.image, expected.image)
        assert np.array_equal(frame.boxes, expected.boxes) and np.array_equal(frame.class_ids, expected.class_ids)


def test_render_stream_frames_checks_every_index() -> None:
    with pytest.raises(ValueError):
        render_stream_frames("factory", 5, [0, -1], SMALL)


def test_prerendered_reader_replays_the_stream_forward_and_back_by_reference() -> None:
    reader = SyntheticReader("factory", 2, SMALL, fps=10.0, start_index=7, prerender=3)
    images = [reader.read() for _ in range(9)]
    expected = [render_stream_frame("factory", 2, 7 + k, SMALL).image for k in range(3)]
    for image, k in zip(images, [0, 1, 2, 1, 0, 1, 2, 1, 0]):
        assert image is not None and np.array_equal(image, expected[k])
    assert images[0] is images[4] is images[8]  # the same array again: no copy per frame
    assert all(image is not None and not image.flags.writeable for image in images)
    assert reader.held_bytes == 3 * SMALL[0] * SMALL[1] * 3
    reader.close()
    assert reader.held_bytes == 0


def test_live_reader_holds_no_loop() -> None:
    reader = SyntheticReader("factory", 2, SMALL, fps=10.0)
    assert reader.held_bytes == 0
    first, second = reader.read(), reader.read()
    assert first is not None and second is not None
    assert np.array_equal(second, render_stream_frame("factory", 2, 1, SMALL).image)


def test_prerender_of_an_unknown_domain_is_a_configuration_error() -> None:
    from agent.sources import SourceConfigError

    with pytest.raises(SourceConfigError, match="factory"):
        SyntheticReader("moon", 0, SMALL, fps=10.0, prerender=2)


@pytest.mark.parametrize("value", [-1, 257])
def test_prerender_outside_its_range_is_rejected_by_the_config(value: int) -> None:
    with pytest.raises(ValidationError, match="prerender"):
        CameraConfig.model_validate({"name": "c", "source": {"type": "synthetic", "prerender": value}})


def test_release_free_memory_runs_here() -> None:
    assert release_free_memory() in (True, False)  # glibc: True or False by what was trimmed; never raises


def _camera(prerender: int, fps: float = 50.0) -> CameraSource:
    config = CameraConfig.model_validate(
        {
            "name": "syn",
            "source": {
                "type": "synthetic",
                "seed": 4,
                "width": SMALL[1],
                "height": SMALL[0],
                "fps": fps,
                "prerender": prerender,
            },
        }
    )
    return build_source(config, rng=random.Random(0))


def test_prerendered_camera_delivers_the_loop_at_its_rate() -> None:
    source = _camera(prerender=2, fps=50.0)
    source.start()
    try:
        first = source.wait_frame(timeout=10)
        assert first is not None
        loop = [render_stream_frame("factory", 4, k, SMALL).image for k in range(2)]
        seen = []
        last = first.index
        while len(seen) < 6:
            frame = source.wait_frame(last, timeout=2)
            assert frame is not None
            seen.append(frame)
            last = frame.index
        for frame in seen:  # frame n of the source is loop frame bounce_order(2)[n % 2]
            assert np.array_equal(frame.image, loop[frame.index % 2])
        assert source.state is SourceState.STREAMING
    finally:
        assert source.stop(5.0)


def test_frame_listeners_are_called_per_delivery_and_can_be_removed() -> None:
    source = _camera(prerender=1, fps=100.0)
    calls = {"a": 0, "b": 0}
    lock = threading.Lock()

    def a() -> None:
        with lock:
            calls["a"] += 1

    def broken() -> None:
        with lock:
            calls["b"] += 1
        raise RuntimeError("a consumer bug")

    source.add_frame_listener(a)
    source.add_frame_listener(broken)
    source.start()
    try:
        assert wait_until(lambda: calls["a"] >= 5, timeout=10)
        assert calls["b"] >= 1 and source.state is SourceState.STREAMING  # a raising listener changes nothing
        source.remove_frame_listener(a)
        source.remove_frame_listener(broken)
        with lock:
            frozen = dict(calls)
        delivered = source.status().frames
        assert wait_until(lambda: source.status().frames >= delivered + 5, timeout=5)
        assert calls["a"] <= frozen["a"] + 1 and calls["b"] <= frozen["b"] + 1  # at most one in flight
    finally:
        assert source.stop(5.0)


def test_removing_a_bound_method_listener_works() -> None:
    source = _camera(prerender=1)
    event = threading.Event()
    source.add_frame_listener(event.set)
    source.remove_frame_listener(event.set)  # a new bound-method object each time: removed by equality
    assert source._frame_listeners == []
