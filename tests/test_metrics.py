"""Metrics: the Prometheus text exposition at /admin/metrics."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.app import MIGRATION, ROUTER, create_app
from gateway.clock import FakeClock
from gateway.http.token_file import TOKEN_FILE
from gateway.legacy import keys
from gateway.metrics import BUCKETS, Gauge, RequestMetrics, route_family
from gateway.settings import LegacySettings, MigrationSettings, Settings, StorageSettings

SAMPLE = re.compile(r"[a-z_]+(\{.*\})? [0-9.e+-]+|[+-]Inf|NaN")


def test_route_families_are_a_bounded_label_set() -> None:
    """Any path maps to one of a few route labels, so label cardinality stays bounded."""
    assert route_family("/coordinator/chat?limit=3") == "coordinator"
    assert route_family("/coordinatorX/agents") == "coordinator"
    assert route_family("/agent/a%2Fb/state") == "agent"
    assert route_family("/lock/src%2Fa.ts/check") == "lock"
    assert route_family("/health") == "health"
    assert route_family("/admin/status") == "admin"
    assert route_family("/r25f388z-nope") == "other"
    assert route_family("/") == "other"


def test_histogram_buckets_are_cumulative_and_counts_add_up() -> None:
    """Each bucket counts the requests at or under its bound; +Inf equals the count."""
    m = RequestMetrics()
    for seconds in (0.0001, 0.0004, 0.002, 7.0):
        m.observe("GET", "coordinator", 200, seconds)
    m.observe("POST", "coordinator", 400, 0.0001)
    text = m.render()
    assert 'agent_coord_http_requests_total{method="GET",route="coordinator",status="200"} 4.0' in text
    assert 'agent_coord_http_requests_total{method="POST",route="coordinator",status="400"} 1.0' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{le="0.00025",route="coordinator"} 2.0' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{le="0.0005",route="coordinator"} 3.0' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{le="5.0",route="coordinator"} 4.0' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{le="+Inf",route="coordinator"} 5.0' in text
    assert 'agent_coord_http_request_duration_seconds_count{route="coordinator"} 5.0' in text


def _requests_part(text: str) -> str:
    """The request families of an exposition, without the process's own (`process_*`,
    `python_*`), whose values move between two scrapes."""
    return "".join(line + "\n" for line in text.splitlines() if "agent_coord_http_" in line)


def test_request_figures_are_exposed_as_prometheus_client_exposes_them() -> None:
    """The plain counts render exactly as prometheus_client's labelled Counter and Histogram
    (what the gateway used before) render the same requests: names, labels, order, values."""
    registry = CollectorRegistry(auto_describe=False)
    counter = Counter(
        "agent_coord_http_requests",
        "HTTP requests answered, by method, route and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    histogram = Histogram(
        "agent_coord_http_request_duration_seconds",
        "Time to answer a request, by route family.",
        ["route"],
        buckets=BUCKETS,
        registry=registry,
    )
    m = RequestMetrics()
    assert _requests_part(m.render()) == generate_latest(registry).decode()  # before any request
    observed = [
        ("GET", "lock", 200, 0.0003),
        ("POST", "coordinator", 409, 0.00025),  # on a bound: counted in that bucket
        ("GET", "coordinator", 200, 0.1234567),
        ("GET", "lock", 404, 12.5),  # over the last bound
        ("GET", "lock", 200, 0.0),
        ("GET", "health", 200, 0.000001),
        ("POST", "coordinator", 409, 1.0),
    ] * 3
    for method, family, status, seconds in observed:
        m.observe(method, family, status, seconds)
        counter.labels(method, family, str(status)).inc()
        histogram.labels(family).observe(seconds)
    assert _requests_part(m.render()) == generate_latest(registry).decode()
    assert m.requests[("GET", "lock", 200)] == 6


def test_a_large_counter_keeps_every_digit() -> None:
    """A counter of a million or more is printed exactly (the hand-written text said 1.23457e+06)."""
    m = RequestMetrics()
    m.add_state(
        lambda: [
            Gauge("agent_coord_replication_total", "h", [({"outcome": "replicated"}, 1_234_567)], "counter")
        ]
    )
    lines = m.render().splitlines()
    assert 'agent_coord_replication_total{outcome="replicated"} 1.234567e+06' in lines
    assert "# TYPE agent_coord_replication_total counter" in lines


def test_gauge_labels_are_escaped() -> None:
    """Label values with quotes, backslashes or newlines stay one valid line."""
    m = RequestMetrics()
    m.add_state(lambda: [Gauge("g", "help", [({"key": 'a"b\\c\nd'}, 1)])])
    assert 'g{key="a\\"b\\\\c\\nd"} 1.0' in m.render()


def test_two_apps_keep_their_own_figures() -> None:
    """Each app has its own registry: one app's requests never show in another's metrics."""
    a, b = RequestMetrics(), RequestMetrics()
    a.observe("GET", "lock", 200, 0.001)
    assert 'route="lock"' in a.render()
    assert 'route="lock"' not in b.render()


async def scrape(base: str, token: str) -> str:
    async with ClientSession() as s:
        unauthorized = await s.get(f"{base}/admin/metrics")
        assert unauthorized.status == 401
        r = await s.get(f"{base}/admin/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await r.text()


async def test_admin_metrics_reports_requests_and_state(tmp_path: Path) -> None:
    """After some traffic the endpoint shows request counts, open actors, alarms and the phase."""
    settings = Settings(storage=StorageSettings(data_dir=tmp_path))
    server = TestServer(create_app(settings, clock=FakeClock()))
    await server.start_server()
    try:
        async with ClientSession() as s:
            base = f"http://127.0.0.1:{server.port}"
            await (await s.post(f"{base}/coordinator/chat", json={"author": "a", "message": "hi"})).read()
            await (await s.post(f"{base}/lock/src%2Fa.ts/lock", json={"agentId": "a", "ttlMs": 60000})).read()
            await (await s.get(f"{base}/nope")).read()
        text = await scrape(base, (tmp_path / TOKEN_FILE).read_text().strip())
    finally:
        await server.close()
    lines = text.splitlines()
    assert 'agent_coord_http_requests_total{method="POST",route="coordinator",status="200"} 1.0' in lines
    assert 'agent_coord_http_requests_total{method="GET",route="other",status="404"} 1.0' in lines
    assert "agent_coord_actors_open 2.0" in lines  # the coordinator and the lock
    assert "agent_coord_alarms_pending 1.0" in lines
    assert 'agent_coord_phase{phase="cutover"} 1.0' in lines
    assert "agent_coord_repair_queue_depth 0.0" in lines
    # the process's own figures beside them: its collector's pauses and its CPU
    assert any(line.startswith('python_gc_collections_total{generation="0"} ') for line in lines)
    assert any(line.startswith("process_cpu_seconds_total ") for line in lines)
    for line in lines:  # every sample line is `name{labels} value`
        assert line.startswith("#") or SAMPLE.fullmatch(line), line


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def phased(tmp_path: Path, redis_url: str, clock: FakeClock) -> AsyncIterator[TestServer]:
    settings = Settings(
        storage=StorageSettings(data_dir=tmp_path),
        legacy=LegacySettings(redis_url=redis_url, timeout_s=5.0),
        migration=MigrationSettings(phase="write-through", shadow_sample_rate=1.0, admin_token="t"),
    )
    server = TestServer(create_app(settings, clock=clock))
    await server.start_server()
    yield server
    await server.close()


async def test_admin_metrics_with_redis_reports_replication_shadow_reads_and_corrupt_values(
    phased: TestServer, redis_url: str, clock: FakeClock
) -> None:
    """In write-through: every replicated entity, every compared shadow read and every unreadable
    legacy value met shows in the exposition, by outcome, domain and key."""
    base = f"http://127.0.0.1:{phased.port}"
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        await r.hset(keys.TASKS, "broken", "{not json")
    finally:
        await r.aclose()
    async with ClientSession() as s:
        for title in ("one", "two"):
            await (await s.post(f"{base}/coordinator/tasks", json={"title": title})).read()
            await clock.advance(1)  # distinct times: both stores list them in one order
        await (await s.get(f"{base}/coordinator/tasks")).read()
    await phased.app[ROUTER].drain()
    await phased.app[MIGRATION].shadow.drain()
    lines = (await scrape(base, "t")).splitlines()
    assert 'agent_coord_replication_total{outcome="replicated"} 2.0' in lines
    assert 'agent_coord_replication_total{outcome="queued"} 0.0' in lines
    assert 'agent_coord_shadow_reads_total{domain="task",outcome="compared"} 1.0' in lines
    assert 'agent_coord_shadow_reads_total{domain="task",outcome="mismatched"} 0.0' in lines
    assert [x for x in lines if "corrupt_values_total{" in x] == [
        'agent_coord_legacy_corrupt_values_total{key="agent-coord:tasks"} 1.0'
    ]
    assert 'agent_coord_phase{phase="write-through"} 1.0' in lines
