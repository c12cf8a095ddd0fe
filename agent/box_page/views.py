"""What the box page shows, as pure functions: JSON in, JSON out (no I/O, no threads).

:func:`page_state` is the document behind ``GET /api/state``: the daemon's status document (exactly what
``edge-agent status`` reads), its health verdict, and the recent alerts and samples. What its buttons send is
``agent.web.forms`` (the fleet pages send the same commands).

What it returns is declared in ``documents.py`` (:class:`~agent.box_page.documents.PageState`): the document
is validated against the declaration before it is served, so the page and its JSON Schema cannot part ways.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from agent.box_page.documents import PageState
from agent.web.forms import CONSOLE_COMMANDS

__all__ = ["RecentItem", "page_state"]


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
    state on disk.

    Raises ``pydantic.ValidationError`` when the document is not what ``PageState`` declares (the server
    answers that request with a 500 and logs it; the daemon goes on)."""
    code, problems = health
    document = {
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
    # exclude_unset: a camera's figures that are not known yet stay absent, as the daemon built them
    return PageState.model_validate(document).model_dump(mode="json", exclude_unset=True)
