"""Requests aiohttp's HTTP parser refuses before any handler runs get a JSON error answer too."""

from __future__ import annotations

import orjson
import pytest

from gateway.testing.raw_http import exchange

from .conftest import Served


@pytest.mark.parametrize(
    ("name", "request_bytes"),
    [
        ("a request line over 64 KiB", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("an invalid method", b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("an unknown method", b"BREW /coordinator/agents HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("a bad Content-Length", b"POST /coordinator/chat HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n\r\n"),
        ("a header line over 64 KiB", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n"),
    ],
)
async def test_a_request_the_parser_refuses_gets_a_json_400(
    served: Served, name: str, request_bytes: bytes
) -> None:
    """Each malformed request gets a 4xx with a JSON body `{error, message, requestId}` (the message
    cut to 200 characters) and the CORS headers, not aiohttp's plain text."""
    answer = await exchange(served.host, served.port, request_bytes)
    assert 400 <= answer.status < 500, name
    assert answer.content_type == "application/json", (name, answer.body[:200])
    body = orjson.loads(answer.body)
    assert set(body) == {"error", "message", "requestId"}
    assert len(body["message"]) <= 200
    assert answer.headers["x-request-id"] == body["requestId"]
    assert answer.headers["access-control-allow-origin"] == "*"


async def test_the_server_keeps_serving_after_parser_errors(served: Served) -> None:
    """After a refused request a new connection is served as usual."""
    await exchange(served.host, served.port, b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await exchange(served.host, served.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 200
    assert orjson.loads(answer.body)["status"] == "ok"
