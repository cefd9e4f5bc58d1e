"""JSON responses exactly as the Worker sends them.

Compact JSON (orjson keeps key order and writes raw UTF-8), `Content-Type: application/json`
exactly (no charset parameter), and the three CORS headers on every non-WebSocket response.
`OPTIONS` on any path is a 200 with an empty body, `Content-Length: 0` and no `Content-Type`.

A JSON answer is a `JsonAnswer`: an aiohttp `Response` whose headers are made only when some
code asks for them, and which writes itself in one step when nobody did. aiohttp's own way
(`StreamResponse.prepare`, `_prepare_headers`, `_write_headers`, `write_eof` and the writer's
`write_eof`) copies the headers into a new `CIMultiDict`, adds `Content-Length`, `Date` and
`Server` one by one, serializes them and passes the result through four coroutines: 12-25 us
of a request on a slow machine (issue 13, docs/benchmarks.md, twelfth pass). A `JsonAnswer`
whose headers were never touched, answering an HTTP/1.1 keep-alive request that is not `HEAD`,
without compression, joins a status line and header block kept per status with the request id,
length and date, and hands that and the body to the server's `AnswerBatch` (which sends it
now, or with the other answers of the event loop's turn at the next:
`gateway/http/answer_batch.py`) or else to aiohttp's writer, byte for byte what aiohttp writes
(tests/app/test_fast_answers.py compares them on the wire). Anything else (a header read
or set, a cookie, compression, `force_close`, HTTP/1.0, `Connection: close`, `HEAD`, an
`on_response_prepare` signal, a writer that is not aiohttp's plain `StreamWriter`) goes through
aiohttp's own path, unchanged.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_writer import StreamWriter
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import REASON_PHRASES
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "CORS_HEADERS",
    "REQUEST_ID_HEADER",
    "JsonAnswer",
    "error_response",
    "json_response",
    "options_response",
    "raw_json_response",
    "set_request_id",
]

CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Agent-Id, X-Resource-Path",
}
REQUEST_ID_HEADER: Final = "X-Request-Id"
_JSON_HEADERS: Final = CIMultiDictProxy(CIMultiDict({**CORS_HEADERS, "Content-Type": "application/json"}))
_OPTIONS_HEADERS: Final = CIMultiDictProxy(CIMultiDict(CORS_HEADERS))
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_FIRST_WITH_BODY: Final = 200  # 1xx answers carry no body
_heads: dict[int, bytes] = {}
_TAIL: Final = f"\r\n{hdrs.SERVER}: {SERVER_SOFTWARE}\r\n\r\n".encode()


def _head(status: int, reason: str) -> bytes:
    """The status line and the JSON headers of an answer, as aiohttp serializes them."""
    head = _heads.get(status)
    if head is None:
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in _JSON_HEADERS.items())]
        head = _heads[status] = ("\r\n".join(lines) + "\r\n").encode()
    return head


def _prepare_signals(request: BaseRequest) -> bool:
    """Would aiohttp's `prepare` send an `on_response_prepare` signal for `request`?"""
    if not isinstance(request, web.Request):
        return False  # aiohttp's low-level server: no application, no signals
    match_info = request._match_info
    if match_info is not None:
        for app in match_info._apps:
            if app.on_response_prepare:
                return True
    return False


class JsonAnswer(web.Response):
    """A JSON body with the CORS headers and `Content-Type: application/json`, written in one
    step when its headers were never asked for (see the module docstring)."""

    _rid: str | None = None
    _real_headers: CIMultiDict[str] | None = None

    def __init__(self, body: bytes, status: int = 200) -> None:
        # What Response.__init__ sets for a bytes body and no other argument, but the headers
        self._state = {}
        self._status = status
        self._reason = REASON_PHRASES.get(status, "")
        self._body = body
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    @property  # type: ignore[override]
    def _headers(self) -> CIMultiDict[str]:
        """aiohttp's own code reads and writes the headers here: made on first use."""
        headers = self._real_headers
        if headers is None:
            headers = self._real_headers = CIMultiDict(_JSON_HEADERS)
            if self._rid is not None:
                headers[REQUEST_ID_HEADER] = self._rid
        return headers

    @_headers.setter
    def _headers(self, value: CIMultiDict[str]) -> None:
        self._real_headers = value

    def set_request_id(self, rid: str) -> None:
        """The `X-Request-Id` header, without making the headers if nobody has yet."""
        if self._real_headers is None and rid.isascii() and rid.isprintable():
            self._rid = rid
        else:
            self._headers[REQUEST_ID_HEADER] = rid

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        """Write the whole answer now when the fast path applies, else aiohttp's `prepare`."""
        writer = request._payload_writer
        if (
            self._real_headers is None
            and self._payload_writer is None
            and not self._eof_sent
            and self._keep_alive is None
            and not self._compression
            and not self._cookies
            and not self._chunked
            and request.version == HttpVersion11
            and request.keep_alive
            and request.method != hdrs.METH_HEAD
            and self._status >= _FIRST_WITH_BODY
            and self._status not in _NO_BODY_STATUSES
            and type(writer) is StreamWriter
            and writer._on_headers_sent is None
            and writer._on_chunk_sent is None
            and writer.output_size == 0
            and not _prepare_signals(request)
        ):
            await self._write_all(request, writer)
            return None
        return await super().prepare(request)

    async def _write_all(self, request: BaseRequest, writer: StreamWriter) -> None:
        body = self._body
        assert isinstance(body, bytes)  # noqa: S101 - set by __init__ only
        parts = [_head(self._status, self._reason)]
        if self._rid is not None:
            parts += (b"X-Request-Id: ", self._rid.encode(), b"\r\n")
        parts += (
            b"Content-Length: ",
            str(len(body)).encode(),
            b"\r\nDate: ",
            rfc822_formatted_time().encode(),
            _TAIL,
        )
        self._keep_alive = True
        self._must_be_empty_body = False
        head = b"".join(parts)
        protocol = request._protocol
        batch = getattr(protocol._manager, "answer_batch", None)  # the gateway's server has one
        if batch is not None and batch.answer(protocol, head, body, request._payload.is_eof()):
            size = len(head) + len(body)  # what the writer's own write counts
            writer.buffer_size += size
            writer.output_size += size
        elif body:
            writer._writelines((head, body))
        else:
            writer._write(head)
        await writer.drain()
        writer._eof = True
        self._eof_sent = True  # write_eof, which aiohttp calls next, returns at once
        self._body_length = writer.output_size


def set_request_id(response: web.StreamResponse, rid: str) -> None:
    """Give `response` the `X-Request-Id` header."""
    if isinstance(response, JsonAnswer):
        response.set_request_id(rid)
    else:
        response.headers[REQUEST_ID_HEADER] = rid


def raw_json_response(body: bytes, status: int = 200) -> web.Response:
    """An already rendered JSON body."""
    return JsonAnswer(body, status)


def json_response(body: Any, status: int = 200) -> web.Response:
    """Render `body` once with orjson and answer it."""
    return JsonAnswer(orjson.dumps(body), status)


def error_response(status: int, body: dict[str, Any]) -> web.Response:
    """An error answer: always a JSON body (the DOClient never checks the status)."""
    return json_response(body, status)


def options_response() -> web.Response:
    """Any OPTIONS request: 200, empty body, CORS headers only."""
    return web.Response(status=200, headers=_OPTIONS_HEADERS)
