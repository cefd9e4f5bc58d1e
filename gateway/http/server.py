"""The HTTP server around the app: aiohttp's, answering its own errors in JSON too.

aiohttp answers a request it cannot parse (an invalid method, a request line over
`max_line_size`, a bad `Content-Length`) itself, in plain text, before any handler or middleware
runs: `RequestHandler.handle_error` builds that answer, and nothing of the application sees the
request. The only way to change it is to serve connections with a `RequestHandler` whose
`handle_error` answers JSON. aiohttp offers no option for that, so `GatewayRunner` (an
`AppRunner`) makes its `web.Server` hand out `JsonErrorRequestHandler`s: both are switched to
subclasses that add methods but no state (same slots), which keeps every other behaviour
of aiohttp's. tests/app/test_parser_errors.py fails if a new aiohttp stops calling it.

The runner's server also skips aiohttp's router for the gateway's one catch-all route
(`direct_handler`): the app routes the raw path itself (gateway/app.py), so resolving the route
only matched `/{tail}` against the decoded path and built a match object, every request (about
5 us of a `/health` that costs 50). A request aiohttp's router would treat differently (a
target that is not a path, an `Expect` header) still goes through `Application._handle`.

Its connections count the requests they read, and its request factory those whose handling
begins, for the server's `AnswerBatch`: the answers of one turn of the event loop leave together
at the start of the next (`gateway/http/answer_batch.py`).

`run` serves an app until SIGTERM/SIGINT, as `web.run_app` does, but with this runner, on a
uvloop event loop: libuv's loop costs less per socket event than asyncio's selector loop, which
is most of what a request costs aiohttp itself (docs/benchmarks.md, issue 13). Once the app has
started, what is on the heap (modules, classes, settings: about 68,000 objects) is moved out of
the collector's reach with `gc.freeze()`: a full collection no longer walks it, which halved the
full collections under the realistic mix (p50 43 ms to 19 ms), each of them a pause of every
request in flight. Then the collector's thresholds are set (`GC_THRESHOLDS`). CPython's young
threshold of 700 was too small: a request in flight builds and frees thousands of objects (a
task listing, a chat page), so the collector ran about 90 times a second under the mix and
promoted what in-flight requests held into the older generations, which set off a full
collection every 1-2 s; with the heap write-through keeps (listings, tracked hashes) each took
40-120 ms, and they were what 70-100 % of the requests above the p99 of the mix's later rounds
waited on (docs/benchmarks.md, write-through, seventh pass). Too large a young threshold is the
other tail: a young collection's pause grows with what it walks, and each holds every request in
flight. At 7,000 a 10 s round of the mix saw about 7 young collections of 4 ms (up to 8) and one
of the middle generation of 19 ms; at 2,000 about 23 of 2 ms (up to 3.6) and three of 8-12 ms,
and the mix's p99 was lower in each of five paired runs, cutover and write-through
(docs/benchmarks.md, sixteenth pass). Because more frequent young collections promote more of
what is in flight, a full collection waits for 100 collections of the middle generation instead
of 10: about one every seven minutes under the mix instead of one every two. Full collections
find next to nothing here (the gateway makes few cycles): cycles are still collected, later.
The collector's share of the CPU stays under 1 %.

On that loop, aiohttp also hands an answer's headers and body to the transport as two buffers
(`writelines`, one `writev`) instead of joining them into one new bytes object first
(`use_writelines`): aiohttp joins on every Python before 3.12.9 because asyncio's own selector
transport mishandled `writelines` in 3.12.0-3.12.8 and 3.13.0-3.13.1; uvloop's transport has
its own, which queues the buffers and writes them with one `writev`. The join copied every large
answer once more (a `/work` or task listing of 200-300 KB: 57,000 instructions a request under
callgrind, issue 13).

Large buffers are kept in the C heap (`keep_large_buffers`): glibc's allocator gives each
allocation over its mmap threshold (128 KiB at start, raised only up to the largest block freed
so far) fresh pages from the kernel and returns them on free, so every `/work` answer and task
listing of 200-300 KB that was larger than the last one (the open tasks grow through the
realistic mix) faulted in each of its pages again, zeroed by the kernel: 71 minor faults an
answer of 300 KB. `run` sets the threshold to `MMAP_THRESHOLD_BYTES` and the heap's trim
threshold to `TRIM_THRESHOLD_BYTES`, so such buffers reuse freed heap memory (issue 13: 45
faults and about 15 % of the CPU of a replayed cycle of listings and `/work`s gone;
docs/benchmarks.md, eleventh pass). The process keeps up to `TRIM_THRESHOLD_BYTES` of freed
heap it could have returned.

Connections are accepted by `AcceptAllSite`, not by uvloop's server: uvloop (libuv 1.52) accepts
one pending connection per turn of the loop, so when many clients connect at once to a busy
gateway the last of them waits as many turns as there are connections before it, each turn
serving every request in flight (64 connections opened together by wrk's mix waited up to
170-450 ms for their first answer while the p99 was ~33 ms; docs/benchmarks.md, "The maximum
latency of the mix"). `AcceptAllSite` watches the listening socket itself and accepts every
pending connection in one turn, as asyncio's own server does, then hands each to the loop
(`connect_accepted_socket`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import signal
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Final

import structlog
import uvloop
from aiohttp import http_writer, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from gateway.http import request_task
from gateway.http.answer_batch import AnswerBatch
from gateway.http.middleware import new_request_id
from gateway.http.responses import error_response

__all__ = [
    "AcceptAllSite",
    "GatewayRunner",
    "JsonErrorRequestHandler",
    "direct_handler",
    "keep_large_buffers",
    "run",
    "use_writelines",
]

log = structlog.get_logger("gateway.access")

MAX_MESSAGE_CHARS: Final = 200  # aiohttp's messages quote the offending input, which can be 64 KiB
_SERVER_ERROR: Final = 500
GC_THRESHOLDS: Final = (2_000, 10, 100)
"""`gc.set_threshold` while serving: net allocations of tracked objects between two young
collections, young collections between two of the middle generation, middle ones between two
full collections (CPython: 700, 10, 10; see the module docstring)."""
MMAP_THRESHOLD_BYTES: Final = 4 * 1024 * 1024
"""glibc: allocations from this size on get their own pages from the kernel (mmap)."""
TRIM_THRESHOLD_BYTES: Final = 32 * 1024 * 1024
"""glibc: free memory at the top of the heap past this is returned to the kernel."""
_M_TRIM_THRESHOLD: Final = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD: Final = -3
ACCEPT_PAUSE_S: Final = 1.0
"""Out of file descriptors: how long accepting pauses (asyncio's own server waits as long)."""
_OUT_OF_FDS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the errors it handles itself with a JSON body,
    and counting the requests it reads for the server's `AnswerBatch`."""

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        messages = self._messages
        queued = len(messages)
        RequestHandler.data_received(self, data)  # not super(): this runs for every read
        if len(messages) > queued:
            self._manager.answer_batch.received += len(messages) - queued  # type: ignore[union-attr]

    def connection_lost(self, exc: BaseException | None) -> None:
        manager = self._manager
        if manager is not None and self._messages:  # read, and now never to be handled
            manager.answer_batch.started += len(self._messages)  # type: ignore[attr-defined]
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """`{"error": <reason>, "message": <what was wrong>, "requestId": ...}` with the CORS
        headers, on a connection that is then closed (as aiohttp's own answer)."""
        if request.writer.output_size > 0:  # as aiohttp: an answer has begun, the connection is lost
            raise ConnectionError("an answer was already partly sent; cannot send an error answer")
        rid = new_request_id()
        detail = (message or (str(exc) if exc is not None else "") or _reason(status)).strip()
        detail = detail.splitlines()[0][:MAX_MESSAGE_CHARS] if detail else _reason(status)
        if status >= _SERVER_ERROR:
            log.error("http.server_error", status=status, request_id=rid, exc_info=exc)
        else:
            log.info("http.bad_request", status=status, detail=detail, request_id=rid)
        response = error_response(status, {"error": _reason(status), "message": detail, "requestId": rid})
        response.headers["X-Request-Id"] = rid
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    """`web.Server` whose connections are served by `JsonErrorRequestHandler`, with the
    `AnswerBatch` of their answers (set by `GatewayRunner`)."""

    answer_batch: AnswerBatch

    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = JsonErrorRequestHandler  # a subclass with the same slots
        return handler


RequestHandlerFn = Callable[[web.Request], Awaitable[web.StreamResponse]]


def direct_handler(app: web.Application) -> RequestHandlerFn:
    """What the server calls for each request of `app`: its one catch-all route's handler,
    directly, when `Application._handle` would resolve every request to that route anyway.

    That is an app with no middleware and a single route for every method, and a request whose
    target is a path (`/...`) without an `Expect` header (aiohttp answers `100 Continue` for
    that one before the handler). Every other request, and any other app, goes through
    `Application._handle` as before. The request's `match_info` is one frozen object for the
    route and the app (`request.app` works); it carries no `tail`, which nothing reads.
    """
    routes = list(app.router.routes())
    if app.middlewares or len(routes) != 1 or routes[0].method != "*":
        return app._handle  # aiohttp's own handler, as its runner uses it
    route = routes[0]
    handler = route.handler
    slow = app._handle
    match_info = UrlMappingMatchInfo({}, route)
    match_info.add_app(app)
    match_info.freeze()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.raw_path[:1] != "/" or request.headers.get("Expect"):
            return await slow(request)
        request._match_info = match_info  # what Application._handle sets
        return await handler(request)

    return handle


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose server answers aiohttp's own errors in JSON, and calls the app's
    catch-all handler directly (`direct_handler`)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # adds __call__ (and the batch, set here)
        server.request_handler = direct_handler(self.app)  # type: ignore[assignment]
        batch = server.answer_batch = AnswerBatch()  # type: ignore[attr-defined]
        make_request = server.request_factory

        def request_factory(
            message: Any, payload: Any, protocol: Any, writer: Any, task: Any
        ) -> web.BaseRequest:
            batch.started += 1  # its handling begins
            return make_request(message, payload, protocol, writer, task)

        server.request_factory = request_factory
        return server

    async def cleanup(self) -> None:
        """Send any answer still held, then aiohttp's cleanup."""
        server = self.server
        if isinstance(server, _JsonErrorServer):
            server.answer_batch.send()
        await super().cleanup()


class _AcceptAllServer:
    """Listening sockets whose pending connections are all accepted each time one is readable
    (`asyncio.AbstractServer`'s `close` and `sockets`, as far as aiohttp's runner uses them)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, socks: list[socket.socket], factory: web.Server, backlog: int
    ) -> None:
        self._loop = loop
        self._socks = socks
        self._factory = factory
        self._backlog = backlog
        self._pending: set[asyncio.Task[object]] = set()
        self._closed = False
        for sock in socks:
            loop.add_reader(sock.fileno(), self._accept_all, sock)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return () if self._closed else tuple(self._socks)

    def _accept_all(self, sock: socket.socket) -> None:
        for _ in range(self._backlog):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up before it was accepted
            except OSError as e:
                if e.errno not in _OUT_OF_FDS:
                    raise
                log.warning("http.accept_paused", error=str(e), pause_s=ACCEPT_PAUSE_S)
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_PAUSE_S, self._resume, sock)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _resume(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept_all, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (open connections are the runner's)."""
        if self._closed:
            return
        self._closed = True
        for sock in self._socks:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        """Nothing to wait for: `close` is immediate."""


def listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking sockets listening on every address of `host` (all interfaces for None), as
    `loop.create_server` binds them: SO_REUSEADDR, IPv6 sockets IPv6 only."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _name, addr in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


class AcceptAllSite(web.TCPSite):
    """`web.TCPSite` that accepts every pending connection in one turn of the loop (uvloop's
    server accepts one a turn); see the module docstring."""

    __slots__ = ()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None  # noqa: S101 - the runner is set up before its sites
        socks = listening_sockets(self._host or None, self._port, self._backlog)  # "" is every interface too
        loop = asyncio.get_running_loop()
        self._server = _AcceptAllServer(loop, socks, server, self._backlog)  # type: ignore[assignment]
        self._bound_port = int(socks[0].getsockname()[1])


async def _serve(app: web.Application, host: str, port: int, shutdown_timeout_s: float) -> None:
    runner = GatewayRunner(app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    inline = request_task.install(loop)  # each request in its connection's task (3.11)
    log.debug("server.requests_inline", inline=inline)
    await runner.setup()
    gc.collect()
    gc.freeze()  # what startup made lives as long as the process: no full collection walks it
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        await AcceptAllSite(runner, host, port).start()
        await stop.wait()
    finally:
        # inside the serving task, before asyncio.run cancels what is left: sockets get 1001,
        # requests finish within the grace, the cleanup contexts close the stores
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def use_writelines(loop: asyncio.AbstractEventLoop) -> bool:
    """Let aiohttp's writers pass headers and body to the transport's `writelines` (no join of
    the two into a new bytes object) when `loop` is uvloop's, whose transports write several
    buffers with one `writev`; any other loop keeps aiohttp's choice. Returns whether it did."""
    if not isinstance(loop, uvloop.Loop):
        return False
    http_writer.SKIP_WRITELINES = False  # the module global `StreamWriter._writelines` reads
    return True


def keep_large_buffers() -> bool:
    """Keep buffers under `MMAP_THRESHOLD_BYTES` in the C heap and up to `TRIM_THRESHOLD_BYTES`
    of freed heap in the process (glibc's `mallopt`), instead of mapping fresh pages for every
    large answer; returns whether the C library took both (False on one without `mallopt`)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    took: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trimmed: bool = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return took and trimmed


def run(app: web.Application, *, host: str, port: int, shutdown_timeout_s: float) -> None:
    """Serve `app` on `host:port` until SIGTERM/SIGINT, then shut down gracefully."""
    kept = keep_large_buffers()
    log.debug("server.large_buffers_kept", kept=kept)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        use_writelines(runner.get_loop())
        runner.run(_serve(app, host, port, shutdown_timeout_s))
