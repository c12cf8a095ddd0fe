"""Prometheus metrics through ``prometheus-client``, read from the owners' snapshots at scrape time.

Nothing is copied into a registry on a timer: a service hands :class:`SnapshotCollector` one function that
yields :class:`Sample` values from the frozen snapshots its threads publish (pipeline counters, camera
stats, spool stats, link metrics, worker states); ``prometheus-client`` calls it on every ``GET /metrics``
and renders the exposition text. A camera removed at reload is simply no longer in the snapshots.

``MetricsServer`` serves ``GET /metrics`` (and extra routes, e.g. the cloud ingest's ``/status``) on the one
web server of the project (:class:`agent.web.server.WebServer`) from the supervised ``metrics-http`` worker;
anything else is 404. Off by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agent.threads import Supervisor
from agent.web.server import Request, Response, Route, WebServer

__all__ = ["MetricsServer", "Sample", "SnapshotCollector", "counter", "gauge", "registry_of"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


@dataclass(frozen=True)
class Sample:
    """One value of one series: ``name`` without the service prefix; ``kind`` gauge or counter."""

    name: str
    value: float
    help: str
    kind: str = "gauge"
    labels: Mapping[str, str] = field(default_factory=dict)


def gauge(name: str, value: float, help_text: str, **labels: str) -> Sample:
    return Sample(name, float(value), help_text, "gauge", {k: str(v) for k, v in labels.items()})


def counter(name: str, value: float, help_text: str, **labels: str) -> Sample:
    return Sample(name, float(value), help_text, "counter", {k: str(v) for k, v in labels.items()})


ReadSamples = Callable[[], Iterable[Sample]]


class SnapshotCollector(Collector):
    """A ``prometheus-client`` collector: every scrape calls ``read`` and groups its samples by name.

    Series of one name must carry the same label names (Prometheus requires it); a sample that does not is
    a bug of ``read`` and raises ``ValueError`` (the scrape answers 500, the service goes on).
    """

    def __init__(self, prefix: str, read: ReadSamples) -> None:
        if not _NAME.match(prefix):
            raise ValueError(f"invalid metric prefix {prefix!r}")
        self.prefix = prefix
        self._read = read

    def collect(self) -> Iterator[Metric]:
        families: Dict[str, Tuple[Union[GaugeMetricFamily, CounterMetricFamily], Tuple[str, ...]]] = {}
        for sample in self._read():
            name = self.prefix + sample.name
            if not _NAME.match(name):
                raise ValueError(f"invalid metric name {name!r}")
            label_names = tuple(sorted(sample.labels))
            entry = families.get(name)
            if entry is None:
                family_type = CounterMetricFamily if sample.kind == "counter" else GaugeMetricFamily
                entry = families[name] = (family_type(name, sample.help, labels=label_names), label_names)
            family, expected = entry
            if label_names != expected:
                raise ValueError(f"{name}: labels {label_names} differ from {expected}")
            family.add_metric([sample.labels[k] for k in label_names], sample.value)
        for family, _ in families.values():
            yield family


def registry_of(*collectors: Collector) -> CollectorRegistry:
    """A registry of its own (never the process-global default one, which tests would share)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class MetricsServer(WebServer):
    """``GET /metrics`` of ``registry`` on ``host:port`` from the ``metrics-http`` worker.

    ``routes`` adds others (the cloud ingest's ``/status`` and ``/healthz``); a route that raises answers 500
    and never stops the server. No access rule: bind it to loopback (the default) or a monitoring network.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 9108,
        routes: Iterable[Route] = (),
        supervisor: Optional[Supervisor] = None,
    ) -> None:
        def metrics(request: Request) -> Response:
            return Response(200, CONTENT_TYPE_LATEST, generate_latest(registry))

        super().__init__("metrics-http", host, port, [Route("GET", "/metrics", metrics), *routes], None, supervisor)
