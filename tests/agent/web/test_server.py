"""agent/web/server.py: the route table (table-driven), the files a page serves, and one server answering a
page's routes and the metrics endpoint's alike (the pages' own behaviour: tests/agent/box_page,
tests/trainer/fleet_pages)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Tuple

import pytest

from agent.web.server import (
    ERROR_TEXT,
    WEB_STATIC,
    HttpError,
    Request,
    Response,
    Route,
    WebServer,
    json_response,
    page_files,
)


def _ok(request: Request) -> Response:
    return json_response({"params": list(request.params), "query": dict(request.query)})


@pytest.mark.parametrize(
    ("route", "method", "path", "params"),
    [
        (Route("GET", "/api/state", _ok), "GET", "/api/state", ()),
        (Route("GET", "/api/state", _ok), "GET", "/api/state/", None),
        (Route("GET", "/api/state", _ok), "POST", "/api/state", None),
        (Route("GET", r"^/api/outputs/([0-9a-f]{4})\.jpg$", _ok), "GET", "/api/outputs/beef.jpg", ("beef",)),
        (Route("GET", r"^/api/outputs/([0-9a-f]{4})\.jpg$", _ok), "GET", "/api/outputs/beef.jpg/x", None),
        (Route("GET", r"^/api/outputs/([0-9a-f]{4})\.jpg$", _ok), "GET", "/x/api/outputs/beef.jpg", None),
        (Route("POST", r"^/api/devices/([a-z0-9]+)/commands$", _ok), "POST", "/api/devices/box1/commands", ("box1",)),
    ],
)
def test_a_route_matches_its_method_and_its_whole_path(
    route: Route, method: str, path: str, params: Optional[Tuple[str, ...]]
) -> None:
    assert route.match(method, path) == params


def test_a_page_serves_its_own_files_and_the_shared_ones_and_nothing_else(tmp_path: Path) -> None:
    page = tmp_path / "static"
    page.mkdir()
    (page / "page.html").write_text("<p>page</p>")
    (page / "page.js").write_text("export {};")
    (page / "notes.txt").write_text("not a page file")
    (page / "pages.css").write_text("/* the page's own wins */")
    routes = {route.path: route for route in page_files(page / "page.html")}
    assert {"/", "/page.html", "/page.js", "/pages.css"} <= set(routes) and "/notes.txt" not in routes
    assert all(f"/{p.name}" in routes for p in WEB_STATIC.iterdir() if p.suffix in (".css", ".js"))
    assert routes["/pages.css"].handler(Request("/pages.css")).body == b"/* the page's own wins */"
    assert routes["/"].handler(Request("/")).content_type == "text/html; charset=utf-8"


def _get(url: str) -> Tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_one_server_answers_routes_refusals_and_broken_routes_alike() -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("a bug in a route")

    def refused(request: Request) -> Response:
        raise HttpError(409, "not now")

    def verbose(request: Request) -> Response:
        raise ValueError("x" * 20000)  # a validation error of a whole document: the log has it, not the answer

    routes = [
        Route("GET", "/ok", _ok),
        Route("GET", "/broken", broken),
        Route("GET", "/refused", refused),
        Route("GET", "/verbose", verbose),
    ]
    server = WebServer("test-http", "127.0.0.1", 0, routes)  # no access rule: a metrics endpoint
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert json.loads(_get(f"{base}/ok?a=1&a=2")[2]) == {"params": [], "query": {"a": "2"}}
        assert _get(f"{base}/broken")[:2] == (500, "application/json")
        assert json.loads(_get(f"{base}/broken")[2]) == {"error": "RuntimeError: a bug in a route"}
        assert _get(f"{base}/refused")[0] == 409 and json.loads(_get(f"{base}/refused")[2]) == {"error": "not now"}
        assert _get(f"{base}/missing")[0] == 404
        status, _, body = _get(f"{base}/verbose")
        assert status == 500 and len(json.loads(body)["error"]) == ERROR_TEXT
        assert _get(f"{base}/ok")[0] == 200  # still serving after the broken route
    finally:
        server.stop()
