"""Camera sources against real files, folders, devices and a local HTTP MJPEG camera."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, List

import cv2
import numpy as np
import pytest

from agent.sources import (
    Backoff,
    CameraConfig,
    CameraSource,
    SourceState,
    SourceStoppedError,
    build_source,
)
from agent.sources.camera import TAKE_SLACK_S
from agent.sources.readers import ImageFolderReader, open_video_file

from .helpers import MjpegCamera, StateRecorder, block_value, numbered_image, wait_until, write_video

Start = Callable[[CameraSource], CameraSource]
FAST_BACKOFF = {"initial_s": 0.05, "max_s": 0.2, "multiplier": 2.0, "jitter": 0.0}


def camera(name: str, source: dict, **extra: object) -> CameraSource:
    data = {"name": name, "source": source, "reconnect": FAST_BACKOFF, **extra}
    return build_source(CameraConfig.model_validate(data), rng=random.Random(0))


def frame_number(image: np.ndarray) -> int:
    return round(block_value(image) / 10)


def take_all(source: CameraSource, timeout: float = 5.0) -> List[int]:
    """Take every frame until the source stops; returns the frame numbers encoded in the images."""
    numbers = []
    last = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = source.wait_frame(last, timeout=0.5)
        except SourceStoppedError:
            return numbers
        if frame is not None:
            numbers.append(frame_number(frame.image))
            last = frame.index
    raise AssertionError("source did not stop")


# ------------------------------------------------------------------------------------------------ files


def test_file_without_loop_delivers_every_frame_in_order_then_stops(tmp_path: Path, started: Start) -> None:
    # 20 fps, not the shared clip's 50: the taker below must take each frame within a frame interval (newest
    # frame wins), and 20 ms was too tight on a loaded CI machine (a frame was replaced once)
    clip = write_video(tmp_path / "clip20.avi", fps=20.0)
    recorder = StateRecorder()
    source = camera("f", {"type": "file", "path": str(clip), "loop": False, "realtime": True})
    source.add_listener(recorder)
    t0 = time.monotonic()
    started(source)
    assert take_all(source) == list(range(20))
    elapsed = time.monotonic() - t0
    # 20 frames at the file's 20 fps: about 0.95 s; realtime pacing must not go much faster.
    assert elapsed >= 0.8
    status = source.status()
    assert status.state is SourceState.STOPPED
    assert status.reason == "end of stream"
    # listeners are told after the state changed (outside the lock): the last call may still be on its way
    assert wait_until(lambda: len(recorder.states) >= 3)
    assert recorder.states[:3] == [SourceState.STARTING, SourceState.STREAMING, SourceState.STOPPED]
    assert (status.width, status.height, status.frames) == (64, 48, 20)
    record = status.as_record()
    assert (record["state"], record["previous"], record["frames"]) == ("stopped", "streaming", 20)
    json.dumps(record)


def test_fps_limit_paces_a_file(video_file: Path, started: Start) -> None:
    source = started(camera("f", {"type": "file", "path": str(video_file), "loop": True}, fps_limit=20))
    assert wait_until(lambda: source.status().frames >= 1)
    t0, n0 = time.monotonic(), source.status().frames
    time.sleep(0.5)
    rate = (source.status().frames - n0) / (time.monotonic() - t0)
    assert 8 <= rate <= 24, rate  # paced near 20, never the file's 50 (the low bound is loose: loaded CI cores)


def test_looping_file_keeps_increasing_indices(video_file: Path, started: Start) -> None:
    source = started(camera("f", {"type": "file", "path": str(video_file), "loop": True, "realtime": False}))
    seen = []
    last = -1
    while len(seen) < 60:
        frame = source.wait_frame(last, timeout=2.0)
        assert frame is not None
        assert frame.index > last
        last = frame.index
        seen.append(frame_number(frame.image))
    assert source.status().frames > 40  # more than two passes of 20
    assert source.status().reconnects == 0  # looping is not reconnecting
    assert 0 in seen[1:] and 19 in seen  # wrapped around


def test_slow_consumer_drops_are_counted_and_add_up(video_file: Path, started: Start) -> None:
    source = started(camera("f", {"type": "file", "path": str(video_file), "loop": True, "realtime": False}))
    taken = 0
    last = -1
    t_end = time.monotonic() + 0.6
    while time.monotonic() < t_end:
        frame = source.wait_frame(last, timeout=1.0)
        assert frame is not None
        taken += 1
        last = frame.index
        time.sleep(0.03)  # a consumer much slower than decoding
    source.stop()
    status = source.status()
    assert status.dropped > 0
    # Every delivered frame was either taken, overwritten (dropped), or is still in the slot (the newest, and
    # the one before it that take_next would still hand over)
    assert status.frames - taken - status.dropped in (0, 1, 2)


class ScriptedReader:
    """A live reader that delivers a frame each time the test releases one."""

    live = True
    nominal_fps = None

    def __init__(self) -> None:
        self.released = threading.Semaphore(0)
        self.finished = threading.Event()  # set by the test: the next read fails, so the reader thread ends
        self.count = 0

    def read(self) -> np.ndarray:
        while not self.released.acquire(timeout=0.05):
            if self.finished.is_set():
                raise OSError("the scripted camera is finished")
        self.count += 1
        return numbered_image(self.count)

    def grab(self) -> bool:
        return True

    def close(self) -> None:
        pass


def test_take_next_hands_over_a_burst_of_two_in_order_and_the_newest_when_late() -> None:
    reader = ScriptedReader()
    source = CameraSource("burst", "test", lambda: reader, stall_timeout_s=60)
    source.start()
    try:
        reader.released.release()
        assert wait_until(lambda: source.status().frames == 1)
        assert source.take_next() is not None and source.take_next() is None
        # two frames arrive before the loop comes back for them (a network camera's uneven delivery)
        reader.released.release()
        reader.released.release()
        assert wait_until(lambda: source.status().frames == 3)
        first, second = source.take_next(), source.take_next()
        assert first is not None and second is not None and first.index + 1 == second.index
        assert source.take_next() is None and source.status().dropped == 0
        # a loop that fell behind: the older of two waiting frames is past the slack, the newest is taken
        reader.released.release()
        reader.released.release()
        assert wait_until(lambda: source.status().frames == 5)
        time.sleep(TAKE_SLACK_S + 0.03)
        late = source.take_next()
        assert late is not None and late.index == 4 and source.status().dropped == 1
        # three before anyone takes one: the first is lost at once; newest-frame consumers skip the held one
        for _ in range(3):
            reader.released.release()
        assert wait_until(lambda: source.status().frames == 8)
        assert source.status().dropped == 2
        newest = source.latest()
        assert newest is not None and newest.index == 7 and source.status().dropped == 3
    finally:
        reader.finished.set()
        source.stop()
    assert not any(thread.name.startswith("camera-burst") for thread in threading.enumerate())


def test_file_removed_and_restored_resumes_without_restart(tmp_path: Path, started: Start) -> None:
    path = write_video(tmp_path / "clip.avi", frames=10)
    backup = tmp_path / "backup.avi"
    shutil.copy(path, backup)
    recorder = StateRecorder()
    source = camera("f", {"type": "file", "path": str(path), "loop": True, "realtime": False}, fps_limit=100)
    source.add_listener(recorder)
    started(source)
    assert wait_until(lambda: source.state is SourceState.STREAMING)
    path.unlink()
    assert wait_until(lambda: source.state is SourceState.RECONNECTING)
    assert "no such video file" in source.status().reason
    frames_while_gone = source.status().frames
    time.sleep(0.3)
    assert source.status().frames == frames_while_gone
    shutil.copy(backup, path)
    assert wait_until(lambda: source.status().frames > frames_while_gone + 5)
    assert source.state is SourceState.STREAMING
    assert source.status().reconnects >= 1
    assert source.status().reconnect_attempts >= source.status().reconnects  # attempts count the failed ones too
    assert SourceState.RECONNECTING in recorder.states


def test_empty_or_corrupt_video_backs_off_instead_of_spinning(tmp_path: Path, started: Start) -> None:
    path = tmp_path / "broken.avi"
    path.write_bytes(b"RIFF....AVI not really a video")
    source = started(camera("f", {"type": "file", "path": str(path), "loop": True}))
    assert wait_until(lambda: source.state is SourceState.RECONNECTING)
    time.sleep(0.5)
    # 0.05 + 0.1 + 0.2 + 0.2 ... : a handful of attempts in 0.5 s, not thousands
    assert 2 <= source.status().failed_attempts <= 8
    assert source.status().frames == 0
    # a camera that never comes back shows its attempts, not a flat `reconnects` 0
    status = source.status()
    assert status.reconnects == 0 and status.reconnect_attempts >= status.failed_attempts - 1 >= 1
    assert status.as_record()["reconnect_attempts"] == status.reconnect_attempts


# ------------------------------------------------------------------------------------------ image folders


def write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        # zero-padded names: sorted order is numeric order; PNG is lossless
        cv2.imwrite(str(folder / f"img_{i:03d}.png"), numbered_image(i))


def test_image_folder_in_sorted_order_skipping_corrupt_files(tmp_path: Path, started: Start) -> None:
    folder = tmp_path / "images"
    write_images(folder, 5)
    (folder / "img_002.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    reader = ImageFolderReader(folder, fps=None)
    assert [frame_number(reader.read()) for _ in range(4)] == [0, 1, 3, 4]  # type: ignore[arg-type]
    assert reader.read() is None
    assert [p.name for p in reader.unreadable] == ["img_002.png"]
    # Through a source (newest frame wins, so a busy consumer may miss some): in order, never the bad one.
    source = started(camera("i", {"type": "images", "path": str(folder), "loop": False, "fps": 20}))
    numbers = take_all(source)
    assert numbers == sorted(numbers)
    assert set(numbers) <= {0, 1, 3, 4}
    assert numbers[-1] == 4
    assert source.status().frames == 4


def test_image_folder_grayscale_and_alpha_become_bgr(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((10, 12), 200, np.uint8))
    cv2.imwrite(str(folder / "b.png"), np.full((10, 12, 4), 100, np.uint8))
    reader = ImageFolderReader(folder, fps=None)
    shapes = [reader.read().shape, reader.read().shape]  # type: ignore[union-attr]
    assert shapes == [(10, 12, 3), (10, 12, 3)]
    assert reader.read() is None


def test_image_folder_removed_and_restored_resumes(tmp_path: Path, started: Start) -> None:
    folder = tmp_path / "images"
    write_images(folder, 3)
    source = started(camera("i", {"type": "images", "path": str(folder), "loop": True, "fps": 100}))
    assert wait_until(lambda: source.status().frames >= 3)
    folder.rename(tmp_path / "away")
    assert wait_until(lambda: source.state is SourceState.RECONNECTING)
    before = source.status().frames
    (tmp_path / "away").rename(folder)
    assert wait_until(lambda: source.status().frames >= before + 3)
    assert source.state is SourceState.STREAMING
    assert source.status().reconnects >= 1


# ------------------------------------------------------------------------------------ devices and backoff


def test_missing_usb_device_retries_with_capped_backoff(started: Start) -> None:
    attempts: List[float] = []
    source = camera("usb", {"type": "usb", "device": "/dev/video97"})
    original = source._opener

    def counting_opener():  # type: ignore[no-untyped-def]
        attempts.append(time.monotonic())
        return original()

    source._opener = counting_opener
    started(source)
    assert wait_until(lambda: len(attempts) >= 6, timeout=5)
    gaps = np.diff(attempts[:6])
    # jitter 0: 0.05, 0.1, 0.2 (cap), 0.2, 0.2 seconds
    expected = np.array([0.05, 0.1, 0.2, 0.2, 0.2])
    # never earlier than the backoff says; later only by scheduling delay on a busy machine
    assert np.all(gaps >= expected - 0.01), gaps
    assert np.all(gaps <= expected + 0.15), gaps
    status = source.status()
    assert status.state is SourceState.RECONNECTING
    assert "no such device" in status.reason


@pytest.mark.parametrize(
    ("attempt", "u", "expected"),
    [
        (0, 0.0, 0.5),
        (1, 0.0, 1.0),
        (3, 0.0, 4.0),
        (10, 0.0, 30.0),
        (1000, 0.0, 30.0),
        (1, 1.0, 0.8),
        (10, 0.5, 27.0),
    ],
)
def test_backoff_delays(attempt: int, u: float, expected: float) -> None:
    class FixedRandom(random.Random):
        def random(self) -> float:
            return u

    assert Backoff(0.5, 30.0, 2.0, 0.2).delay(attempt, FixedRandom()) == pytest.approx(expected)


def test_backoff_jitter_spreads_retries() -> None:
    rng = random.Random(1)
    delays = {round(Backoff(1.0, 10.0, 2.0, 0.5).delay(3, rng), 6) for _ in range(50)}
    assert len(delays) > 40
    assert all(4.0 <= d <= 8.0 for d in delays)


def test_csi_without_jetson_plugins_fails_clearly(started: Start) -> None:
    # a CSI camera needs JetPack's nvarguscamerasrc (or, without GStreamer's bindings, says what to install):
    # a configuration error, not a retry loop
    source = started(camera("csi", {"type": "csi", "sensor_id": 0}))
    assert wait_until(lambda: source.state is SourceState.FAILED)
    reason = source.status().reason
    assert 'no element "nvarguscamerasrc"' in reason or "GStreamer and its Python bindings" in reason, reason
    with pytest.raises(SourceStoppedError) as info:
        source.wait_frame(timeout=1)
    assert info.value.state == "failed"


# ---------------------------------------------------------------------------------- HTTP MJPEG camera


def test_http_camera_stall_disappearance_and_return(mjpeg_camera: MjpegCamera, started: Start) -> None:
    recorder = StateRecorder()
    source = camera(
        "ip",
        {"type": "http", "url": mjpeg_camera.url, "open_timeout_s": 2, "read_timeout_s": 3},
        stall_timeout_s=0.4,
    )
    source.add_listener(recorder)
    started(source)
    assert wait_until(lambda: source.status().frames >= 5)
    frame = source.latest()
    assert frame is not None and frame.image.shape == (48, 64, 3)

    mjpeg_camera.pause()  # frames stop, the connection stays open: a stall
    assert wait_until(lambda: source.state is SourceState.STALLED, timeout=3)
    mjpeg_camera.resume()
    assert wait_until(lambda: source.state is SourceState.STREAMING, timeout=3)
    assert source.status().reconnects == 0  # a short stall recovers without reconnecting

    mjpeg_camera.stop()  # the camera disappears
    assert mjpeg_camera.port_refuses()
    assert wait_until(lambda: source.state is SourceState.RECONNECTING, timeout=5)
    frames_while_gone = source.status().frames
    mjpeg_camera.start()  # ... and comes back on the same address
    assert wait_until(lambda: source.status().frames > frames_while_gone + 5, timeout=5)
    assert source.state is SourceState.STREAMING
    assert source.status().reconnects >= 1
    states = recorder.states
    assert states.index(SourceState.STALLED) < states.index(SourceState.RECONNECTING)


def test_http_fps_limit_skips_frames_without_decoding(mjpeg_camera: MjpegCamera, started: Start) -> None:
    source = started(camera("ip", {"type": "http", "url": mjpeg_camera.url}, fps_limit=10))
    assert wait_until(lambda: source.status().frames >= 2)
    time.sleep(0.6)
    status = source.status()
    assert status.skipped > status.frames  # 50 fps camera, 10 fps delivered
    assert status.frames <= 10


# --------------------------------------------------------------------------------------------- asyncio


def test_next_frame_from_asyncio(video_file: Path, started: Start) -> None:
    source = started(camera("f", {"type": "file", "path": str(video_file), "loop": False, "realtime": True}))

    async def consume() -> List[int]:
        indices = []
        last = -1
        while True:
            try:
                frame = await asyncio.wait_for(source.next_frame(last), timeout=5)
            except SourceStoppedError:
                return indices
            indices.append(frame.index)
            last = frame.index

    indices = asyncio.run(consume())
    assert indices == sorted(set(indices))
    assert len(indices) >= 15  # realtime 50 fps: an idle loop keeps up with nearly every frame
    assert not source._async_waiters


def test_next_frame_cancelled_cleans_up(tmp_path: Path, started: Start) -> None:
    source = started(camera("gone", {"type": "images", "path": str(tmp_path / "missing")}))

    async def wait_briefly() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(source.next_frame(), timeout=0.2)

    asyncio.run(wait_briefly())
    assert not source._async_waiters
    assert source.state is SourceState.RECONNECTING


def test_listener_errors_do_not_kill_the_camera(video_file: Path, started: Start) -> None:
    def broken(status: object) -> None:
        raise RuntimeError("listener bug")

    source = camera("f", {"type": "file", "path": str(video_file), "loop": False, "realtime": False})
    source.add_listener(broken)
    started(source)
    assert len(take_all(source)) >= 1
    assert source.status().reason == "end of stream"


def test_video_reader_reports_file_fps(video_file: Path) -> None:
    reader = open_video_file(video_file, realtime=True)
    try:
        assert reader.nominal_fps == pytest.approx(50.0)
        assert reader.live is False
    finally:
        reader.close()


# ------------------------------------------------------------------------------------------- synthetic


def test_synthetic_camera_streams_rendered_frames_at_its_rate(started: Start) -> None:
    source = started(
        camera(
            "demo",
            {"type": "synthetic", "domain": "factory", "seed": 3, "width": 320, "height": 240, "fps": 20},
        )
    )
    first = source.wait_frame(timeout=5)
    assert first is not None and first.image.shape == (240, 320, 3) and first.image.dtype == np.uint8
    t0, n0 = time.monotonic(), source.status().frames
    time.sleep(0.5)
    rate = (source.status().frames - n0) / (time.monotonic() - t0)
    assert 8 <= rate <= 24, rate  # paced near 20, never the file's 50 (the low bound is loose: loaded CI cores)
    from agent.synthetic import render_stream_frame

    frame = source.wait_frame(first.index, timeout=2)
    assert frame is not None
    # the source's n-th frame is the renderer's frame n of the (domain, seed) stream
    expected = render_stream_frame("factory", 3, frame.index, size=(240, 320)).image
    assert np.array_equal(frame.image, expected)


def test_synthetic_unknown_domain_fails_with_the_known_ones(started: Start) -> None:
    source = started(camera("demo", {"type": "synthetic", "domain": "moon"}))
    assert wait_until(lambda: source.state is SourceState.FAILED)
    assert "factory" in source.status().reason
