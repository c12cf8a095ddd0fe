"""The installer's persisted state: one JSON file, replaced atomically (temp + fsync + rename) at every change.

It is the journal and the ``active`` pointer at once: whatever instant the power goes, the file on disk is
either the state before a step or the state after it, and :meth:`Installer.on_start` knows what to do from
either.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.ota.errors import StateError
from agent.ota.fsutil import atomic_write_bytes

STATE_VERSION = 1


class Phase(str, enum.Enum):
    """Steps of an install attempt before the switch (``pending.phase``)."""

    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    INSTALLED = "installed"
    HEALTH_CHECKED = "health_checked"


@dataclass
class SlotRecord:
    """An installed release: its slot (content address = SHA-256 of the manifest) and identity."""

    slot: str
    name: str
    version: str
    counter: int
    channel: str
    model: str  # path of the served model file, relative to the slot directory
    health_passed: bool = False

    def ref(self) -> Dict[str, Any]:
        return {"name": self.name, "version": self.version, "counter": self.counter}


@dataclass
class Pending:
    """An install attempt that has not switched yet."""

    phase: str
    slot: Optional[str] = None
    release: Optional[Dict[str, Any]] = None
    source: str = ""
    started: str = ""


@dataclass
class Trial:
    """The probation of the active release (the rules are :mod:`agent.ota.probation`)."""

    slot: str
    since: str  # when it was switched to (by whichever process installed it)
    starts: int = 0  # daemon runs that served it
    crashes: int = 0
    # set when a daemon starts serving it, cleared by a clean shutdown: still set at the next start = an
    # unclean end (a crash on the same boot, a power loss on another)
    running: bool = False
    boot_id: Optional[str] = None  # the kernel boot on which ``running`` was set (None: unknown)
    power_losses: int = 0  # unclean ends on another boot: power cut, hard reset (not counted as crashes)
    serving_since: Optional[str] = None  # when the running daemon began serving it (None: not served now)
    served_s: float = 0.0  # probation served by earlier runs that ended cleanly


@dataclass
class Queued:
    """A release verified while another was on probation, kept on the box until that trial ends (``ota install``
    of a USB bundle during probation). It is verified again, against the floor of that time, when installed."""

    slot: str  # SHA-256 of its manifest: its slot once installed
    release: Dict[str, Any]  # name, version, counter, from the verified manifest
    bundle: str  # its copy under <state_dir>/queue/ (a directory or a .tar)
    source: str = ""  # where it was installed from (the drive's path)
    queued_at: str = ""
    attempts: int = 0  # install attempts begun: one that a kill interrupted counts too


@dataclass
class InstallState:
    floor: int = 0
    active: Optional[SlotRecord] = None
    previous: Optional[SlotRecord] = None
    known_good: Optional[SlotRecord] = None
    pending: Optional[Pending] = None
    trial: Optional[Trial] = None
    bad: List[str] = field(default_factory=list)
    version: int = STATE_VERSION
    # the last attempt's outcome, for `ota status`: kind, release, reason, detail, at (absent in older files)
    last: Optional[Dict[str, Any]] = None
    queued: Optional[Queued] = None  # absent in older files

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> InstallState:
        try:
            raw = json.loads(data.decode("utf-8"))
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"state version {raw.get('version')}")

            def slot(v: Any) -> Optional[SlotRecord]:
                return None if v is None else SlotRecord(**v)

            return cls(
                floor=int(raw["floor"]),
                active=slot(raw["active"]),
                previous=slot(raw["previous"]),
                known_good=slot(raw["known_good"]),
                pending=None if raw["pending"] is None else Pending(**raw["pending"]),
                trial=None if raw["trial"] is None else Trial(**raw["trial"]),
                bad=[str(b) for b in raw.get("bad", [])],
                last=raw["last"] if isinstance(raw.get("last"), dict) else None,
                queued=None if raw.get("queued") is None else Queued(**raw["queued"]),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise StateError(f"install state unreadable: {exc}") from exc

    def slots_in_use(self) -> List[str]:
        out = [r.slot for r in (self.active, self.previous, self.known_good) if r is not None]
        if self.pending is not None and self.pending.slot:
            out.append(self.pending.slot)
        return out


class StateFile:
    """Load / store :class:`InstallState` at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> InstallState:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return InstallState()
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from exc
        return InstallState.from_json(data)

    def store(self, state: InstallState) -> None:
        atomic_write_bytes(self.path, state.to_json())


def utcnow() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()
