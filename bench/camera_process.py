"""Cameras in a child process with shared-memory frames: the experiment of issue 11 (as Frigate does).

Question: the four-camera pipeline loses 5-20 % against the single-stream engine limit, and the threads
benchmark shows Python threads slowing native code in the same process. Does moving the cameras out of the
process remove that? This module is what ``bench/bench_cameras.py --camera-process`` runs instead of the
in-process ``CameraSource`` threads; it is a measurement prototype, not an agent component.

::

    child process "cameras"              shared memory                       the benchmark's process
    renders N frames per camera   ──►  frames[cam, slot] (H, W, 3) uint8  ──►  ShmCamera.latest(): copy
    replays them at ``fps`` each        times[cam, slot] (monotonic, wall)        of the newest slot
    and publishes slot + sequence       seq[cam]  (last published index)
    one byte per frame on a pipe  ──────────────────────────────────────────►  thread "camera-shm":
                                                                                  wakes the pipeline

A camera owns ``SLOTS`` slots; frame ``n`` lives in slot ``n % SLOTS`` until frame ``n + SLOTS`` overwrites
it. A reader copies the newest slot and checks afterwards that the writer did not come round to it meanwhile
(it retries if it did), so a frame never tears. The copy is the price of the process boundary: the in-process
synthetic cameras hand frames over by reference. ``copy=False`` hands out the slot itself (a view that the
writer overwrites ``SLOTS`` frames later): unsafe for a product, it measures the design's upper bound, a
zero-copy hand-over with leases that this prototype does not have.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from agent.sources.frame import Frame

SLOTS = 4


@dataclass(frozen=True)
class ShmStatus:
    """The few ``SourceStatus`` fields the benchmark reads."""

    frames: int
    dropped: int


def _arrays(buf: Any, cameras: int, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = size
    frames_nbytes = cameras * SLOTS * h * w * 3
    times_nbytes = cameras * SLOTS * 2 * 8
    frames = np.ndarray((cameras, SLOTS, h, w, 3), np.uint8, buf, 0)
    times = np.ndarray((cameras, SLOTS, 2), np.float64, buf, frames_nbytes)
    seq = np.ndarray((cameras,), np.int64, buf, frames_nbytes + times_nbytes)
    return frames, times, seq


def _nbytes(cameras: int, size: Tuple[int, int]) -> int:
    return cameras * SLOTS * (size[0] * size[1] * 3 + 16) + cameras * 8


def _serve(name: str, cameras: int, size: Tuple[int, int], fps: float, prerender: int, notify: Any, stop: Any) -> None:
    """The child: render, then publish frames at ``fps`` per camera until ``stop`` is set."""
    from agent.synthetic.render import render_stream_frames

    # Attaching registers the segment with the resource tracker the child shares with the parent (spawn):
    # one registration per name, removed when the parent unlinks it.
    shm = shared_memory.SharedMemory(name=name)
    notify_fd = notify.fileno()
    os.set_blocking(notify_fd, False)
    frames, times, seq = _arrays(shm.buf, cameras, size)
    loops = [
        [f.image for f in render_stream_frames("factory", cam, range(max(1, prerender)), size)]
        for cam in range(cameras)
    ]
    interval = 1.0 / fps
    start = time.monotonic()
    due = [start + cam * interval / cameras for cam in range(cameras)]  # staggered like independent cameras
    published = [-1] * cameras
    try:
        while not stop.is_set():
            cam = min(range(cameras), key=lambda c: due[c])
            delay = due[cam] - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            n = published[cam] + 1
            slot = n % SLOTS
            np.copyto(frames[cam, slot], loops[cam][n % len(loops[cam])])
            times[cam, slot, 0] = time.monotonic()
            times[cam, slot, 1] = time.time()
            seq[cam] = n  # published after the pixels and times
            published[cam] = n
            due[cam] += interval
            try:
                os.write(notify_fd, b"\x00")
            except BlockingIOError:  # the reader is behind: it will see the newest sequence anyway
                pass
    finally:
        del frames, times, seq
        shm.close()


class ShmCamera:
    """One camera of the child process, with the part of ``CameraSource`` the pipeline uses."""

    def __init__(self, owner: ProcessCameras, index: int, copy: bool) -> None:
        self.name = f"cam{index}"
        self._copy = copy
        self._owner = owner
        self._index = index
        self._listeners: List[Callable[[], None]] = []
        self._taken = -1
        self._taken_count = 0

    def add_frame_listener(self, listener: Callable[[], None]) -> None:
        self._listeners = [*self._listeners, listener]

    def remove_frame_listener(self, listener: Callable[[], None]) -> None:
        self._listeners = [known for known in self._listeners if known != listener]

    def latest(self) -> Optional[Frame]:
        frames, times, seq = self._owner.arrays
        while True:
            n = int(seq[self._index])
            if n < 0:
                return None
            slot = n % SLOTS
            view = frames[self._index, slot]
            image = view.copy() if self._copy else view
            mono, wall = float(times[self._index, slot, 0]), float(times[self._index, slot, 1])
            if not self._copy or int(seq[self._index]) - n < SLOTS - 1:  # the writer did not come round meanwhile
                break
        if n != self._taken:
            self._taken = n
            self._taken_count += 1
        return Frame(self.name, n, mono, wall, image)

    def take_next(self) -> Optional[Frame]:
        """The pipeline's take: the newest frame (this experiment keeps no older one)."""
        return self.latest()

    def still_of(self, frame: Frame) -> None:
        return None  # no main stream

    @property
    def stall_timeout_s(self) -> float:
        return 2.0

    def status(self) -> ShmStatus:
        n = int(self._owner.arrays[2][self._index])
        return ShmStatus(frames=n + 1, dropped=max(0, n + 1 - self._taken_count - (0 if self._taken == n else 1)))

    def stop(self, timeout: float = 2.0) -> bool:
        return True


