"""Shared builders for the link tests."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from agent.link import MqttConfig, MqttLink
from agent.protocol import DeviceStatus
from agent.spool import Spool, SpoolConfig

SITE = "site1"
DEVICE = "dev-a"


def status() -> DeviceStatus:
    return DeviceStatus(device=DEVICE, site=SITE, state="online", agent_version="0.1.0", ts=datetime.now(timezone.utc))


def make_config(port: int, **overrides: Any) -> MqttConfig:
    base: dict = {
        "host": "127.0.0.1",
        "port": port,
        "site": SITE,
        "device": DEVICE,
        "keepalive_s": 5,
        "connect_timeout_s": 3.0,
        "backoff": {"initial_s": 0.1, "max_s": 0.5, "jitter": 0.2},
    }
    base.update(overrides)
    return MqttConfig(**base)


def make_spool(tmp_path: Path, name: str = "spool.db", **kw: Any) -> Spool:
    return Spool(SpoolConfig(path=tmp_path / name, max_bytes=kw.pop("max_bytes", 256 << 20), **kw))


def make_link(tmp_path: Path, port: int, spool: Spool | None = None, **kw: Any) -> MqttLink:
    handlers = {k: kw.pop(k) for k in ("on_command", "on_push", "supervisor") if k in kw}
    return MqttLink(make_config(port, **kw), spool or make_spool(tmp_path), status, **handlers)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
