"""A 5xx tells the client what kind of failure it was and the request id, never the internals
(Redis addresses, commands, exception text); the details go to the log under that request id."""

from __future__ import annotations

import io
import json

import pytest
import redis

from gateway.legacy import keys
from gateway.logs import configure_logging
from gateway.settings import LogSettings
from gateway.testing import RedisServer

from .conftest import Api

pytestmark = pytest.mark.usefixtures("restore_logging")


def log_lines(out: io.StringIO, event: str) -> list[dict[str, object]]:
    return [line for line in map(json.loads, out.getvalue().splitlines()) if line["event"] == event]


@pytest.mark.parametrize("store_kind", ["write-through"])
async def test_a_redis_error_answers_a_generic_500_and_logs_the_command(api: Api, redis_url: str) -> None:
    """A WRONGTYPE from Redis is a 500 naming neither Redis nor the command; the log has both."""
    out = io.StringIO()
    configure_logging(LogSettings(level="info", format="json"), stream=out)
    client = redis.Redis.from_url(redis_url)
    client.set(keys.TASKS, "not a hash")
    client.close()
    resp = await api.request("GET", "/coordinator/tasks")
    body = await resp.json()
    assert resp.status == 500
    rid = resp.headers["X-Request-Id"]
    assert body == {"error": "Internal server error", "requestId": rid}
    [logged] = log_lines(out, "http.server_error")
    assert logged["request_id"] == rid
    assert "WRONGTYPE" in str(logged["detail"])


@pytest.mark.parametrize("store_kind", ["write-through"])
async def test_an_unreachable_redis_answers_a_503_without_its_address(
    api: Api, redis_server: RedisServer
) -> None:
    """With Redis stopped, a write is a retryable 503 that names no host, port, user or database."""
    out = io.StringIO()
    configure_logging(LogSettings(level="info", format="json"), stream=out)
    redis_server.stop()
    try:
        resp = await api.request("POST", "/coordinator/chat", {"author": "a", "message": "m"})
        body = await resp.json()
    finally:
        redis_server.start()
    assert resp.status == 503
    assert body == {
        "error": "A backing store is unavailable; retry later",
        "retryable": True,
        "requestId": resp.headers["X-Request-Id"],
    }
    [logged] = log_lines(out, "http.server_error")
    assert str(redis_server.port) in str(logged["detail"])
