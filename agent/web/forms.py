"""The buttons of both pages as MQTT commands (pure): a form in, the JSON of a command out.

:func:`command_payload` turns a button press into the JSON of an MQTT command, which the server then parses
with the MQTT parser itself (``agent.protocol.parse.parse_command``): the box page hands it to the daemon's
command handler, the fleet pages publish it to the device over the site broker. Either page can do exactly
what the command set allows and nothing else.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Dict, Mapping, Optional, Sequence

__all__ = ["CONSOLE_COMMANDS", "FLAG_MAX_S", "CommandFormError", "command_payload", "encode_payload"]

# the buttons: a subset of docs/PROTOCOL.md's command set (set_thresholds and ping stay MQTT-only)
CONSOLE_COMMANDS = ("flag_window", "request_snapshot", "rollback")
FLAG_MAX_S = 3600


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
