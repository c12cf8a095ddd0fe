"""Helpers for the camera source tests: real video files, image folders and a local HTTP MJPEG camera."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

import cv2
import numpy as np

from agent.sources.frame import SourceState, SourceStatus


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def numbered_image(i: int, size: tuple = (48, 64)) -> np.ndarray:
    """An image whose top-left pixel value encodes ``i`` (survives JPEG well enough in a flat block)."""
    image = np.zeros((*size, 3), np.uint8)
    image[:16, :16] = (i * 10) % 256
    image[16:, :] = 128
    return image


def block_value(image: np.ndarray) -> int:
    return round(float(image[2:14, 2:14].mean()))


def write_video(path: Path, frames: int = 20, fps: float = 50.0, size: tuple = (48, 64)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    assert writer.isOpened(), "OpenCV cannot write MJPG/AVI here"
    for i in range(frames):
        writer.write(numbered_image(i, size))
    writer.release()
    return path


class StateRecorder:
    """A state listener that keeps every status it is given."""

    def __init__(self) -> None:
        self.statuses: List[SourceStatus] = []
        self._lock = threading.Lock()

    def __call__(self, status: SourceStatus) -> None:
        with self._lock:
            self.statuses.append(status)

    @property
    def states(self) -> List[SourceState]:
        with self._lock:
            return [s.state for s in self.statuses]


# ------------------------------------------------------------------------------------ MJPEG over HTTP


class MjpegCamera:
    """A tiny IP camera: multipart/x-mixed-replace JPEG frames over HTTP on 127.0.0.1.

    ``pause()`` stops frames without closing connections (a stall); ``stop()`` closes the listener and every
    open connection (the camera disappears); ``start()`` brings it back on the same port.
    """

    def __init__(self, fps: float = 50.0) -> None:
        self.interval = 1.0 / fps
        self.running = threading.Event()  # cleared: frames are held back (stall)
        self.running.set()
        self.alive = threading.Event()  # cleared: handlers close their connections
        ok, jpeg = cv2.imencode(".jpg", numbered_image(5))
        assert ok
        self.jpeg = jpeg.tobytes()
        self.port = 0
        self._server: Optional[socketserver.ThreadingTCPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while camera.alive.is_set():
                        if not camera.running.is_set():
                            time.sleep(0.01)
                            continue
                        part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(camera.jpeg)
                        self.wfile.write(part + camera.jpeg + b"\r\n")
                        time.sleep(camera.interval)
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self.alive.set()
        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="mjpeg-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
        time.sleep(0.05)  # let handlers notice and close their sockets

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def port_refuses(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) != 0
