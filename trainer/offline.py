"""Run Ultralytics fully offline: no hub, no telemetry, no font downloads, and proof that nothing tried.

``offline_environment()`` sets Ultralytics' offline switches, gives it a private config directory with the
fonts it would otherwise download (matplotlib's DejaVu Sans under the names it asks for), and guards the
socket layer: any connection to a non-loopback address raises :class:`NetworkAccessError` at once and is
recorded. Leaving the context raises if anything tried, so a silent fallback inside a library cannot
hide a network dependency. Loopback stays open: DDP rendezvous uses it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional


class NetworkAccessError(ConnectionError):
    """Something tried to reach the network during an offline run."""

    def __init__(self, target: str) -> None:
        super().__init__(f"offline run: refused network access to {target}")
        self.target = target


def _is_loopback(host: Any) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def prepare_config_dir(config_dir: Path) -> Path:
    """Create Ultralytics' config dir with settings that keep it offline and the fonts it looks for."""
    config_dir.mkdir(parents=True, exist_ok=True)
    from matplotlib import font_manager  # noqa: PLC0415 (matplotlib: trainer extra only, slow to import)

    dejavu = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))
    fonts_dir = config_dir / "Ultralytics"  # Ultralytics' USER_CONFIG_DIR is $YOLO_CONFIG_DIR/Ultralytics
    fonts_dir.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = fonts_dir / name
        if not target.exists() and dejavu.is_file():
            shutil.copyfile(dejavu, target)
    return config_dir


@contextlib.contextmanager
def offline_environment(config_dir: Optional[Path] = None, strict: bool = True) -> Iterator[List[str]]:
    """Context in which Ultralytics runs offline; yields the list of refused network attempts."""
    attempts: List[str] = []
    config_dir = config_dir or Path(
        os.environ.get("EDGE_TRAINER_YOLO_DIR", Path(tempfile.gettempdir()) / "edge-trainer-yolo")
    )
    prepare_config_dir(config_dir)
    saved = {k: os.environ.get(k) for k in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "YOLO_VERBOSE")}
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def refuse(target: str) -> None:
        attempts.append(target)
        raise NetworkAccessError(target)

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            refuse(f"{address[0]}:{address[1]}")
        return original_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            refuse(f"{address[0]}:{address[1]}")
        return original_connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host) and not _is_ip(host):
            refuse(f"DNS lookup of {host}")
        return original_getaddrinfo(host, *args, **kwargs)

    # typeshed's signatures name the address types; the guards take and pass on any address
    socket.socket.connect = guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = guarded_getaddrinfo
    try:
        _disable_ultralytics_online_features()
        yield attempts
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = original_getaddrinfo
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if strict and attempts:
        raise NetworkAccessError(", ".join(sorted(set(attempts))))


def _is_ip(host: Any) -> bool:
    try:
        ipaddress.ip_address(str(host))
        return True
    except ValueError:
        return False


def _disable_ultralytics_online_features() -> None:
    """Turn off hub sync/telemetry in Ultralytics' settings if it is already imported or importable."""
    try:
        from ultralytics.utils import SETTINGS  # noqa: PLC0415 (Ultralytics (torch): trainer extra only, seconds to import)
    except Exception:  # pragma: no cover - ultralytics absent: nothing to disable
        return
    with contextlib.suppress(Exception):
        SETTINGS.update({"sync": False, "hub": False} if "hub" in SETTINGS else {"sync": False})
