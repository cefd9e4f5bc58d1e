"""JSON responses exactly as the Worker sends them.

Compact JSON (orjson keeps key order and writes raw UTF-8), `Content-Type: application/json`
exactly (no charset parameter), and the three CORS headers on every non-WebSocket response.
`OPTIONS` on any path is a 200 with an empty body, `Content-Length: 0` and no `Content-Type`.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = ["CORS_HEADERS", "error_response", "json_response", "options_response", "raw_json_response"]

CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Agent-Id, X-Resource-Path",
}
_JSON_HEADERS: Final = CIMultiDictProxy(CIMultiDict({**CORS_HEADERS, "Content-Type": "application/json"}))
_OPTIONS_HEADERS: Final = CIMultiDictProxy(CIMultiDict(CORS_HEADERS))


def raw_json_response(body: bytes, status: int = 200) -> web.Response:
    """An already rendered JSON body."""
    return web.Response(body=body, status=status, headers=_JSON_HEADERS)


def json_response(body: Any, status: int = 200) -> web.Response:
    """Render `body` once with orjson and answer it."""
    return web.Response(body=orjson.dumps(body), status=status, headers=_JSON_HEADERS)


def error_response(status: int, body: dict[str, Any]) -> web.Response:
    """An error answer: always a JSON body (the DOClient never checks the status)."""
    return json_response(body, status)


def options_response() -> web.Response:
    """Any OPTIONS request: 200, empty body, CORS headers only."""
    return web.Response(status=200, headers=_OPTIONS_HEADERS)
