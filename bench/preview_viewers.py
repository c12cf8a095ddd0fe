"""Browsers of bench_console_preview.py, in a child process of their own (standard library only, so that
starting it costs the measured pipeline next to nothing)::

    python -m bench.preview_viewers PORT FPS VIEWERS CAMERA...

runs until its stdin closes, then prints how many previews it was served.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from typing import Any, List


def run(port: int, cameras: List[str], fps: float, viewers: int, stop: Any, served: Any) -> None:
    """(a child process: the browsers are not on the box) ``viewers`` threads, each fetching every camera's
    preview once per 1 / fps s, as the page does."""

    def viewer() -> None:
        period = 1.0 / fps
        while not stop.is_set():
            began = time.monotonic()
            for camera in cameras:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/preview/{camera}.jpg", timeout=5) as r:
                        r.read()
                    with served.get_lock():
                        served.value += 1
                except OSError:
                    pass  # no frame yet (503) or shutting down
            stop.wait(max(0.0, period - (time.monotonic() - began)))

    threads = [threading.Thread(target=viewer, name=f"viewer-{i}") for i in range(viewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class _Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


if __name__ == "__main__":
    port, fps, viewers, cameras = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    stop, served = threading.Event(), _Counter()
    worker = threading.Thread(target=run, args=(port, cameras, fps, viewers, stop, served))
    worker.start()
    sys.stdin.read()  # the parent closes it to stop us
    stop.set()
    worker.join()
    print(served.value, flush=True)
