"""Fault injectors for the soak (bench/soak.py), each a small real thing on this machine:

- :class:`FaultyProxy`: a loopback TCP proxy between the agent and the broker that cuts (drops every
  connection, refuses new ones) or stalls (keeps connections, forwards nothing) the network;
- :class:`IpCamera`: an HTTP MJPEG camera serving rendered factory frames, which can stall (frames stop, the
  connection stays) or disappear (listener and connections closed) and come back on the same address;
- :class:`DiskFiller`: a small tmpfs holding the agent's state (spool, OTA state, status file) that a ballast
  file fills to the last byte, and frees again;
- :class:`WatchdogListener`: the ``$NOTIFY_SOCKET`` end of systemd's watchdog protocol (the agent's
  ``WATCHDOG=1`` datagrams, timed), so that the soak can count the trips systemd would have acted on.

None of them knows about the agent: they break what the agent depends on, as the world does.
"""

from __future__ import annotations

import http.server
import os
import selectors
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tests.agent.broker import free_port


class FaultyProxy:
    """A loopback TCP proxy between the agent and the broker that can cut or stall the network."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._pairs: Dict[socket.socket, socket.socket] = {}
        self._refuse_until = 0.0
        self._stall_until = 0.0
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulty-proxy", daemon=True)
        self._thread.start()

    def cut(self, seconds: float) -> None:
        self._refuse_until = time.monotonic() + seconds
        self._cut.set()

    def stall(self, seconds: float) -> None:
        self._stall_until = time.monotonic() + seconds

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _drop(self, sock: socket.socket) -> None:
        other = self._pairs.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._pairs.pop(s, None)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._cut.is_set():
                self._cut.clear()
                for sock in list(self._pairs):
                    self._drop(sock)
            stalled = time.monotonic() < self._stall_until
            for key, _ in self._selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    try:
                        client, _ = self._listener.accept()
                    except OSError:
                        continue
                    if time.monotonic() < self._refuse_until:
                        client.close()
                        continue
                    try:
                        upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                    except OSError:
                        client.close()
                        continue
                    for s in (client, upstream):
                        s.setblocking(False)
                        self._selector.register(s, selectors.EVENT_READ, None)
                    self._pairs[client], self._pairs[upstream] = upstream, client
                    continue
                if stalled:
                    continue  # leave the bytes in the kernel buffers: a stalled network
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(sock)
                    continue
                other = self._pairs.get(sock)
                if other is None:
                    continue
                try:
                    other.setblocking(True)
                    other.sendall(data)
                    other.setblocking(False)
                except OSError:
                    self._drop(sock)
            if stalled:
                time.sleep(0.05)
        for sock in list(self._pairs):
            self._drop(sock)
        self._listener.close()


class IpCamera:
    """An MJPEG-over-HTTP camera on 127.0.0.1 serving rendered factory scenes at ``fps``.

    Each frame carries its sequence number in a corner (a few pixels), so every JPEG it sends is distinct:
    the cloud store keeps one sample per image, and a camera that repeated itself would look like lost
    samples. ``stall(s)`` holds the frames back for ``s`` seconds with the connection open; ``lose(s)`` closes
    the listener and every connection for ``s`` seconds, then serves again on the same port.
    """

    def __init__(self, fps: float = 4.0, size: Tuple[int, int] = (360, 640), scenes: int = 48, seed: int = 11) -> None:
        from agent.synthetic.render import render_frame

        self.interval = 1.0 / fps
        self.frames = [render_frame("factory", seed, i, size=size).image for i in range(scenes)]
        self.sequence = 0
        self._lock = threading.Lock()
        self._held_until = 0.0
        self.alive = threading.Event()
        self.port = free_port()
        self._server: Optional[socketserver.ThreadingTCPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._timer: Optional[threading.Timer] = None
        self.connections = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def next_jpeg(self) -> bytes:
        import cv2

        with self._lock:
            self.sequence += 1
            n = self.sequence
        image = self.frames[n % len(self.frames)].copy()
        for bit in range(32):  # the sequence number as 32 black/white 4x4 blocks in the top-left corner
            image[0:4, bit * 4 : bit * 4 + 4] = 255 if (n >> bit) & 1 else 0
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        return bytes(jpeg.tobytes())

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
                        if time.monotonic() < camera._held_until:
                            time.sleep(0.02)
                            continue
                        jpeg = camera.next_jpeg()
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                        self.wfile.write(head + jpeg + b"\r\n")
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
        self._thread = threading.Thread(target=self._server.serve_forever, name="ip-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def stall(self, seconds: float) -> None:
        self._held_until = time.monotonic() + seconds

    def lose(self, seconds: float) -> None:
        """Gone for ``seconds`` (refusing connections), then back on the same port."""
        self.stop()
        self._timer = threading.Timer(seconds, self.start)
        self._timer.daemon = True
        self._timer.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.stop()


class DiskFiller:
    """A ``size_mb`` tmpfs at ``path`` (needs root to mount; :attr:`available` says whether it could) that
    :meth:`fill` fills to the last byte with a ballast file for ``seconds``, then frees."""

    def __init__(self, path: Path, size_mb: int = 192) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "soak-disk", str(path)],
            check=False,
            capture_output=True,
            text=True,
        )
        self.available = result.returncode == 0
        self.why_not = "" if self.available else (result.stderr.strip() or f"mount exited {result.returncode}")
        self.ballast = path / "ballast.bin"
        self._timer: Optional[threading.Timer] = None
        self.fills = 0

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, seconds: float) -> int:
        """Fill the file system now; free it after ``seconds``. Returns the ballast's size in bytes."""
        if not self.available or self.ballast.exists():
            return 0
        size = self.free_bytes()
        with open(self.ballast, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError:
                pass  # what fitted is allocated: the disk is full either way
        while True:  # what the allocation's rounding left, byte by byte in 4 KiB pieces
            try:
                with open(self.ballast, "ab") as f:
                    f.write(b"\0" * 4096)
            except OSError:
                break
        self.fills += 1
        self._timer = threading.Timer(seconds, self.free)
        self._timer.daemon = True
        self._timer.start()
        return self.ballast.stat().st_size

    def free(self) -> None:
        try:
            self.ballast.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.free()
        if self.available:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


class WatchdogListener:
    """Receives the agent's sd_notify datagrams on a Unix socket; ``env`` is what the agent's environment
    needs (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``) for the agent to ping as it does under systemd."""

    def __init__(self, path: Path, interval_s: float = 10.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.5)
        self.messages: List[Tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog-listener", daemon=True)
        self._thread.start()

    @property
    def env(self) -> Dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(self.interval_s * 1e6))}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode("utf-8", "replace").splitlines():
                self.messages.append((time.monotonic(), line))

    def trips(self, lives: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
        """(start, gap seconds) of every gap longer than the interval between two watchdog pings, or after the
        last one, within one agent process's life (``lives``: its (start, end) monotonic times): what systemd
        would have killed and restarted it for."""
        pings = [t for t, line in self.messages if line == "WATCHDOG=1"]
        trips = []
        for start, end in lives:
            inside = [t for t in pings if start <= t <= end]
            if not inside:
                continue
            for a, b in zip(inside, [*inside[1:], end]):
                if b - a > self.interval_s:
                    trips.append((a, b - a))
        return trips

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
