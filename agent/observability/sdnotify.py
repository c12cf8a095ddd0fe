"""systemd notifications (``sd_notify``) with the stdlib ``socket`` module, and the watchdog gate.

``SdNotifier`` sends ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` and ``STATUS=...`` datagrams to
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Without the variable (not under
systemd) every call is a no-op. A send that fails is logged once and never raises: notifications must not
take the daemon down.

``WatchdogGate`` decides *whether* to ping: the inference loop calls :meth:`WatchdogGate.progress` each time
it completes an iteration, and a ping goes out only if progress was made since the last ping. A pipeline
stuck inside one inference call makes no progress, so pings stop and systemd's ``WatchdogSec=`` kills and
restarts the service, which is the point.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable, Mapping, Optional

import structlog

log = structlog.get_logger(__name__)


class SdNotifier:
    """Datagrams to ``$NOTIFY_SOCKET``; see the module docstring."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: Optional[str] = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval_s: Optional[float] = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1e6
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._failed = False
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send one notification; True when it was sent."""
        if self.address is None:
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(message.encode("utf-8"), self.address)
                self.sent += 1
                return True
            except OSError as exc:
                if not self._failed:
                    log.warning("sd_notify_failed", address=self.address, error=str(exc))
                    self._failed = True
                return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class WatchdogGate:
    """Ping systemd's watchdog at most every ``interval_s``, and only after the loop made progress.

    Args:
        notifier: where pings go.
        interval_s: the shortest time between pings (half of ``WatchdogSec`` is customary).
        clock: monotonic clock (tests).
    """

    def __init__(self, notifier: SdNotifier, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self._clock = clock
        self._last_ping = float("-inf")
        self._progress = False
        self.pings = 0

    def progress(self) -> bool:
        """Record that the loop completed an iteration; pings if due. Returns whether it pinged."""
        self._progress = True
        now = self._clock()
        if now - self._last_ping < self.interval_s:
            return False
        self._progress = False
        self._last_ping = now
        if self.notifier.watchdog():
            self.pings += 1
            return True
        return False
