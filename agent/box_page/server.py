"""The box page's server: a :class:`~agent.web.server.WebServer` with this route table over a
:class:`BoxPageSource`.

Routes (behind the access rule, ``agent/web/access.py``)::

    GET  /                         the page (static/box.html, box.js; pages.css, pages.js of agent/web/static:
                                   no outside resources)
    GET  /api/state                page_state(): status document, health, recent alerts and samples
    GET  /api/preview/<camera>.jpg the annotated preview (X-Frame-Index, X-Captured, X-Detections headers)
    GET  /api/outputs/<id>.jpg     a recent alert's snapshot or sample's image
    POST /api/commands             a button (agent.web.forms.command_payload) -> the daemon's command handler

What the page reads comes from the daemon (:class:`BoxPageSource`), never from the broker, so it works while
the box is offline.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import structlog
from pydantic import ValidationError
from typing_extensions import Protocol

from agent.box_page.config import ConsoleConfig
from agent.box_page.preview import PreviewImage
from agent.protocol.config import ProtocolLimits
from agent.protocol.errors import ProtocolError
from agent.protocol.models import Command, CommandReply
from agent.protocol.parse import encode_json, parse_command
from agent.threads import Supervisor
from agent.web.forms import CommandFormError, command_payload, encode_payload
from agent.web.server import Access, HttpError, Request, Response, Route, WebServer, json_response, page_files

__all__ = ["STATIC", "BoxPageServer", "BoxPageSource"]

log = structlog.get_logger("agent.box_page")

STATIC = Path(__file__).parent / "static"


class BoxPageSource(Protocol):
    """What the page reads from and sends to the daemon (the daemon's side: ``agent.app.box_page.BoxPageBackend``)."""

    def state(self) -> Dict[str, Any]: ...

    def cameras(self) -> List[str]: ...

    def preview(self, camera: str) -> Optional[PreviewImage]: ...

    def output_jpeg(self, output_id: str) -> Optional[bytes]: ...

    def command(self, command: Command) -> CommandReply: ...


class BoxPageServer(WebServer):
    """Serves ``source`` on ``config.host:config.port`` from the ``console-http`` worker."""

    def __init__(
        self,
        config: ConsoleConfig,
        source: BoxPageSource,
        command_topic: str,
        limits: Optional[ProtocolLimits] = None,
        supervisor: Optional[Supervisor] = None,
    ) -> None:
        self.config = config
        self.source = source
        self.command_topic = command_topic
        self.limits = limits or ProtocolLimits()
        routes = [
            *page_files(STATIC / "box.html"),
            Route("GET", "/api/state", lambda request: json_response(self.source.state())),
            Route("GET", r"^/api/preview/([A-Za-z0-9_.:-]{1,128})\.jpg$", self._preview),
            Route("GET", r"^/api/outputs/([0-9a-f]{32})\.jpg$", self._output),
            Route("POST", "/api/commands", self._command),
        ]
        access = Access(config.username, config.password)
        super().__init__("console-http", config.host, config.port, routes, access, supervisor)

    def _preview(self, request: Request) -> Response:
        camera = request.params[0]
        if camera not in self.source.cameras():
            raise HttpError(404, f"no camera {camera!r}")
        image = self.source.preview(camera)
        if image is None:
            raise HttpError(503, f"camera {camera!r} has no processed frame yet")
        captured = datetime.fromtimestamp(image.captured_wall, timezone.utc).isoformat()
        headers = (
            ("X-Frame-Index", str(image.frame_index)),
            ("X-Captured", captured),
            ("X-Detections", str(image.detections)),
        )
        return Response(200, "image/jpeg", image.jpeg, headers)

    def _output(self, request: Request) -> Response:
        jpeg = self.source.output_jpeg(request.params[0])
        if jpeg is None:
            raise HttpError(404, "no such recent alert or sample (only the last few are kept)")
        return Response(200, "image/jpeg", jpeg)

    def _command(self, request: Request) -> Response:
        request_id = f"console-{uuid.uuid4().hex[:16]}"
        try:
            payload = command_payload(request.form, self.source.cameras(), datetime.now(timezone.utc), request_id)
            # the MQTT parser itself: a console command is valid exactly when the same MQTT message would be
            command = parse_command(self.command_topic, encode_payload(payload), self.limits)
        except (CommandFormError, ProtocolError, ValidationError) as exc:
            raise HttpError(400, str(exc)) from None
        log.info("console_command", type=command.type, request_id=request_id, peer=request.peer)
        return Response(200, "application/json", encode_json(self.source.command(command)))
