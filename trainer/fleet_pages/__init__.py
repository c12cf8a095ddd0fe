"""The fleet pages: what the fleet team looks at, served by ``edge-trainer console``.

    browser -> server.py (the route table on agent.web.server.WebServer: access rule, static files, POST checks)
            -> data.py   FleetData: the I/O (sample store index read-only, blobs, rollout driver, round records)
            -> views.py  pure: rows and records -> the pages' JSON (filters, summaries, links)

Pages (one document, four tabs): fleet, rollouts (promote / halt with confirmation), rounds (report and
plots), samples (image, predicted boxes, the Label Studio task). Off the network unless a password is set,
like the box page.
"""

from trainer.fleet_pages.config import CloudConsoleConfig
from trainer.fleet_pages.data import ConsoleSettings, FleetData, NotFound
from trainer.fleet_pages.server import FleetPagesServer

__all__ = [
    "CloudConsoleConfig",
    "ConsoleSettings",
    "FleetData",
    "FleetPagesServer",
    "NotFound",
]
