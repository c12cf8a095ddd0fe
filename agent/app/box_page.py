"""The daemon's side of the box page (``agent/box_page``): what the page reads, each from its owner.

    state     the status document, built by the event loop (its owner) for each request; when the loop
              does not answer within STATE_TIMEOUT_S, status.json as the status task last wrote it
    preview   the rules thread's newest PreviewFrame of the camera (a reference it swaps), rendered here
    outputs   the output writer's RecentOutputs snapshot
    command   on the event loop: the same CommandHandler as MQTT commands (one at a time with them), and the
              reply also goes out on the reply topic through the spool, so the fleet sees what the page did

Every call comes from a console-http request thread. It is given what it reads (the live state, the output
writer, the status document's builder, the command path); it never sees the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import datetime, timezone
from typing import Any, Callable, Coroutine, Dict, List, Optional

import structlog
from pydantic import ValidationError

from agent.app.live import LiveState
from agent.app.pipeline import OutputWriter, PreviewFrame
from agent.app.status import assess, pid_alive, read_status
from agent.box_page.config import ConsoleConfig
from agent.box_page.preview import PreviewImage, PreviewRenderer
from agent.box_page.views import page_state
from agent.protocol.models import Command, CommandReply

__all__ = ["STATE_TIMEOUT_S", "BoxPageBackend"]

STATE_TIMEOUT_S = 2.0

log = structlog.get_logger("agent.box_page")


class BoxPageBackend:
    """The page's source (:class:`agent.box_page.server.BoxPageSource`) for the running daemon.

    Args:
        live: the daemon's changing state (the pipeline's previews, the configuration).
        config: the page's configuration.
        loop: the daemon's event loop (where ``document`` and ``command`` run).
        document: builds the status document (on the loop).
        writer: the output writer (its recent alerts and samples).
        command: answers a command like an MQTT one, and publishes the reply (on the loop).
    """

    def __init__(
        self,
        live: LiveState,
        config: ConsoleConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        document: Callable[[], Dict[str, Any]],
        writer: OutputWriter,
        command: Callable[[Command], Coroutine[Any, Any, CommandReply]],
    ) -> None:
        self._live = live
        self._config = config
        self._loop = loop
        self._document = document
        self._writer = writer
        self._command = command
        self.renderer = PreviewRenderer(
            self._newest, config.preview_fps, config.preview_width, config.preview_jpeg_quality
        )

    def _newest(self, camera: str) -> Optional[PreviewFrame]:
        pipeline = self._live.pipeline
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
        async def build() -> Dict[str, Any]:
            return self._document()

        alive: Optional[bool] = True
        try:
            document, source = self._in_loop(build, STATE_TIMEOUT_S), "live"
        except (concurrent.futures.TimeoutError, RuntimeError):  # the loop is busy, stuck or closed
            document, source = read_status(self._live.status_path), "file"
            alive = pid_alive(document.get("pid"))
        recent = self._writer.recent.snapshot
        health = assess(document, alive)
        try:
            return page_state(document, health, recent, source, self._config.preview_fps, self._ota())
        except ValidationError as exc:  # the server answers this request with a 500; the daemon goes on
            log.error("box_page_state_invalid", source=source, errors=exc.error_count(), detail=str(exc)[:2000])
            raise

    def _ota(self) -> Optional[Dict[str, Any]]:
        """The installer's state as ``edge-agent status`` reads it (from disk: the OTA worker owns the installer)."""
        ota = self._live.config.ota
        if ota is None:
            return None
        from agent.ota.installer import Installer

        try:
            return Installer(ota).status()
        except Exception as exc:  # unreadable state: shown, not fatal to the page
            return {"error": str(exc)}

    def cameras(self) -> List[str]:
        return self._live.enabled_cameras()

    def preview(self, camera: str) -> Optional[PreviewImage]:
        return self.renderer.image(camera)

    def output_jpeg(self, output_id: str) -> Optional[bytes]:
        found = self._writer.recent.find(output_id)
        return None if found is None else found.jpeg

    def command(self, command: Command) -> CommandReply:
        timeout = self._config.command_timeout_s
        try:
            reply: CommandReply = self._in_loop(lambda: self._command(command), timeout)
        except concurrent.futures.TimeoutError:
            return self._failure(command, "timeout", f"no reply within {timeout:.0f} s")
        except RuntimeError:  # the event loop is gone: the daemon is stopping
            return self._failure(command, "unavailable", "the daemon is stopping")
        return reply

    def _failure(self, command: Command, code: str, message: str) -> CommandReply:
        device = self._live.config.mqtt.device
        return CommandReply.failure(command.request_id, device, datetime.now(timezone.utc), code, message)
