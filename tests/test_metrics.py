"""Metrics: the Prometheus text exposition at /admin/metrics."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.clock import FakeClock
from gateway.http.admin import TOKEN_FILE
from gateway.metrics import Gauge, RequestMetrics, render, route_family
from gateway.settings import Settings, StorageSettings


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
    text = render(m, [])
    assert 'agent_coord_http_requests_total{method="GET",route="coordinator",status="200"} 4' in text
    assert 'agent_coord_http_requests_total{method="POST",route="coordinator",status="400"} 1' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{route="coordinator",le="0.00025"} 2' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{route="coordinator",le="0.0005"} 3' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{route="coordinator",le="5.0"} 4' in text
    assert 'agent_coord_http_request_duration_seconds_bucket{route="coordinator",le="+Inf"} 5' in text
    assert 'agent_coord_http_request_duration_seconds_count{route="coordinator"} 5' in text


def test_gauge_labels_are_escaped() -> None:
    """Label values with quotes, backslashes or newlines stay one valid line."""
    text = render(RequestMetrics(), [Gauge("g", "help", [({"key": 'a"b\\c\nd'}, 1)])])
    assert 'g{key="a\\"b\\\\c\\nd"} 1' in text


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
            unauthorized = await s.get(f"{base}/admin/metrics")
            assert unauthorized.status == 401
            token = (tmp_path / TOKEN_FILE).read_text().strip()
            r = await s.get(f"{base}/admin/metrics", headers={"Authorization": f"Bearer {token}"})
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
    finally:
        await server.close()
    assert 'agent_coord_http_requests_total{method="POST",route="coordinator",status="200"} 1' in text
    assert 'agent_coord_http_requests_total{method="GET",route="other",status="404"} 1' in text
    assert "agent_coord_actors_open 2" in text  # the coordinator and the lock
    assert "agent_coord_alarms_pending 1" in text
    assert 'agent_coord_phase{phase="cutover"} 1' in text
    assert "agent_coord_repair_queue_depth 0" in text
    for line in text.splitlines():  # every sample line is `name{labels} value`
        assert line.startswith("#") or re.fullmatch(r"[a-z_]+(\{.*\})? [0-9.e+-]+", line), line
