"""The fleet pages: what the fleet team looks at, served by ``edge-trainer console``.

    browser -> server.py (PageServer from agent.console.http: access rule, static files, POST checks)
            -> data.py   ConsoleData: the I/O (sample store index read-only, blobs, rollout driver, round records)
            -> views.py  pure: rows and records -> the pages' JSON (filters, summaries, links)

Pages (one document, four tabs): fleet, rollouts (promote / halt with confirmation), rounds (report and
plots), samples (image, predicted boxes, the Label Studio task). Off the network unless a password is set,
like the box page.
"""

from trainer.console.config import CloudConsoleConfig
from trainer.console.data import ConsoleData, ConsoleSettings, NotFound
from trainer.console.server import CloudConsoleServer

__all__ = [
    "CloudConsoleConfig",
    "CloudConsoleServer",
    "ConsoleData",
    "ConsoleSettings",
    "NotFound",
]
