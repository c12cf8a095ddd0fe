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
    """The probation of the active release."""

    slot: str
    since: str
    starts: int = 0
    crashes: int = 0
    running: bool = False  # set at on_start, cleared by a clean shutdown: still set at the next start = crash


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
