"""A real mosquitto broker for tests: free 127.0.0.1 port, temporary config, stop / restart on the same port.

    broker = MosquittoBroker(tmp_path)           # plain listener, anonymous
    broker.start()
    ...
    broker.stop()                                # SIGTERM, waits; persistence (if on) is saved
    broker.start(persistence=False)              # same port again, fresh state
    broker.close()

Extra configuration (auth, ACL, TLS listeners) goes in ``extra_conf`` or ``conf_text`` (a complete file
with ``{port}`` and ``{dir}`` placeholders).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)


class MosquittoBroker:
    """One mosquitto process under test control."""

    def __init__(
        self,
        workdir: Path,
        port: Optional[int] = None,
        persistence: bool = False,
        extra_conf: str = "",
        conf_text: Optional[str] = None,
    ) -> None:
        if not Path(MOSQUITTO).exists():
            raise FileNotFoundError(f"mosquitto not installed at {MOSQUITTO}")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.conf_text = conf_text
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = self.dir / "mosquitto.log"
        self.starts = 0

    @property
    def conf_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    def _write_conf(self) -> None:
        if self.conf_text is not None:
            text = self.conf_text.format(port=self.port, dir=self.dir)
        else:
            lines = [
                f"listener {self.port} 127.0.0.1",
                "allow_anonymous true",
                f"persistence {'true' if self.persistence else 'false'}",
                f"persistence_location {self.dir}/",
                "persistence_file mosquitto.db",
                # run as root, mosquitto drops to user 'mosquitto', which cannot write our temp dir
                *(["user root"] if os.geteuid() == 0 else []),
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "max_inflight_messages 0",
                "max_queued_messages 100000",
            ]
            text = "\n".join(lines) + "\n" + self.extra_conf + "\n"
        self.conf_path.write_text(text)

    def start(self, persistence: Optional[bool] = None, timeout: float = 10.0) -> MosquittoBroker:
        """Start (or restart after :meth:`stop`) on the same port; returns when it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("broker already running")
        if persistence is not None:
            self.persistence = persistence
        if not self.persistence:
            db = self.dir / "mosquitto.db"
            if db.exists():
                db.unlink()
        self._write_conf()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)], stdout=log, stderr=log)
        finally:
            log.close()
        try:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    wait_port(self.port, timeout=0.2)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
        except BaseException:
            self.stop()
            raise
        self.starts += 1
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (mosquitto saves its persistence file on the way out)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies without saving anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self, persistence: Optional[bool] = None, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start(persistence=persistence)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Collector:
    """A plain paho client for tests: subscribes, collects messages, publishes (MQTT 5 by default)."""

    def __init__(
        self,
        port: int,
        client_id: str = "",
        protocol: int = 5,
        host: str = "127.0.0.1",
        username: Optional[str] = None,
        password: Optional[str] = None,
        tls_context: object = None,
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.messages: List[Tuple[str, bytes, bool, Dict[str, str]]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_context is not None:
            self.client.tls_set_context(tls_context)  # type: ignore[arg-type]
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, message: object) -> None:
        props = getattr(message, "properties", None)
        user = dict(getattr(props, "UserProperty", []) or []) if props is not None else {}
        with self._cond:
            self.messages.append(
                (message.topic, bytes(message.payload), bool(message.retain), user)  # type: ignore[attr-defined]
            )
            self._cond.notify_all()

    def subscribe(self, topic: str, qos: int = 1) -> Collector:
        self._subscribed.clear()
        self.client.subscribe(topic, qos)
        if not self._subscribed.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def on(self, topic: str) -> List[bytes]:
        with self._cond:
            return [p for t, p, _, _ in self.messages if t == topic]

    def wait_for(
        self,
        predicate: Callable[[List[Tuple[str, bytes, bool, Dict[str, str]]]], bool],
        timeout: float = 10.0,
    ) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
