"""The one HTTP server of the box page, the fleet pages and the metrics endpoints: a standard-library
``ThreadingHTTPServer`` in a supervised worker, answering from a route table.

A request's path::

    access rule (pages only: agent.web.access)  ->  POST checks (below)  ->  the route table  ->  a Response

Exceptions a route raises::

    HttpError(status, message)   answered as {"error": message} with that status
    anything else                500 {"error": "<type>: <message>"}, logged; the server goes on

A POST must be ``application/json`` (a cross-site form cannot send it without a CORS preflight, which this
server never grants), from the page's own origin when the browser says one, at most ``MAX_BODY`` bytes, and
a JSON object. Every answer carries :data:`SECURITY_HEADERS`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

import structlog

from agent.threads import SIDE_TASK, Supervisor, Worker
from agent.web.access import decide

__all__ = [
    "ERROR_TEXT",
    "MAX_BODY",
    "SECURITY_HEADERS",
    "WEB_STATIC",
    "Access",
    "Handler",
    "HttpError",
    "Request",
    "Response",
    "Route",
    "WebServer",
    "json_response",
    "page_files",
]

log = structlog.get_logger("agent.web")

WEB_STATIC = Path(__file__).parent / "static"  # what both pages load
MAX_BODY = 16 * 1024
ERROR_TEXT = 500  # characters of a broken route's error in its 500 answer
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


@dataclass(frozen=True)
class Request:
    """What a route is given: ``params`` are the groups of its pattern; ``form`` the JSON object a POST sent."""

    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    params: Tuple[str, ...] = ()
    form: Mapping[str, Any] = field(default_factory=dict)
    peer: str = ""


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """``method`` and ``path`` -> ``handler``. A path that starts with ``^`` is a pattern matched in full
    (its groups become ``Request.params``); any other is matched exactly."""

    method: str
    path: str
    handler: Handler

    def match(self, method: str, path: str) -> Optional[Tuple[str, ...]]:
        if method != self.method:
            return None
        if not self.path.startswith("^"):
            return () if path == self.path else None
        found = re.fullmatch(self.path, path)  # re keeps the compiled pattern in its own cache
        return None if found is None else tuple(found.groups())


def page_files(index: Path) -> List[Route]:
    """A page's files: ``GET /`` -> ``index``, every file beside it and every file both pages share
    (:data:`WEB_STATIC`) at ``/<its name>`` (the page's own win a name). Read at each request; nothing else
    on disk is reachable."""
    files: Dict[str, Path] = {"/": index}
    for directory in (index.parent, WEB_STATIC):
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.suffix in _TYPES:
                files.setdefault(f"/{path.name}", path)

    def serve(file: Path) -> Handler:
        content_type = _TYPES[file.suffix]
        return lambda request: Response(200, content_type, file.read_bytes())

    return [Route("GET", url, serve(file)) for url, file in files.items()]


@dataclass(frozen=True)
class Access:
    """A page's access rule (:func:`agent.web.access.decide`): loopback only without a password."""

    username: str
    password: Optional[str]


class WebServer:
    """Serves ``routes`` on ``host:port`` from the worker ``name``; ``access`` (the pages) checks every
    request first, ``None`` (the metrics endpoints, bound to loopback by default) lets every request in.

    ``port`` 0 binds any free port (tests). Routes run in the server's request threads.
    """

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        routes: Iterable[Route],
        access: Optional[Access] = None,
        supervisor: Optional[Supervisor] = None,
    ) -> None:
        self.routes = tuple(routes)
        self.access = access
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            server_version = name
            sys_version = ""

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), RequestHandler)
        self._server.daemon_threads = True
        self._worker = Worker(name, lambda: self._server.serve_forever(0.1), SIDE_TASK, supervisor)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.cancel_restarts()
        if self._worker.alive:  # shutdown() waits for serve_forever to return: never call it before start
            self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ requests

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        peer = str(request.client_address[0])
        if self.access is not None:
            headers = request.headers
            decision = decide(
                peer, headers.get("Authorization"), self.access.username, self.access.password, headers.get("Host")
            )
            if not decision.allowed:
                log.warning("console_refused", peer=peer, path=request.path[:200], reason=decision.reason)
                challenge = 'Basic realm="edge-vision-loop", charset="UTF-8"'
                extra = (("WWW-Authenticate", challenge),) if decision.status == 401 else ()
                self._send(request, Response(decision.status, "text/plain; charset=utf-8", b"refused\n", extra))
                return
        url = urlsplit(request.path)
        try:
            response = self._route(request, method, url.path, url.query, peer)
        except HttpError as exc:
            response = json_response({"error": str(exc)}, exc.status)
        except Exception as exc:  # a broken route must not take the server down
            log.exception("web_request_failed", path=url.path)
            # the log has it all; the answer only a line (a validation error can run to pages)
            response = json_response({"error": f"{type(exc).__name__}: {exc}"[:ERROR_TEXT]}, 500)
        self._send(request, response)

    def _route(self, request: BaseHTTPRequestHandler, method: str, path: str, query: str, peer: str) -> Response:
        for route in self.routes:
            params = route.match(method, path)
            if params is not None:
                form = self._form(request) if method == "POST" else {}
                args = {k: v[-1] for k, v in parse_qs(query).items()}
                return route.handler(Request(path, args, params, form, peer))
        raise HttpError(404, "not found")

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
