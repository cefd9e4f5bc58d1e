"""Metrics in the Prometheus text format, served at `GET /admin/metrics` (admin token).

Built on `prometheus_client`, with one `CollectorRegistry` per app (tests build many apps in one
process; the library's global registry is never used). Two kinds of figures:

- **request metrics** recorded by the middleware on every request (`RequestMetrics.observe`): a
  counter per (method, route family, status) and a latency histogram per route family;
- **state figures** read when the endpoint is scraped: the actor host (open databases,
  activations, evictions, pending alarms, held sockets), the phase, the repair queue, shadow
  reads, replication counters and corrupt legacy values. The app hands them over as `Gauge`
  values through a collector (`state`), so nothing has to be updated on the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

__all__ = ["BUCKETS", "CONTENT_TYPE", "Gauge", "RequestMetrics", "route_family"]

# The `*_created` timestamp series are noise for a gateway's own figures (and would double the
# lines of every counter); this switch is process-wide in prometheus_client.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The exposition's content type (text format 0.0.4)."""

# Latency buckets (seconds): the target is well under 1 ms, and the tail matters.
BUCKETS: tuple[float, ...] = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

MAX_CACHED_SERIES: Final = 1024

ROUTE_FAMILIES = ("coordinator", "agent", "lock", "health", "admin")


def route_family(raw_path: str) -> str:
    """The first path segment when it is one of the API's families, else `other` (bounded labels)."""
    first = raw_path[1:].split("/", 1)[0].split("?", 1)[0]
    if first.startswith("coordinator"):
        return "coordinator"
    return first if first in ROUTE_FAMILIES else "other"


@dataclass(frozen=True, slots=True)
class Gauge:
    """One state figure read at scrape time: name (a counter's without `_total`), help text, its
    labelled values and its type."""

    name: str
    help: str
    values: Iterable[tuple[dict[str, str], float]]
    kind: Literal["gauge", "counter"] = "gauge"

    def family(self) -> Metric:
        values = list(self.values)
        labels = sorted({k for lbl, _ in values for k in lbl})
        family: GaugeMetricFamily | CounterMetricFamily
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.help, labels=labels)
        else:
            family = GaugeMetricFamily(self.name, self.help, labels=labels)
        for lbl, value in values:
            family.add_metric([lbl.get(k, "") for k in labels], value)
        return family


class _State:
    """A collector of the figures `read()` gives at each scrape."""

    def __init__(self, read: Callable[[], Iterable[Gauge]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        for gauge in self._read():
            yield gauge.family()


class RequestMetrics:
    """The metrics of one app: its own registry, the request figures, and the state figures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "agent_coord_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "agent_coord_http_request_duration_seconds",
            "Time to answer a request, by route family.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, family: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (method, family, status)
        children = self._children.get(key)
        if children is None:
            # `labels()` checks and locks on every call: look the two series up once per key (the
            # keys are bounded: route families, methods and statuses)
            children = (self._requests.labels(method, family, str(status)), self._latency.labels(family))
            if len(self._children) < MAX_CACHED_SERIES:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    @property
    def requests(self) -> dict[tuple[str, str, int], int]:
        """The requests counted so far, by (method, route family, status)."""
        out: dict[tuple[str, str, int], int] = {}
        for metric in self._requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    out[(labels["method"], labels["route"], int(labels["status"]))] = int(sample.value)
        return out

    def add_state(self, read: Callable[[], Iterable[Gauge]]) -> None:
        """Report the figures `read()` gives, read afresh at every scrape."""
        self.registry.register(_State(read))

    def render(self) -> str:
        """The whole exposition (text format 0.0.4)."""
        return generate_latest(self.registry).decode("utf-8")
