"""The fleet pages' server: :class:`~agent.box_page.http.PageServer` routes over :class:`FleetData`.

GET  /                                    the pages (static/fleet.html, fleet.js; pages.css, shared with the box page)
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

import re
from pathlib import Path
from typing import Any, Dict

import structlog

from agent.box_page.http import WEB_STATIC, HttpError, PageServer, Response, json_response
from agent.protocol.errors import ProtocolError
from agent.web.forms import CommandFormError
from trainer.fleet_pages.config import CloudConsoleConfig
from trainer.fleet_pages.data import FleetData, NotFound
from trainer.release import PushError
from trainer.rollout import RolloutError
from trainer.store import StoreError

__all__ = ["FleetPagesServer"]

log = structlog.get_logger("trainer.fleet_pages")

STATIC = Path(__file__).parent / "static"
FILES = {"/": STATIC / "fleet.html", "/fleet.js": STATIC / "fleet.js", "/pages.css": WEB_STATIC / "pages.css"}
_PLOT = re.compile(r"^/api/rounds/([A-Za-z0-9_.-]{1,100})/([A-Za-z0-9_-]{1,64}\.png)$")
_IMAGE = re.compile(r"^/api/samples/([0-9]{1,18})\.jpg$")
_SAMPLE_FILTERS = ("device", "camera", "reason", "label_state")
_COMMAND = re.compile(r"^/api/devices/([A-Za-z0-9_.:-]{1,128})/commands$")


class FleetPagesServer(PageServer):
    def __init__(self, config: CloudConsoleConfig, data: FleetData) -> None:
        super().__init__("console-http", config.host, config.port, config.username, config.password, FILES)
        self.data = data

    def get(self, path: str, query: Dict[str, str]) -> Response:
        try:
            return self._get(path, query)
        except NotFound as exc:
            raise HttpError(404, str(exc)) from None
        except StoreError as exc:  # no store yet, or it cannot be read: say so on the page
            raise HttpError(503, str(exc)) from None

    def _get(self, path: str, query: Dict[str, str]) -> Response:
        if path == "/api/fleet":
            return json_response(self.data.fleet(query.get("site"), query.get("group"), query.get("version")))
        if path == "/api/rollouts":
            return json_response(self.data.rollouts())
        if path == "/api/rounds":
            return json_response(self.data.rounds())
        if path == "/api/samples":
            filters = {k: (query.get(k) or None) for k in _SAMPLE_FILTERS}
            before = query.get("before")
            if before is not None and not before.isdigit():
                raise HttpError(400, "before: a sample number")
            return json_response(self.data.samples(filters, int(before) if before else None))
        match = _PLOT.match(path)
        if match:
            return Response(200, "image/png", self.data.round_plot(match.group(1), match.group(2)))
        match = _IMAGE.match(path)
        if match:
            return Response(200, "image/jpeg", self.data.sample_image(int(match.group(1))))
        raise HttpError(404, "not found")

    def post(self, path: str, form: Dict[str, Any], peer: str) -> Response:
        try:
            match = _COMMAND.match(path)
            if match:
                log.info("console_device_command", device=match.group(1), type=form.get("type"), peer=peer)
                return json_response(self.data.device_command(match.group(1), form))
            if path == "/api/rollouts/promote":
                force = form.get("force", False)
                if not isinstance(force, bool):
                    raise HttpError(400, "force: true or false")
                log.info("console_promote", force=force, peer=peer)
                return json_response(self.data.promote(force))
            if path == "/api/rollouts/halt":
                reason = form.get("reason")
                if not isinstance(reason, str) or not reason.strip():
                    raise HttpError(400, "reason: say why (the devices and the record are told)")
                log.info("console_halt", reason=reason[:500], peer=peer)
                return json_response(self.data.halt(reason.strip()[:500]))
        except (CommandFormError, ProtocolError) as exc:
            raise HttpError(400, str(exc)) from None
        except NotFound as exc:
            raise HttpError(404, str(exc)) from None
        except RolloutError as exc:  # nothing to promote or halt, not ready, already halted
            raise HttpError(409, str(exc)) from None
        except (PushError, OSError) as exc:  # the decision is recorded first; `rollout watch` repeats the acts
            raise HttpError(
                503,
                f"the broker could not be reached: {exc} (what was decided is recorded; the rollout's watch repeats "
                "its pushes and rollbacks until they are done)",
            ) from None
        except StoreError as exc:
            raise HttpError(503, str(exc)) from None
        raise HttpError(404, "not found")
