"""The site around the QEMU box, on the test host, reached by the box only through QEMU's guestfwd (unix sockets,
no host port): the site broker (mosquitto), a recorder of every message the broker accepted from the box, and a
release server (the TUF repository over HTTP). They outlive the box's power cuts, as a site's broker and a
release host do, so what the broker acknowledged is known whatever happens to the box.
"""

from __future__ import annotations

import http.server
import signal
import socketserver
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class SiteBroker:
    """mosquitto listening on a unix socket only (``listener 0 PATH``), anonymous, no persistence needed: it is
    never cut."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "broker.sock"
        self.log = directory / "mosquitto.log"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "mosquitto.conf").write_text(
            # root: its socket and log live in the test's own (root-only) directory, which the mosquitto user
            # it would drop to cannot enter
            f"user root\nlistener 0 {self.socket}\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.log}\nlog_type error\nlog_type warning\nlog_type notice\n"
        )
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.directory / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"mosquitto did not start: {self.log.read_text() if self.log.exists() else ''}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is acknowledged, as a hung broker."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self, client_id: str, clean: bool = True) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            transport="unix",
        )
        properties = None
        if not clean:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        # the port is ignored on a unix socket (paho refuses 0)
        client.connect(str(self.socket), 1, keepalive=30, clean_start=clean, properties=properties)
        return client


class Recorder:
    """Every message the broker accepted on ``edge/#``: a persistent QoS 1 session, so none is missed while the
    recorder is busy. ``ids(kind)``: the message ids (the agent's user property ``id``) by topic suffix."""

    def __init__(self, broker: SiteBroker) -> None:
        self.messages: List[Tuple[str, Optional[str], float]] = []
        self._lock = threading.Lock()
        self.client = broker.client("evl-system-recorder", clean=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("edge/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        message_id = None
        for key, value in getattr(message.properties, "UserProperty", None) or []:
            if key == "id":
                message_id = value
        with self._lock:
            self.messages.append((message.topic, message_id, time.monotonic()))

    def ids(self, suffix: str = "") -> List[str]:
        with self._lock:
            return [m for t, m, _ in self.messages if m is not None and t.endswith(suffix)]

    def mark(self) -> int:
        """The number of messages recorded so far (``ids_since``)."""
        with self._lock:
            return len(self.messages)

    def ids_since(self, mark: int) -> List[str]:
        with self._lock:
            return [m for _, m, _ in self.messages[mark:] if m is not None]

    def ids_between(self, start: int, end: int) -> List[str]:
        with self._lock:
            return [m for _, m, _ in self.messages[start:end] if m is not None]

    def count(self, suffix: str = "") -> int:
        return len(self.ids(suffix))

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ReleaseServer:
    """A static HTTP server for the release repository, on a unix socket. ``rate`` (bytes/s, 0: unlimited)
    slows target downloads so that a power cut can land in the middle of one."""

    def __init__(self, root: Path, socket_path: Path) -> None:
        self.root = root
        self.socket = socket_path
        self.rate = 0
        self.requests: List[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(server.root), **kwargs)

            def address_string(self) -> str:
                return "box"

            def log_message(self, format: str, *args: Any) -> None:
                server.requests.append(format % args)

            def copyfile(self, source: Any, outputfile: Any) -> None:
                if not server.rate or "/targets/" not in self.path:
                    super().copyfile(source, outputfile)
                    return
                block = max(1024, server.rate // 10)
                while True:
                    data = source.read(block)
                    if not data:
                        return
                    outputfile.write(data)
                    outputfile.flush()
                    time.sleep(len(data) / server.rate)

        self.socket.unlink(missing_ok=True)
        self.httpd = _UnixHTTPServer(str(self.socket), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
