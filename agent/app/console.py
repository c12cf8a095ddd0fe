"""The daemon's side of the box page (``agent/console``): what the page reads, each from its owner.

    state     the status document, built by the event loop (its owner) for each request; when the loop
              does not answer within STATE_TIMEOUT_S, status.json as the status task last wrote it
    preview   the rules thread's newest PreviewFrame of the camera (a reference it swaps), rendered here
    outputs   the output writer's RecentOutputs snapshot
    command   on the event loop: the same CommandHandler as MQTT commands (one at a time with them), and the
              reply also goes out on the reply topic through the spool, so the fleet sees what the page did

Every call comes from a console-http request thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Dict, List, Optional

from agent.app.pipeline import PreviewFrame
from agent.app.status import pid_alive, read_status
from agent.console.config import ConsoleConfig
from agent.console.preview import PreviewImage, PreviewRenderer
from agent.console.views import page_state
from agent.protocol.models import Command, CommandReply

if TYPE_CHECKING:
    from agent.app.daemon import Daemon

__all__ = ["STATE_TIMEOUT_S", "DaemonConsole"]

STATE_TIMEOUT_S = 2.0


class DaemonConsole:
    def __init__(self, daemon: Daemon, config: ConsoleConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._daemon = daemon
        self._config = config
        self._loop = loop
        self.renderer = PreviewRenderer(
            self._newest, config.preview_fps, config.preview_width, config.preview_jpeg_quality
        )

    def _newest(self, camera: str) -> Optional[PreviewFrame]:
        pipeline = self._daemon.pipeline
        runtime = None if pipeline is None else pipeline.cameras.get(camera)
        return None if runtime is None else runtime.preview

    def _in_loop(self, make: Callable[[], Coroutine[Any, Any, Any]], timeout: float) -> Any:
        """``make()`` run on the daemon's event loop; RuntimeError when the loop is gone."""
        coroutine = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # closed: the coroutine will never run
            coroutine.close()
            raise
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # not wanted any more: the loop drops it when it gets to it
            raise

    def state(self) -> Dict[str, Any]:
        d = self._daemon

        async def build() -> Dict[str, Any]:
            return d.status_document()

        alive: Optional[bool] = True
        try:
            document, source = self._in_loop(build, STATE_TIMEOUT_S), "live"
        except (concurrent.futures.TimeoutError, RuntimeError):  # the loop is busy, stuck or closed
            document, source = read_status(d.status_path), "file"
            alive = pid_alive(document.get("pid"))
        writer = d.writer
        recent = writer.recent.snapshot if writer is not None else ()
        return page_state(document, recent, alive, source, self._config.preview_fps, self._ota())

    def _ota(self) -> Optional[Dict[str, Any]]:
        """The installer's state as ``edge-agent status`` reads it (from disk: the OTA worker owns the installer)."""
        ota = self._daemon.config.ota
        if ota is None:
            return None
        from agent.ota.installer import Installer

        try:
            return Installer(ota).status()
        except Exception as exc:  # unreadable state: shown, not fatal to the page
            return {"error": str(exc)}

    def cameras(self) -> List[str]:
        return [c.name for c in self._daemon.config.cameras if c.enabled]

    def preview(self, camera: str) -> Optional[PreviewImage]:
        return self.renderer.image(camera)

    def output_jpeg(self, output_id: str) -> Optional[bytes]:
        writer = self._daemon.writer
        found = None if writer is None else writer.recent.find(output_id)
        return None if found is None else found.jpeg

    def command(self, command: Command) -> CommandReply:
        timeout = self._config.command_timeout_s
        try:
            reply: CommandReply = self._in_loop(lambda: self._daemon.console_command(command), timeout)
        except concurrent.futures.TimeoutError:
            return self._failure(command, "timeout", f"no reply within {timeout:.0f} s")
        except RuntimeError:  # the event loop is gone: the daemon is stopping
            return self._failure(command, "unavailable", "the daemon is stopping")
        return reply

    def _failure(self, command: Command, code: str, message: str) -> CommandReply:
        device = self._daemon.config.mqtt.device
        return CommandReply.failure(command.request_id, device, datetime.now(timezone.utc), code, message)
