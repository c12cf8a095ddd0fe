"""Helpers for the daemon tests: configs, an in-process daemon, a subprocess daemon, an MQTT collector."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt
import yaml

from agent.config import AgentConfig, load_config
from agent.daemon import Daemon
from agent.observability.sdnotify import SdNotifier
from agent.protocol.framing import decode_frame

REPO = Path(__file__).resolve().parents[3]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def synthetic_camera(
    name: str, seed: int = 1, fps: float = 5.0, width: int = 320, height: int = 192, **rules: Any
) -> Dict[str, Any]:
    camera: Dict[str, Any] = {
        "name": name,
        "fps_limit": fps,
        "source": {"type": "synthetic", "seed": seed, "width": width, "height": height, "fps": fps},
        "reconnect": {"initial_s": 0.1, "max_s": 0.5},
    }
    camera["rules"] = rules or {
        "alerts": [{"name": "any-part", "min_confidence": 0.3, "cooldown_s": 0.5}],
        "triage": {
            "random": {"probability": 0.0},
            "uncertainty": {"enabled": False},
            "inconsistency": {"enabled": False},
        },
    }
    return camera


def sampling_rules(per_minute: float = 6000, burst: int = 100, alerts: bool = True) -> Dict[str, Any]:
    """Every frame is a sample (random strategy at p=1), near-duplicates allowed; one alert rule."""
    return {
        "alerts": [{"name": "any-part", "min_confidence": 0.3, "cooldown_s": 0.5}] if alerts else [],
        "triage": {
            "random": {"probability": 1.0, "rate": {"per_minute": per_minute, "burst": burst}},
            "uncertainty": {"enabled": False},
            "inconsistency": {"enabled": False},
            "near_duplicate": {"enabled": False},
        },
    }


def config_dict(tmp: Path, port: int, model: Path, cameras: List[Dict[str, Any]], **sections: Any) -> Dict[str, Any]:
    data: Dict[str, Any] = {
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "site": "site1",
            "device": "dev1",
            "keepalive_s": 5,
            "connect_timeout_s": 2,
            "backoff": {"initial_s": 0.1, "max_s": 0.5},
        },
        "model": {"path": str(model), "backend": {"type": "onnxruntime", "intra_op_threads": 1}},
        "spool": {"path": str(tmp / "state" / "spool.sqlite3"), "synchronous": "NORMAL"},
        "daemon": {"state_dir": str(tmp / "state"), "status_interval_s": 0.25, "shutdown_timeout_s": 5},
        "logging": {"level": "warning"},
        "cameras": cameras,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def write_config(path: Path, data: Dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class InProcessDaemon:
    """A :class:`Daemon` on its own event loop in a thread (no signal handlers: not the main thread)."""

    def __init__(self, config_path: Path, notifier: Optional[SdNotifier] = None, **kwargs: Any) -> None:
        self.config_path = config_path
        self.config: AgentConfig = load_config(config_path, environ={})
        self.daemon = Daemon(self.config, config_path, notifier=notifier, install_signal_handlers=False, **kwargs)
        self.rc: Optional[int] = None
        self._thread = threading.Thread(target=self._run, name="test-daemon", daemon=True)

    def _run(self) -> None:
        self.rc = asyncio.run(self.daemon.run())

    def __enter__(self) -> InProcessDaemon:
        self._thread.start()
        wait_for(lambda: self.daemon.ready.is_set() or self.rc is not None, 30, "daemon ready")
        assert self.rc is None, f"daemon exited early with {self.rc}: {self.daemon.live.errors}"
        return self

    def stop(self, timeout: float = 15) -> int:
        self.daemon.request_stop("test")
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "daemon did not stop"
        assert self.rc is not None
        return self.rc

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.stop()

    def status(self) -> Dict[str, Any]:
        return self.daemon.status_document()


class DaemonProcess:
    """``python -m agent.daemon --config PATH`` as a child process."""

    def __init__(
        self, config_path: Path, env: Optional[Dict[str, str]] = None, preexec: Optional[Callable[[], None]] = None
    ) -> None:
        self.config_path = config_path
        environ = dict(os.environ)
        environ["PYTHONPATH"] = str(REPO)
        environ.update(env or {})
        self.log_path = config_path.with_suffix(".log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.daemon", "--config", str(config_path)],
            cwd=str(REPO),
            env=environ,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
        self.state_dir = Path(load_config(config_path, environ={}).daemon.state_dir)

    def status(self) -> Dict[str, Any]:
        try:
            return json.loads((self.state_dir / "status.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def wait_running(self, timeout: float = 30) -> None:
        def running() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.log()[-2000:]}")
            st = self.status()
            return st.get("state") == "running" and st.get("pid") == self.proc.pid

        wait_for(running, timeout, "daemon running")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> Tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


class Collector:
    """An MQTT subscriber recording (receive time, topic, payload); persistent session so it misses nothing
    queued for it while it was away (with a broker that keeps sessions)."""

    def __init__(self, port: int, topic: str = "edge/#", client_id: str = "test-collector") -> None:
        self.port = port
        self.messages: List[Tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((time.time(), message.topic, bytes(message.payload)))

    def on(self, suffix: str) -> List[Tuple[float, str, bytes]]:
        with self.lock:
            return [m for m in self.messages if m[1].endswith(suffix)]

    def ids(self, suffix: str) -> List[str]:
        """Message ids of alerts (JSON) or samples (framed) received, duplicates included."""
        out = []
        for _, _, payload in self.on(suffix):
            if payload.startswith(b"EVL1"):
                header, _ = decode_frame("t", payload, 1 << 20)
                out.append(json.loads(header)["id"])
            else:
                out.append(json.loads(payload)["id"])
        return out

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def notify_socket(path: Path) -> socket.socket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET (the fake at the systemd seam)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    return sock


def drain_notifications(sock: socket.socket, seconds: float) -> List[Tuple[float, str]]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        out.append((time.monotonic(), data.decode()))
    return out
