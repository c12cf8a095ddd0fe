"""The fleet pages' server: a :class:`~agent.web.server.WebServer` with this route table over :class:`FleetData`
(behind the same access rule as the box page: agent/web/access.py).

GET  /                                    the pages (static/fleet.html, fleet.js; pages.css and pages.js of
                                          agent/web/static, shared with the box page)
GET  /api/fleet?site=&group=&version=     devices, filtered, with the values each filter can take
GET  /api/rollouts                        the current rollout (stages, devices, signals, halt) and earlier ones
POST /api/rollouts/promote  {"force": false}
POST /api/rollouts/halt     {"reason": "..."}  (a reason is required: it is what the devices are told)
GET  /api/rounds                          every round's report, the learning curve
GET  /api/rounds/<id>/<plot>.png          a round's plot
GET  /api/samples?device=&camera=&reason=&label_state=&before=   a page of samples, newest first
GET  /api/samples/<sid>.jpg               a sample's image
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import structlog

from agent.protocol.errors import ProtocolError
from agent.web.forms import CommandFormError
from agent.web.server import Access, HttpError, Request, Response, Route, WebServer, json_response, page_files
from trainer.fleet_pages.config import CloudConsoleConfig
from trainer.fleet_pages.data import FleetData, NotFound
from trainer.release import PushError
from trainer.rollout import RolloutError
from trainer.store import StoreError

__all__ = ["FleetPagesServer"]

log = structlog.get_logger("trainer.fleet_pages")

STATIC = Path(__file__).parent / "static"
_SAMPLE_FILTERS = ("device", "camera", "reason", "label_state")


class FleetPagesServer(WebServer):
    def __init__(self, config: CloudConsoleConfig, data: FleetData) -> None:
        self.data = data
        routes = [
            *page_files(STATIC / "fleet.html"),
            Route("GET", "/api/fleet", self._read(self._fleet)),
            Route("GET", "/api/rollouts", self._read(lambda request: json_response(self.data.rollouts()))),
            Route("GET", "/api/rounds", self._read(lambda request: json_response(self.data.rounds()))),
            Route("GET", "/api/samples", self._read(self._samples)),
            Route("GET", r"^/api/rounds/([A-Za-z0-9_.-]{1,100})/([A-Za-z0-9_-]{1,64}\.png)$", self._read(self._plot)),
            Route("GET", r"^/api/samples/([0-9]{1,18})\.jpg$", self._read(self._image)),
            Route("POST", r"^/api/devices/([A-Za-z0-9_.:-]{1,128})/commands$", self._act(self._command)),
            Route("POST", "/api/rollouts/promote", self._act(self._promote)),
            Route("POST", "/api/rollouts/halt", self._act(self._halt)),
        ]
        access = Access(config.username, config.password)
        super().__init__("console-http", config.host, config.port, routes, access)

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _read(route: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            try:
                return route(request)
            except NotFound as exc:
                raise HttpError(404, str(exc)) from None
            except StoreError as exc:  # no store yet, or it cannot be read: say so on the page
                raise HttpError(503, str(exc)) from None

        return guarded

    def _fleet(self, request: Request) -> Response:
        query = request.query
        return json_response(self.data.fleet(query.get("site"), query.get("group"), query.get("version")))

    def _samples(self, request: Request) -> Response:
        filters = {k: (request.query.get(k) or None) for k in _SAMPLE_FILTERS}
        before = request.query.get("before")
        if before is not None and not before.isdigit():
            raise HttpError(400, "before: a sample number")
        return json_response(self.data.samples(filters, int(before) if before else None))

    def _plot(self, request: Request) -> Response:
        return Response(200, "image/png", self.data.round_plot(request.params[0], request.params[1]))

    def _image(self, request: Request) -> Response:
        return Response(200, "image/jpeg", self.data.sample_image(int(request.params[0])))

    # ------------------------------------------------------------------ actions

    @staticmethod
    def _act(route: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            try:
                return route(request)
            except (CommandFormError, ProtocolError) as exc:
                raise HttpError(400, str(exc)) from None
            except NotFound as exc:
                raise HttpError(404, str(exc)) from None
            except RolloutError as exc:  # nothing to promote or halt, not ready, already halted
                raise HttpError(409, str(exc)) from None
            except (PushError, OSError) as exc:  # the decision is recorded first; `rollout watch` repeats the acts
                raise HttpError(
                    503,
                    f"the broker could not be reached: {exc} (what was decided is recorded; the rollout's watch "
                    "repeats its pushes and rollbacks until they are done)",
                ) from None
            except StoreError as exc:
                raise HttpError(503, str(exc)) from None

        return guarded

    def _command(self, request: Request) -> Response:
        device, form = request.params[0], dict(request.form)
        log.info("console_device_command", device=device, type=form.get("type"), peer=request.peer)
        return json_response(self.data.device_command(device, form))

    def _promote(self, request: Request) -> Response:
        force = request.form.get("force", False)
        if not isinstance(force, bool):
            raise HttpError(400, "force: true or false")
        log.info("console_promote", force=force, peer=request.peer)
        return json_response(self.data.promote(force))

    def _halt(self, request: Request) -> Response:
        reason = request.form.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise HttpError(400, "reason: say why (the devices and the record are told)")
        log.info("console_halt", reason=reason[:500], peer=request.peer)
        return json_response(self.data.halt(reason.strip()[:500]))