class ProcessCameras:
    """``cameras`` synthetic cameras rendered in one child process; :attr:`sources` are their ``ShmCamera``."""

    def __init__(self, cameras: int, size: Tuple[int, int], fps: float, prerender: int, copy: bool = True) -> None:
        self.size = size
        self._shm = shared_memory.SharedMemory(create=True, size=_nbytes(cameras, size))
        self.arrays = _arrays(self._shm.buf, cameras, size)
        self.arrays[2][:] = -1
        ctx = multiprocessing.get_context("spawn")  # the parent holds ONNX Runtime threads: never fork it
        reader, writer = ctx.Pipe(duplex=False)
        self._reader = reader
        self._read_fd = reader.fileno()
        self._stop = ctx.Event()
        self._process = ctx.Process(
            target=_serve,
            args=(self._shm.name, cameras, size, fps, prerender, writer, self._stop),
            name="cameras",
            daemon=True,
        )
        self._process.start()
        self.pid = int(self._process.pid or 0)
        writer.close()  # the child holds the write end: EOF when it exits
        self.sources = [ShmCamera(self, i, copy) for i in range(cameras)]
        self._notifier = threading.Thread(target=self._notify, name="camera-shm", daemon=True)
        self._notifier.start()
        deadline = time.monotonic() + 120.0
        while any(s.status().frames == 0 for s in self.sources):
            if time.monotonic() > deadline or not self._process.is_alive():
                self.close()
                raise RuntimeError("the camera process delivered no frame within 120 s")
            time.sleep(0.05)

    def _notify(self) -> None:
        """Wake the pipeline on every published frame (blocked in ``os.read``, which releases the GIL)."""
        while True:
            try:
                data = os.read(self._read_fd, 4096)
            except OSError:
                return
            if not data:
                return
            for source in self.sources:
                for listener in source._listeners:
                    listener()

    def close(self) -> None:
        self._stop.set()
        self._process.join(5.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)
        self._notifier.join(2.0)
        self._reader.close()
        del self.arrays
        self._shm.close()
        self._shm.unlink()
