"""What wraps every request: a request id, the access log, and JSON error bodies on every status.

It is one function around the gateway's single handler rather than a chain of aiohttp
middlewares (each of which costs a coroutine per request). Errors become the DO shapes:
a `GatewayError` (an `ApiError` such as a 400/404/405/409/413, or a 503 from the actor host)
answers its own status and body; anything else is the router's 500
`{"error":"Internal server error","message":...}` with the CORS headers. A 5xx body never
carries the error's own text (a Redis address, a command, an exception): it says what kind of
failure it was and gives the request id, and the details are logged under that id.

Request ids: the client's `X-Request-Id` if it sent a safe one (at most 128 printable ASCII
characters), else 32 random hex characters. The id is bound to the logging context for the
whole request, so every line logged while it is handled carries `request_id`, and it is echoed
in the `X-Request-Id` response header (not on WebSocket upgrades).

The access line (`http.request`: method, raw path, status, ms) is logged at a level that depends
on the outcome: `warning` for a 5xx, `info` for a request slower than `SLOW_REQUEST_MS`, `debug`
for everything else. One line per request at `info` cost about 70 us through structlog and the
stdlib handler, more than the rest of a `/health` request (docs/benchmarks.md); at the default
level `info` a healthy request now logs nothing, and `log.level = "debug"` brings every line back.
The level is checked before the line is built, so a filtered line costs almost nothing. The
path in every line has the values of secret-looking query parameters (`?token=`) masked.

A client that hangs up while its body is read is a client abort: one `http.client_abort` line at
info and status 499 in the metrics and the access line, not an unhandled error and a 500.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web

from gateway.errors import GatewayError
from gateway.http.responses import error_response, set_request_id
from gateway.logs import bind_request_id, clear_request_context, mask_query
from gateway.metrics import RequestMetrics, route_family

__all__ = ["ACCESS_LOGGER", "SLOW_REQUEST_MS", "Handler", "wrap"]

ACCESS_LOGGER: Final = "gateway.access"
# A request this slow is worth a line at the default level: p99 under 64 concurrent connections is
# well under 250 ms on a 2-core machine (docs/benchmarks.md), so this marks something abnormal.
SLOW_REQUEST_MS: Final = 1000.0
_SERVER_ERROR: Final = 500
# nginx's status for a request whose client closed the connection before the answer: it is
# counted and logged as that, not as a failure of the gateway.
CLIENT_CLOSED_REQUEST: Final = 499
# The router's 500 shape, without the exception text (it can name internals): the log has it.
INTERNAL_ERROR: Final = {
    "error": "Internal server error",
    "message": "an unexpected error; the gateway log has the details under this request id",
}

log = structlog.get_logger(ACCESS_LOGGER)
# structlog's filter_by_level asks this same stdlib logger; asking it first skips building the line.
_access = logging.getLogger(ACCESS_LOGGER)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# A correlation id, not a secret (clients may send their own): a process-local generator, seeded
# from os.urandom once, saves the getrandom system call that uuid4 and secrets make per request.
_ids = random.Random()  # noqa: S311


MAX_CLIENT_REQUEST_ID = 128
_PRINTABLE = frozenset(range(0x21, 0x7F))


def client_request_id(value: str | None) -> str | None:
    """The client's request id if it is safe to log and echo (1-128 printable ASCII, no spaces)."""
    if not value or len(value) > MAX_CLIENT_REQUEST_ID:
        return None
    if not all(ord(ch) in _PRINTABLE for ch in value):
        return None
    return value


COMPRESS_MIN_BYTES = 1024  # below this gzip costs more CPU than the bytes it saves


def maybe_compress(request: web.Request, response: web.StreamResponse) -> None:
    """gzip a JSON answer of at least COMPRESS_MIN_BYTES when the client accepts it, as the
    upstream worker's answers are (do-api.md 12.7); small answers stay plain."""
    if (
        isinstance(response, web.Response)
        and isinstance(response.body, bytes)
        and len(response.body) >= COMPRESS_MIN_BYTES
        and "gzip" in request.headers.get("Accept-Encoding", "")
    ):
        response.enable_compression(web.ContentCoding.gzip)


def client_gone(request: web.Request) -> bool:
    """Has the client closed the connection of `request`?"""
    transport = request.transport
    return transport is None or transport.is_closing()


def new_request_id() -> str:
    """32 random hex characters, the shape `uuid4().hex` had, at a fifth of its cost."""
    return f"{_ids.getrandbits(128):032x}"


def _error_answer(e: Exception, request: web.Request, rid: str) -> web.StreamResponse:
    """The JSON error answer for what the handler raised (logged as the kind of error it is)."""
    path = mask_query(request.raw_path)
    if isinstance(e, GatewayError):
        if e.status >= _SERVER_ERROR:
            log.warning(
                "http.server_error",
                method=request.method,
                path=path,
                status=e.status,
                error_type=type(e).__name__,
                detail=e.message,
            )
        return error_response(e.status, e.client_body(rid))
    if isinstance(e, web.HTTPException):  # raised by aiohttp itself (e.g. a body over the limit)
        return error_response(e.status, {"error": e.reason})
    if isinstance(e, ConnectionResetError) and client_gone(request):
        # the client hung up while its body was read: nobody receives an answer
        log.info("http.client_abort", method=request.method, path=path, error=str(e))
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    log.error("http.unhandled", method=request.method, path=path, exc_info=e)
    return error_response(500, {**INTERNAL_ERROR, "requestId": rid})


def wrap(
    handler: Handler, *, slow_request_ms: float = SLOW_REQUEST_MS, metrics: RequestMetrics | None = None
) -> Handler:
    """`handler` with request ids, access logging, JSON errors and (given `metrics`) request metrics."""

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        rid = client_request_id(request.headers.get("X-Request-Id")) or new_request_id()
        bind_request_id(rid)
        try:
            try:
                response = await handler(request)
            except Exception as e:  # noqa: BLE001 - every error becomes a JSON answer
                response = _error_answer(e, request, rid)
            if not isinstance(response, web.WebSocketResponse):
                set_request_id(response, rid)
                maybe_compress(request, response)
            ms = (time.perf_counter() - started) * 1000
            status = response.status
            if metrics is not None:
                metrics.observe(request.method, route_family(request.raw_path), status, ms / 1000)
            if status >= _SERVER_ERROR:
                level = logging.WARNING
            elif ms >= slow_request_ms:
                level = logging.INFO
            else:
                level = logging.DEBUG
            if _access.isEnabledFor(level):
                log.log(
                    level,
                    "http.request",
                    method=request.method,
                    path=mask_query(request.raw_path),  # masked only for a line that is logged
                    status=status,
                    ms=round(ms, 3),
                )
            return response
        finally:
            clear_request_context()

    return handle
