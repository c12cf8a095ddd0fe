"""What the box page shows and sends, as pure functions: JSON in, JSON out (no I/O, no threads).

:func:`page_state` is the document behind ``GET /api/state``: the daemon's status document (exactly what
``edge-agent status`` reads), its health verdict, and the recent alerts and samples. :func:`command_payload`
turns a button press into the JSON of an MQTT command, which the server then parses with the MQTT parser
itself (``agent.protocol.parse.parse_command``) and hands to the daemon's command handler: the page can do
exactly what the command set allows and nothing else.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple

__all__ = ["CONSOLE_COMMANDS", "FLAG_MAX_S", "CommandFormError", "RecentItem", "command_payload", "page_state"]

# the buttons: a subset of docs/PROTOCOL.md's command set (set_thresholds and ping stay MQTT-only)
CONSOLE_COMMANDS = ("flag_window", "request_snapshot", "rollback")
FLAG_MAX_S = 3600


class RecentItem(Protocol):
    """An alert or sample the box produced lately (the output writer keeps them:
    ``agent.app.pipeline.RecentOutput``). ``jpeg`` is ``None`` when the alert went out without a snapshot."""

    @property
    def kind(self) -> str: ...  # "alert" | "sample"

    @property
    def id(self) -> str: ...

    @property
    def camera(self) -> str: ...

    @property
    def at(self) -> float: ...  # wall time of the frame

    @property
    def what(self) -> str: ...

    @property
    def detail(self) -> str: ...

    @property
    def jpeg(self) -> Optional[bytes]: ...


class CommandFormError(ValueError):
    """A button's form cannot become a command (unknown type, camera, bad seconds)."""


def _text(form: Mapping[str, Any], key: str, limit: int) -> Optional[str]:
    value = form.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CommandFormError(f"{key}: a string is needed")
    return value[:limit]


def command_payload(form: Mapping[str, Any], cameras: Sequence[str], now: datetime, request_id: str) -> Dict[str, Any]:
    """The MQTT command for a console form::

        {"type": "flag_window", "camera": "dock", "seconds": 30, "note": "..."}  -> the next 30 s flagged
        {"type": "request_snapshot", "camera": "dock"}
        {"type": "rollback", "reason": "..."}

    A flag window starts now: the box keeps no history of frames it has processed (a minute of 1080p frames
    is 360 MB), so only frames still to come can be sampled. The operator flags while the misdetection is on
    screen, as a PLC does while a reject gate is open.
    """
    kind = form.get("type")
    if kind not in CONSOLE_COMMANDS:
        raise CommandFormError(f"type must be one of {', '.join(CONSOLE_COMMANDS)}")
    payload: Dict[str, Any] = {"type": kind, "request_id": request_id, "sent_at": now.isoformat()}
    if kind in ("flag_window", "request_snapshot"):
        camera = form.get("camera")
        if camera not in cameras:
            raise CommandFormError(f"camera: one of {', '.join(cameras) or '(no camera runs)'}")
        payload["camera"] = camera
    if kind == "flag_window":
        seconds = form.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= FLAG_MAX_S:
            raise CommandFormError(f"seconds: a number in (0, {FLAG_MAX_S}]")
        payload["start"] = now.isoformat()
        payload["end"] = (now + timedelta(seconds=float(seconds))).isoformat()
        note = _text(form, "note", 1000)
        payload["note"] = f"console: {note}" if note else "console"
    if kind == "rollback":
        reason = _text(form, "reason", 1000)
        payload["reason"] = f"console: {reason}" if reason else "console"
    return payload


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _recent(outputs: Sequence[RecentItem], kind: str) -> List[Dict[str, Any]]:
    return [
        {
            "id": o.id,
            "camera": o.camera,
            "at": datetime.fromtimestamp(o.at, timezone.utc).isoformat(),
            "what": o.what,
            "detail": o.detail,
            "image": f"/api/outputs/{o.id}.jpg" if o.jpeg is not None else None,
        }
        for o in reversed(outputs)
        if o.kind == kind
    ]


def page_state(
    status: Dict[str, Any],
    health: Tuple[int, List[str]],
    recent: Sequence[RecentItem],
    source: str,
    preview_fps: float,
    ota: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The page's document. ``health`` is the verdict on ``status`` that ``edge-agent status`` gives (its exit
    code and problems: ``agent.app.status.assess``). ``source`` says where ``status`` came from: ``"live"``
    (built by the daemon's event loop for this request) or ``"file"`` (status.json, when the loop did not
    answer in time); ``ota`` is the installer's own status (active release, probation, floor), read from its
    state on disk."""
    code, problems = health
    return {
        "status": status,
        "health": {
            "code": code,
            "verdict": ("healthy", "degraded", "no status", "not running")[code],
            "problems": problems,
        },
        "source": source,
        "ota": ota,
        "alerts": _recent(recent, "alert"),
        "samples": _recent(recent, "sample"),
        "commands": list(CONSOLE_COMMANDS),
        "preview_fps": preview_fps,
    }
