"""MQTT commands -> what the box does about them -> one reply each (the ``commands`` task).

Every command the protocol defines (docs/PROTOCOL.md) is handled here and nowhere else; each reaches the
thread that owns what it changes: a flag window, a snapshot request or new thresholds are handed to the
inference thread (applied between frames; a threshold change is awaited so its reply says it is in force),
a rollback to the OTA worker. Nothing here writes pipeline or installer state itself.

It reads the daemon's :class:`~agent.app.live.LiveState` (the pipeline may come up later, a reload may change
the cameras) and holds the OTA service it hands rollbacks to; the box page's commands come through here too.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Optional, Set

import structlog

from agent.app.live import LiveState
from agent.core.triage import FlagWindow
from agent.ota.errors import OtaError
from agent.protocol.models import (
    Command,
    CommandReply,
    FlagWindowCommand,
    RequestSnapshotCommand,
    RollbackCommand,
    SetThresholdsCommand,
)

if TYPE_CHECKING:
    from agent.app.model_updates import ModelUpdateService

__all__ = ["COMMAND_APPLY_TIMEOUT_S", "CommandHandler"]

log = structlog.get_logger("agent.commands")

# a run-time change handed to the inference thread is applied between two frames: far below this
COMMAND_APPLY_TIMEOUT_S = 10.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CommandHandler:
    """Answers commands from ``live`` (read at each command: the pipeline may come up later); rollbacks go to
    ``updates`` (``None``: OTA is not configured)."""

    def __init__(self, live: LiveState, updates: Optional[ModelUpdateService]) -> None:
        self._live = live
        self._updates = updates
        self._one_at_a_time: Optional[asyncio.Lock] = None  # MQTT and box-page commands, in arrival order

    @property
    def device(self) -> str:
        return self._live.config.mqtt.device

    def _fail(self, command: Command, code: str, message: str) -> CommandReply:
        return CommandReply.failure(command.request_id, self.device, _now(), code, message)

    async def reply_to(self, command: Command) -> CommandReply:
        """The reply to ``command``; a bug in a handler becomes an ``internal`` failure reply, never silence."""
        if self._one_at_a_time is None:  # made on the loop (Python 3.8 binds a lock to the loop it is made on)
            self._one_at_a_time = asyncio.Lock()
        try:
            async with self._one_at_a_time:
                return await self.handle(command)
        except Exception as exc:
            log.exception("command_failed", type=command.type, request_id=command.request_id)
            return self._fail(command, "internal", f"{type(exc).__name__}: {exc}")

    async def handle(self, command: Command) -> CommandReply:
        live = self._live
        pipeline = live.pipeline
        if pipeline is None and not isinstance(command, RollbackCommand):
            return self._fail(command, "no_model", f"no model runs on this box: {live.model_error}")
        known = set(live.enabled_cameras())
        if isinstance(command, FlagWindowCommand):
            if command.camera not in known:
                return self._fail(command, "unknown_camera", f"no camera {command.camera!r}")
            try:
                window = FlagWindow(
                    command.camera, command.start.timestamp(), command.end.timestamp(), command.note or ""
                )
            except ValueError as exc:
                return self._fail(command, "invalid", str(exc))
            assert pipeline is not None
            pipeline.add_flag_window(window)
            return CommandReply.ok(command.request_id, self.device, _now(), {"camera": command.camera})
        if isinstance(command, RequestSnapshotCommand):
            if command.camera not in known:
                return self._fail(command, "unknown_camera", f"no camera {command.camera!r}")
            assert pipeline is not None
            pipeline.request_snapshot(command.camera, command.request_id)
            return CommandReply.ok(command.request_id, self.device, _now(), {"camera": command.camera})
        if isinstance(command, SetThresholdsCommand):
            return await self._set_thresholds(command, known)
        if isinstance(command, RollbackCommand):
            return await self._rollback(command)
        return self._fail(command, "unsupported", f"command {command.type!r} is not handled here")

    async def _set_thresholds(self, command: SetThresholdsCommand, known: Set[str]) -> CommandReply:
        """Handed to the inference thread, which owns the rules and applies the change between frames; the
        reply waits for it (commands are handled one at a time, so the next one sees this one applied)."""
        pipeline = self._live.pipeline
        assert pipeline is not None
        if command.camera is not None and command.camera not in known:
            return self._fail(command, "unknown_camera", f"no camera {command.camera!r}")
        targets = [name for name in self._live.enabled_cameras() if command.camera in (None, name)]
        applied = pipeline.update_thresholds(targets, dict(command.thresholds))
        try:
            await asyncio.wait_for(asyncio.wrap_future(applied), COMMAND_APPLY_TIMEOUT_S)
        except (KeyError, ValueError) as exc:
            return self._fail(command, "invalid", str(exc).strip('"'))
        except asyncio.TimeoutError:
            return self._fail(
                command, "timeout", f"the inference thread did not apply it within {COMMAND_APPLY_TIMEOUT_S:.0f} s"
            )
        return CommandReply.ok(command.request_id, self.device, _now(), {"applied": len(command.thresholds)})

    async def _rollback(self, command: RollbackCommand) -> CommandReply:
        updates = self._updates
        if updates is None:
            return self._fail(command, "unsupported", "OTA is not configured")
        guard = (command.if_active.name, command.if_active.counter) if command.if_active else None
        try:
            record = await updates.rollback(command.reason or "command", guard)
        except OtaError as exc:
            return self._fail(command, "rollback_failed", str(exc))
        if record is None:  # the named release is not active (any more): nothing to do
            active = updates.active_release()
            now_active = f"{active.name} {active.version}" if active else None
            return CommandReply.ok(
                command.request_id, self.device, _now(), {"active": now_active, "rolled_back": False}
            )
        return CommandReply.ok(
            command.request_id, self.device, _now(), {"active": f"{record.name} {record.version}", "rolled_back": True}
        )
