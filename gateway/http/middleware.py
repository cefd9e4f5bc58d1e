"""What wraps every request: a request id, the access log, and JSON error bodies on every status.

It is one function around the gateway's single handler rather than a chain of aiohttp
middlewares (each of which costs a coroutine per request). Errors become the DO shapes:
a `GatewayError` (an `ApiError` such as a 400/404/405/409/413, or a 503 from the actor host)
answers its own status and body; anything else is the router's 500
`{"error":"Internal server error","message":...}` with the CORS headers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from gateway.errors import GatewayError
from gateway.http.responses import error_response
from gateway.logs import bind_request_id, clear_request_context

__all__ = ["Handler", "wrap"]

log = structlog.get_logger("gateway.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wrap(handler: Handler) -> Handler:
    """`handler` with request ids, access logging and JSON errors."""

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        bind_request_id(rid)
        try:
            try:
                response = await handler(request)
            except GatewayError as e:
                response = error_response(e.status, e.body())
            except web.HTTPException as e:  # raised by aiohttp itself (e.g. a body over the limit)
                response = error_response(e.status, {"error": e.reason})
            except Exception as e:
                log.exception("http.unhandled", method=request.method, path=request.raw_path)
                response = error_response(
                    500, {"error": "Internal server error", "message": f"{type(e).__name__}: {e}"}
                )
            if not isinstance(response, web.WebSocketResponse):
                response.headers["X-Request-Id"] = rid
            log.info(
                "http.request",
                method=request.method,
                path=request.raw_path,
                status=response.status,
                ms=round((time.perf_counter() - started) * 1000, 3),
            )
            return response
        finally:
            clear_request_context()

    return handle
