"""Metrics in the Prometheus text format, served at `GET /admin/metrics` (admin token).

Two kinds of figures:

- **request metrics** recorded by the middleware on every request: a counter per
  (method, route family, status) and a latency histogram per route family. Recording is two
  dict updates and a bisect, so it stays off the hot path's budget;
- **state gauges** read when the endpoint is scraped: the actor host (open databases,
  activations, evictions, pending alarms, held sockets), the phase, the repair queue, shadow
  reads, replication counters and corrupt legacy values.

Written by hand rather than with prometheus_client: the format is a few lines of text, and the
gateway needs one process-local registry per app (tests build many apps), which that library's
global registry makes awkward.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

# Latency buckets (seconds): the target is well under 1 ms, and the tail matters.
BUCKETS: tuple[float, ...] = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

ROUTE_FAMILIES = ("coordinator", "agent", "lock", "health", "admin")


def route_family(raw_path: str) -> str:
    """The first path segment when it is one of the API's families, else `other` (bounded labels)."""
    first = raw_path[1:].split("/", 1)[0].split("?", 1)[0]
    if first.startswith("coordinator"):
        return "coordinator"
    return first if first in ROUTE_FAMILIES else "other"


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0


class RequestMetrics:
    """Counters and latency histograms of the HTTP requests of one app."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, _Histogram] = {}

    def observe(self, method: str, family: str, status: int, seconds: float) -> None:
        key = (method, family, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(family)
        if hist is None:
            hist = self.latency[family] = _Histogram()
        hist.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        hist.total += seconds
        hist.n += 1

    def render(self) -> list[str]:
        out = [
            "# HELP agent_coord_http_requests_total HTTP requests answered, by method, route and status.",
            "# TYPE agent_coord_http_requests_total counter",
        ]
        for (method, family, status), n in sorted(self.requests.items()):
            out.append(
                f'agent_coord_http_requests_total{{method="{method}",route="{family}",status="{status}"}} {n}'
            )
        out += [
            "# HELP agent_coord_http_request_duration_seconds Time to answer a request, by route family.",
            "# TYPE agent_coord_http_request_duration_seconds histogram",
        ]
        for family, hist in sorted(self.latency.items()):
            running = 0
            for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                bucket = f'route="{family}",le="{le}"'
                out.append(f"agent_coord_http_request_duration_seconds_bucket{{{bucket}}} {running}")
            out.append(f'agent_coord_http_request_duration_seconds_sum{{route="{family}"}} {hist.total:.6f}')
            out.append(f'agent_coord_http_request_duration_seconds_count{{route="{family}"}} {hist.n}')
        return out


@dataclass(frozen=True, slots=True)
class Gauge:
    """One state figure: name, help text, type and its labelled values."""

    name: str
    help: str
    values: Iterable[tuple[dict[str, str], float]]
    kind: str = "gauge"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(requests: RequestMetrics, gauges: Iterable[Gauge]) -> str:
    """The whole exposition (text format 0.0.4)."""
    out = requests.render()
    for g in gauges:
        out.append(f"# HELP {g.name} {g.help}")
        out.append(f"# TYPE {g.name} {g.kind}")
        out.extend(f"{g.name}{_labels(labels)} {value:g}" for labels, value in g.values)
    return "\n".join(out) + "\n"
