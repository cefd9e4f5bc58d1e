"""gateway.http.middleware: request ids, JSON error bodies, and which requests the access log shows."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import ApiError
from gateway.http.middleware import client_request_id, wrap
from gateway.http.responses import json_response
from gateway.logs import configure_logging
from gateway.settings import LogSettings

pytestmark = pytest.mark.usefixtures("restore_logging")

HEX32 = re.compile(r"^[0-9a-f]{32}$")


async def ok(request: web.Request) -> web.StreamResponse:
    structlog.get_logger("gateway.test").info("inside", path=request.raw_path)
    return json_response({"ok": True})


async def api_error(_request: web.Request) -> web.StreamResponse:
    raise ApiError(409, {"error": "taken"})


async def crash(_request: web.Request) -> web.StreamResponse:
    raise RuntimeError("boom")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Make = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Serve one wrapped handler on a loopback port; every client is closed after the test."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(handler: Handler, **kw: Any) -> TestClient[web.Request, web.Application]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", wrap(handler, **kw))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def logging_to(level: str) -> io.StringIO:
    out = io.StringIO()
    configure_logging(LogSettings(level=level, format="json"), stream=out)
    return out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def access_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in lines(out) if line["event"] == "http.request"]


async def test_generated_request_ids_are_echoed_and_distinct(make: Make) -> None:
    """Without X-Request-Id each answer carries a fresh 32-hex id in its X-Request-Id header."""
    client = await make(ok)
    ids = []
    for _ in range(3):
        resp = await client.get("/x")
        assert resp.status == 200
        ids.append(resp.headers["X-Request-Id"])
    assert all(HEX32.match(i) for i in ids)
    assert len(set(ids)) == 3


async def test_client_request_id_is_echoed(make: Make) -> None:
    """A client's X-Request-Id comes back unchanged."""
    client = await make(ok)
    resp = await client.get("/x", headers={"X-Request-Id": "client-7"})
    assert resp.headers["X-Request-Id"] == "client-7"


async def test_errors_are_json_with_a_request_id(make: Make) -> None:
    """An ApiError answers its status and body; anything else is the router's 500 shape, with the
    request id and without the exception's text."""
    conflict = await (await make(api_error)).get("/x")
    assert conflict.status == 409
    assert await conflict.json() == {"error": "taken"}
    assert HEX32.match(conflict.headers["X-Request-Id"])
    failed = await (await make(crash)).get("/x")
    assert failed.status == 500
    body = await failed.json()
    assert (body["error"], body["requestId"]) == ("Internal server error", failed.headers["X-Request-Id"])
    assert "boom" not in body["message"]
    assert failed.headers["Content-Type"] == "application/json"
    assert HEX32.match(failed.headers["X-Request-Id"])


async def test_healthy_requests_log_no_access_line_at_info(make: Make) -> None:
    """At level info a fast 200 or 4xx logs no http.request line; lines from the handler still do."""
    out = logging_to("info")
    ok_client = await make(ok)
    resp = await ok_client.get("/x", headers={"X-Request-Id": "r-1"})
    await (await make(api_error)).get("/y")
    assert resp.status == 200
    assert access_lines(out) == []
    [inside] = [line for line in lines(out) if line["event"] == "inside"]
    assert inside["request_id"] == "r-1"


async def test_every_request_has_an_access_line_at_debug(make: Make) -> None:
    """At level debug every request logs http.request with its request id, status and time."""
    out = logging_to("debug")
    client = await make(ok)
    resp = await client.get("/a%2Fb?q=1")
    [line] = access_lines(out)
    assert line["level"] == "debug"
    assert line["request_id"] == resp.headers["X-Request-Id"]
    assert (line["method"], line["path"], line["status"]) == ("GET", "/a%2Fb?q=1", 200)
    assert line["ms"] >= 0


async def test_server_errors_log_a_warning_with_the_request_id(make: Make) -> None:
    """A 500 logs the traceback line and a warning access line, both with the request id."""
    out = logging_to("info")
    client = await make(crash)
    resp = await client.get("/boom", headers={"X-Request-Id": "r-500"})
    unhandled = [line for line in lines(out) if line["event"] == "http.unhandled"]
    assert [line["request_id"] for line in unhandled] == ["r-500"]
    [access] = access_lines(out)
    assert (access["level"], access["status"], access["request_id"]) == ("warning", 500, "r-500")
    assert resp.status == 500


async def test_slow_requests_log_at_info(make: Make) -> None:
    """A request slower than the threshold logs its access line at info."""
    out = logging_to("info")
    client = await make(ok, slow_request_ms=0.0)
    await client.get("/slow")
    [line] = access_lines(out)
    assert (line["level"], line["path"]) == ("info", "/slow")


async def test_request_context_does_not_leak_to_the_next_request(make: Make) -> None:
    """Two requests on one keep-alive connection: each line carries only its own request id."""
    out = logging_to("debug")
    client = await make(ok)
    await client.get("/1", headers={"X-Request-Id": "first"})
    await client.get("/2")
    first, second = access_lines(out)
    assert first["request_id"] == "first"
    assert HEX32.match(second["request_id"])


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("has space", False), ("über", False)],
)
def test_client_request_ids_are_kept_only_when_safe_to_log(sent: str, kept: bool) -> None:
    """A client's X-Request-Id is echoed and logged only if short printable ASCII; else a new one."""
    assert (client_request_id(sent) == sent) is kept


async def test_large_answers_are_gzipped_when_the_client_accepts_it() -> None:
    """A JSON answer of 1 KiB or more is gzip-encoded for a client that accepts gzip, else plain."""

    async def big(_request: web.Request) -> web.StreamResponse:
        return json_response({"items": ["x" * 40] * 100})

    async def small(_request: web.Request) -> web.StreamResponse:
        return json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/big", wrap(big))
    app.router.add_get("/small", wrap(small))
    async with TestClient(TestServer(app)) as client:
        zipped = await client.get("/big", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers.get("Content-Encoding") == "gzip"
        assert len((await zipped.json())["items"]) == 100  # the client decodes it
        plain = await client.get("/big", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        tiny = await client.get("/small", headers={"Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in tiny.headers
