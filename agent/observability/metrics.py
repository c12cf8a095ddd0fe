"""Prometheus text-format metrics (exposition format 0.0.4) with the stdlib only.

``Metrics`` is a small registry of gauges and counters with labels; the daemon sets values from its
components' counters every status interval (and counters it owns directly). ``MetricsServer`` serves
``GET /metrics`` from a ``ThreadingHTTPServer`` in a daemon thread; anything else is 404. Off by default.
"""

from __future__ import annotations

import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Mapping, Optional, Tuple

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LabelKey = Tuple[Tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        self.name = name
        self.kind = kind
        self.help = help_text
        self.values: Dict[_LabelKey, float] = {}


class Metrics:
    """A thread-safe registry; names are prefixed with ``prefix`` (``edge_agent_`` for the daemon, the cloud
    services pass their own)."""

    PREFIX = "edge_agent_"

    def __init__(self, prefix: Optional[str] = None) -> None:
        if prefix is not None:
            if not _NAME.match(prefix):
                raise ValueError(f"invalid metric prefix {prefix!r}")
            self.PREFIX = prefix
        self._lock = threading.Lock()
        self._families: Dict[str, _Family] = {}

    def _family(self, name: str, kind: str, help_text: str) -> _Family:
        full = self.PREFIX + name
        family = self._families.get(full)
        if family is None:
            family = self._families[full] = _Family(full, kind, help_text)
        elif family.kind != kind:
            raise ValueError(f"metric {full} is a {family.kind}, not a {kind}")
        return family

    def set(self, name: str, value: float, help_text: str = "", mtype: str = "gauge", **labels: str) -> None:
        """Set a gauge (or a counter mirrored from a component's own count)."""
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            self._family(name, mtype, help_text).values[key] = float(value)

    def inc(self, name: str, amount: float = 1.0, help_text: str = "", **labels: str) -> None:
        """Add to a counter the daemon owns."""
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            family = self._family(name, "counter", help_text)
            family.values[key] = family.values.get(key, 0.0) + amount

    def remove(self, name: str, **labels: str) -> None:
        """Forget one labelled series (a camera removed at reload)."""
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            family = self._families.get(self.PREFIX + name)
            if family is not None:
                family.values.pop(key, None)

    def get(self, name: str, **labels: str) -> Optional[float]:
        key = tuple(sorted((k, str(v)) for k, v in labels.items()))
        with self._lock:
            family = self._families.get(self.PREFIX + name)
            return None if family is None else family.values.get(key)

    def render(self) -> str:
        with self._lock:
            families = [(f.name, f.kind, f.help, dict(f.values)) for f in self._families.values()]
        return render_metrics(families)


def render_metrics(families: List[Tuple[str, str, str, Dict[_LabelKey, float]]]) -> str:
    """Exposition text for ``(name, type, help, {labels: value})`` families (pure)."""
    lines: List[str] = []
    for name, kind, help_text, values in sorted(families):
        if help_text:
            lines.append(f"# HELP {name} {_escape(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        for key, value in sorted(values.items()):
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in key)
            lines.append(f"{name}{{{labels}}} {_number(value)}" if labels else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


Route = Callable[[], Tuple[int, str, bytes]]
"""An extra ``GET`` route: returns (HTTP status, content type, body)."""


class MetricsServer:
    """``GET /metrics`` on ``host:port`` from a daemon thread named ``metrics-http``.

    ``routes`` adds other read-only ``GET`` paths (the cloud ingest's ``/status`` and ``/healthz``); a route
    that raises answers 500 and never stops the server. ``refresh`` is called before each scrape (to copy
    the owners' latest snapshots into the registry).
    """

    def __init__(
        self,
        metrics: Metrics,
        host: str = "127.0.0.1",
        port: int = 9108,
        routes: Optional[Mapping[str, Route]] = None,
        refresh: Optional[Callable[[], None]] = None,
    ) -> None:
        registry = metrics
        extra = dict(routes or {})

        def metrics_route() -> Tuple[int, str, bytes]:
            if refresh is not None:
                refresh()
            return 200, "text/plain; version=0.0.4; charset=utf-8", registry.render().encode("utf-8")

        table: Dict[str, Route] = {"/metrics": metrics_route, **extra}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = table.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                try:
                    status, content_type, body = route()
                except Exception:  # a broken route must not take the server down
                    self.send_error(500)
                    return
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
