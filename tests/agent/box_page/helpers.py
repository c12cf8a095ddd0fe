"""HTTP helpers of the console tests (urllib only: the agent's venv has no HTTP client library)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any, Dict, Optional, Tuple

from agent.app.report import unassembled_document
from agent.threads import Supervisor


def request(
    url: str,
    body: Optional[Any] = None,
    headers: Optional[Dict[str, str]] = None,
    auth: Optional[Tuple[str, str]] = None,
    raw: Optional[bytes] = None,
    timeout: float = 10.0,
) -> Tuple[int, Dict[str, str], bytes]:
    """``(status, headers, body)`` of a GET (or a POST when ``body``/``raw`` is given); HTTP errors included."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    all_headers = dict(headers or {})
    if data is not None:
        all_headers.setdefault("Content-Type", "application/json")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(url, data=data, headers=all_headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, **kwargs: Any) -> Any:
    status, _, body = request(url, **kwargs)
    assert status == 200, (status, body[:300])
    return json.loads(body)


def status_document(**changes: Any) -> Dict[str, Any]:
    """A status document as the daemon writes it before its parts run (``agent.app.report.unassembled_document``),
    with ``changes``: the smallest one the page's declaration (``agent.box_page.documents.StatusDocument``) takes."""
    live = SimpleNamespace(
        phase="running",
        started_wall=1796295600.0,
        config=SimpleNamespace(mqtt=SimpleNamespace(device="box-1", site="plant")),
        ota_last=None,
        reloads=0,
        model_error=None,
        errors=[],
    )
    document = unassembled_document(live, Supervisor(), watchdog=False)  # type: ignore[arg-type]
    document.update(changes)
    return document
