"""The pages' HTTP layer, shared by the box page and the fleet pages (``trainer/fleet_pages``): a standard-library
``ThreadingHTTPServer`` in a supervised worker, the access rule on every request, static files, JSON errors,
and the checks every POST passes before a route sees it.

Exceptions a route raises::

    HttpError(status, message)   answered as {"error": message} with that status
    anything else                500 {"error": "<type>: <message>"}, logged; the server goes on

A POST must be ``application/json`` (a cross-site form cannot send it without a CORS preflight, which this
server never grants), from the page's own origin when the browser says one, at most ``MAX_BODY`` bytes, and
a JSON object.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import structlog

from agent.threads import SIDE_TASK, Supervisor, Worker
from agent.web.access import decide

__all__ = [
    "MAX_BODY",
    "SECURITY_HEADERS",
    "STATIC",
    "WEB_STATIC",
    "HttpError",
    "PageServer",
    "Response",
    "json_response",
]

log = structlog.get_logger("agent.box_page")

STATIC = Path(__file__).parent / "static"
WEB_STATIC = Path(__file__).parents[1] / "web" / "static"  # what both pages share
MAX_BODY = 16 * 1024
SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'"),
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


class Response(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: Tuple[Tuple[str, str], ...] = ()


class HttpError(Exception):
    """A request a route refuses; ``status`` is the HTTP status it is answered with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_response(document: Any, status: int = 200) -> Response:
    return Response(status, "application/json", json.dumps(document, default=str, separators=(",", ":")).encode())


class PageServer:
    """Serves ``files`` (URL path -> file) and the routes of a subclass.

    Subclasses implement :meth:`get` and :meth:`post`; both run in the server's request threads.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        username: str,
        password: Optional[str],
        files: Mapping[str, Path],
        supervisor: Optional[Supervisor] = None,
    ) -> None:
        self.username = username
        self.password = password
        self.files = dict(files)
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = name
            sys_version = ""

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._worker = Worker(name, lambda: self._server.serve_forever(0.1), SIDE_TASK, supervisor)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.cancel_restarts()
        if self._worker.alive:
            self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ for subclasses

    def get(self, path: str, query: Dict[str, str]) -> Response:
        raise HttpError(404, "not found")

    def post(self, path: str, form: Dict[str, Any], peer: str) -> Response:
        raise HttpError(404, "not found")

    # ------------------------------------------------------------------ requests

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        peer = str(request.client_address[0])
        headers = request.headers
        decision = decide(peer, headers.get("Authorization"), self.username, self.password, headers.get("Host"))
        if not decision.allowed:
            log.warning("console_refused", peer=peer, path=request.path[:200], reason=decision.reason)
            challenge = 'Basic realm="edge-vision-loop", charset="UTF-8"'
            extra = (("WWW-Authenticate", challenge),) if decision.status == 401 else ()
            self._send(request, Response(decision.status, "text/plain; charset=utf-8", b"refused\n", extra))
            return
        url = urlsplit(request.path)
        try:
            if method == "POST":
                response = self.post(url.path, self._form(request), peer)
            elif url.path in self.files:
                file = self.files[url.path]
                response = Response(200, _TYPES.get(file.suffix, "application/octet-stream"), file.read_bytes())
            else:
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                response = self.get(url.path, query)
        except HttpError as exc:
            response = json_response({"error": str(exc)}, exc.status)
        except Exception as exc:  # a broken route must not take the server down
            log.exception("console_request_failed", path=url.path)
            response = json_response({"error": f"{type(exc).__name__}: {exc}"}, 500)
        self._send(request, response)

    def _form(self, request: BaseHTTPRequestHandler) -> Dict[str, Any]:
        content_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(415, "requests are application/json")
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("Host"):
            raise HttpError(403, f"cross-origin request refused (Origin {origin[:100]})")
        try:
            length = int(request.headers.get("Content-Length", ""))
        except ValueError:
            raise HttpError(411, "Content-Length required") from None
        if not 0 < length <= MAX_BODY:
            raise HttpError(413, f"a request is at most {MAX_BODY} bytes")
        try:
            form = json.loads(request.rfile.read(length))
        except ValueError as exc:
            raise HttpError(400, f"not JSON: {exc}") from None
        if not isinstance(form, dict):
            raise HttpError(400, "a JSON object is needed")
        return form

    def _send(self, request: BaseHTTPRequestHandler, response: Response) -> None:
        try:
            request.send_response(response.status)
            request.send_header("Content-Type", response.content_type)
            request.send_header("Content-Length", str(len(response.body)))
            for key, value in SECURITY_HEADERS + tuple(response.headers):
                request.send_header(key, value)
            request.end_headers()
            request.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):  # the browser went away: nothing to answer
            pass
