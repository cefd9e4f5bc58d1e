"""Metrics in the Prometheus text format, served at `GET /admin/metrics` (admin token).

Built on `prometheus_client`, with one `CollectorRegistry` per app (tests build many apps in one
process; the library's global registry is never used). Two kinds of figures:

- **request metrics** recorded by the middleware on every request (`RequestMetrics.observe`): a
  counter per (method, route family, status) and a latency histogram per route family. They are
  plain counts in a dict, turned into the exposition when scraped (`_Requests`), as
  prometheus_client's own `Counter` and `Histogram` render them: those take a lock and walk the
  buckets in Python on every request, about 3 us of each (docs/benchmarks.md, issue 13);
- **state figures** read when the endpoint is scraped: the actor host (open databases,
  activations, evictions, pending alarms, held sockets), the phase, the repair queue, shadow
  reads, replication counters and corrupt legacy values. The app hands them over as `Gauge`
  values through a collector (`state`), so nothing has to be updated on the request path.

Beside them, prometheus_client's standard process figures (`process_*`: CPU seconds, resident
memory, open file descriptors) and the Python collector's (`python_gc_*`: collections and
objects by generation), read at each scrape: the collector's pauses hold every request in
flight, so its rate is worth watching next to the latency (gateway/http/server.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.utils import floatToGoString

__all__ = ["BUCKETS", "CONTENT_TYPE", "Gauge", "RequestMetrics", "route_family"]

# The `*_created` timestamp series are noise for a gateway's own figures (and would double the
# lines of every counter); this switch is process-wide in prometheus_client.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The exposition's content type (text format 0.0.4)."""

# Latency buckets (seconds): the target is well under 1 ms, and the tail matters.
BUCKETS: tuple[float, ...] = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

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


REQUESTS_NAME: Final = "agent_coord_http_requests"
REQUESTS_HELP: Final = "HTTP requests answered, by method, route and status."
LATENCY_NAME: Final = "agent_coord_http_request_duration_seconds"
LATENCY_HELP: Final = "Time to answer a request, by route family."


class _Requests:
    """The request counts and latencies, as prometheus_client's labelled `Counter` and
    `Histogram` expose them (same samples, labels, values and order: tests/test_metrics.py
    compares the two), kept as plain numbers until scraped."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}  # in the order first seen, as labels()
        self.latency: dict[str, list[float]] = {}  # route -> [sum, bucket counts..., over the last]
        self._bounds = list(BUCKETS)
        self._le = [floatToGoString(b) for b in (*BUCKETS, float("inf"))]  # type: ignore[no-untyped-call]

    def observe(self, key: tuple[str, str, int], seconds: float) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        family = key[1]
        row = self.latency.get(family)
        if row is None:
            row = self.latency[family] = [0.0] * (len(self._bounds) + 2)
        row[0] += seconds
        # the first bucket whose bound is at least `seconds` (prometheus: `seconds <= bound`)
        row[1 + bisect.bisect_left(self._bounds, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        requests = Metric(REQUESTS_NAME, REQUESTS_HELP, "counter")
        for (method, family, status), n in self.counts.items():
            labels = {"method": method, "route": family, "status": str(status)}
            requests.add_sample(REQUESTS_NAME + "_total", labels, float(n))
        yield requests
        latency = Metric(LATENCY_NAME, LATENCY_HELP, "histogram")
        for family, row in self.latency.items():
            acc = 0.0
            for le, in_bucket in zip(self._le, row[1:], strict=True):
                acc += in_bucket
                latency.add_sample(LATENCY_NAME + "_bucket", {"route": family, "le": le}, acc)
            latency.add_sample(LATENCY_NAME + "_count", {"route": family}, acc)
            latency.add_sample(LATENCY_NAME + "_sum", {"route": family}, row[0])
        yield latency


class RequestMetrics:
    """The metrics of one app: its own registry, the request figures, and the state figures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = _Requests()
        self.registry.register(self._requests)
        # process_*, python_gc_*, python_info: each reads /proc or gc.get_stats() when scraped
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def observe(self, method: str, family: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self._requests.observe((method, family, status), seconds)

    @property
    def requests(self) -> dict[tuple[str, str, int], int]:
        """The requests counted so far, by (method, route family, status)."""
        return dict(self._requests.counts)

    def add_state(self, read: Callable[[], Iterable[Gauge]]) -> None:
        """Report the figures `read()` gives, read afresh at every scrape."""
        self.registry.register(_State(read))

    def render(self) -> str:
        """The whole exposition (text format 0.0.4)."""
        return generate_latest(self.registry).decode("utf-8")
