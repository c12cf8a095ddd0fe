"""A small client of Label Studio's REST API (the parts the round trip needs), over httpx.

The transport is the seam (as in httpx's own design): tests and benchmarks talk to a real Label Studio
server; a test that only checks our side can hand in ``httpx.MockTransport``.

Authentication, both of Label Studio's token kinds:

- personal access token (the default since 1.21): a long-lived JWT *refresh* token, exchanged at
  ``POST /api/token/refresh/`` for a short-lived access token sent as ``Authorization: Bearer``; renewed
  once when a request answers 401;
- legacy token: sent as ``Authorization: Token <t>`` (organisations must enable them).

Errors::

    LabelStudioError              base; .status (HTTP status or None), .detail
    ├── LabelStudioAuthError      401/403: the token is wrong, expired, revoked or of a disabled kind
    ├── LabelStudioUnavailable    connection refused, timeout, 5xx: try again later
    └── LabelStudioRequestError   another 4xx: what we sent was refused (validation_errors in .detail)
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import httpx


class LabelStudioError(Exception):
    def __init__(self, message: str, status: Optional[int] = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class LabelStudioAuthError(LabelStudioError):
    """The token was refused."""


class LabelStudioUnavailable(LabelStudioError):
    """Label Studio could not be reached or failed (transport, timeout, 5xx)."""


class LabelStudioRequestError(LabelStudioError):
    """Label Studio refused what we sent (4xx other than auth)."""


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class LabelStudio:
    """See the module docstring."""

    def __init__(
        self,
        url: str,
        token: str,
        token_kind: str = "auto",
        timeout_s: float = 60.0,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        if not token:
            raise LabelStudioAuthError("no Label Studio token configured (labelling.label_studio.token_file)")
        self.url = url.rstrip("/")
        self._token = token
        kind = token_kind if token_kind != "auto" else ("personal" if looks_like_jwt(token) else "legacy")
        self.token_kind = kind
        self._access: Optional[str] = None
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)
        self._users: Dict[int, str] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP

    def _refresh(self) -> str:
        response = self._send("POST", "/api/token/refresh/", json={"refresh": self._token}, auth=False)
        access = response.json().get("access")
        if not isinstance(access, str):
            raise LabelStudioAuthError("token refresh answered without an access token")
        self._access = access
        return access

    def _auth_header(self) -> Dict[str, str]:
        if self.token_kind == "legacy":
            return {"Authorization": f"Token {self._token}"}
        return {"Authorization": f"Bearer {self._access or self._refresh()}"}

    def _send(self, method: str, path: str, auth: bool = True, **kwargs: Any) -> httpx.Response:
        headers = self._auth_header() if auth else {}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise LabelStudioUnavailable(f"Label Studio at {self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 401 and auth and self.token_kind == "personal" and self._access is not None:
            self._access = None  # the access token expired: renew it once
            return self._send(method, path, auth, **kwargs)
        if response.status_code >= 400:
            detail: Any
            try:
                detail = response.json()
            except ValueError:
                detail = response.text[:500]
            message = detail.get("detail") if isinstance(detail, dict) else str(detail)[:200]
            text = f"Label Studio {method} {path}: HTTP {response.status_code}: {message}"
            if isinstance(detail, dict) and detail.get("validation_errors"):
                text += f" {detail['validation_errors']}"
            if response.status_code in (401, 403):
                raise LabelStudioAuthError(text, response.status_code, detail)
            if response.status_code >= 500:
                raise LabelStudioUnavailable(text, response.status_code, detail)
            raise LabelStudioRequestError(text, response.status_code, detail)
        return response

    # ------------------------------------------------------------------ API

    def whoami(self) -> Dict[str, Any]:
        return dict(self._send("GET", "/api/current-user/whoami").json())

    def create_project(self, title: str, label_config: str, description: str = "") -> int:
        body = {"title": title, "label_config": label_config, "description": description}
        return int(self._send("POST", "/api/projects/", json=body).json()["id"])

    def project(self, project_id: int) -> Dict[str, Any]:
        return dict(self._send("GET", f"/api/projects/{project_id}/").json())

    def add_local_storage(self, project_id: int, path: str, title: str = "edge-trainer sample store") -> int:
        """Let the project serve images from ``path`` (under Label Studio's LOCAL_FILES_DOCUMENT_ROOT)."""
        body = {"project": project_id, "path": path, "title": title, "use_blob_urls": False}
        return int(self._send("POST", "/api/storages/localfiles", json=body).json()["id"])

    def import_tasks(self, project_id: int, tasks: Sequence[Dict[str, Any]]) -> List[int]:
        """Create tasks (with their predictions); returns their ids in order."""
        response = self._send(
            "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=list(tasks)
        )
        ids = response.json().get("task_ids")
        if not isinstance(ids, list) or len(ids) != len(tasks):
            raise LabelStudioError(f"import answered {len(ids or [])} task ids for {len(tasks)} tasks")
        return [int(i) for i in ids]

    def export_tasks(self, project_id: int) -> List[Dict[str, Any]]:
        """Every task of the project with its annotations (Label Studio's JSON export)."""
        params = {"exportType": "JSON", "download_all_tasks": "true"}  # default: only annotated tasks
        data = self._send("GET", f"/api/projects/{project_id}/export", params=params).json()
        if not isinstance(data, list):
            raise LabelStudioError("export did not answer a list of tasks")
        return data

    def task(self, task_id: int) -> Dict[str, Any]:
        """One task with its predictions and annotations."""
        return dict(self._send("GET", f"/api/tasks/{task_id}/").json())

    def submit_annotation(self, task_id: int, result: List[Dict[str, Any]], lead_time_s: float = 0.0) -> int:
        """Submit an annotation as the token's user (what a reviewer's Submit button does)."""
        body = {"result": result, "lead_time": lead_time_s}
        return int(self._send("POST", f"/api/tasks/{task_id}/annotations/", json=body).json()["id"])

    def user_email(self, user_id: int) -> str:
        """Who a user id is (cached): their email, else their username, else ``user <id>``."""
        if user_id not in self._users:
            try:
                user = self._send("GET", f"/api/users/{user_id}/").json()
                self._users[user_id] = user.get("email") or user.get("username") or f"user {user_id}"
            except LabelStudioRequestError:
                self._users[user_id] = f"user {user_id}"
        return self._users[user_id]
