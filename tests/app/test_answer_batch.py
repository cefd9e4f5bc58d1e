"""The answers of requests read in one turn of the event loop leave together at the next turn
(gateway/http/answer_batch.py): every client gets its own answer, whole and in order; a request
alone is answered at once; a pipelined connection's answers keep their order; an answer held
while the rest of its turn waits still leaves; a connection gone meanwhile costs no other its
answer. On the production runner and site, over real sockets, on asyncio's loop and uvloop's
(with the request tasks `agent-coord serve` installs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import uvloop
from aiohttp import web

from gateway.app import create_app
from gateway.http import request_task
from gateway.http.answer_batch import AnswerBatch
from gateway.http.responses import json_response
from gateway.settings import Settings, StorageSettings
from gateway.testing.raw_http import read_answer
from gateway.testing.served_app import serve_app

CONNECTIONS = 20
T = TypeVar("T")

LOOPS = pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)


def _run(loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        request_task.install(runner.get_loop())  # what `agent-coord serve` does (3.11 only)
        return runner.run(main)


def _gateway(data_dir: Path) -> web.Application:
    return create_app(Settings(storage=StorageSettings(data_dir=data_dir)))


def _get(target: str, rid: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {rid}\r\n\r\n".encode()


async def _connections(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`n` keep-alive connections, each past its first request (accepted, its task waiting)."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(n)]
    for i, (reader, writer) in enumerate(conns):
        writer.write(_get("/health", f"warm-{i}"))
        await read_answer(reader)
    return conns


@LOOPS
def test_answers_of_requests_read_together_leave_together_each_to_its_client(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    async def main() -> tuple[list[tuple[bytes, bytes]], int, int]:
        async with serve_app(_gateway(tmp_path / "data")) as (port, batch):
            conns = await _connections(port, CONNECTIONS)
            held_before, batches_before = batch.held_total, batch.batches
            for i, (_reader, writer) in enumerate(conns):  # all written before the server reads
                writer.write(_get(f"/agent/agent-{i}/checkpoint", f"rid-{i}"))
            answers = [await read_answer(reader) for reader, _writer in conns]
            for _reader, writer in conns:
                writer.close()
            return answers, batch.held_total - held_before, batch.batches - batches_before

    answers, held, batches = _run(loop_factory, main())
    for i, (head, body) in enumerate(answers):
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert f"\r\nX-Request-Id: rid-{i}\r\n".encode() in head  # its own answer, not another's
        assert orjson.loads(body) == {"checkpoint": None}  # agent-{i} never saved one
    assert held == CONNECTIONS  # every answer held, sent together at the next turn
    assert batches == 1


@LOOPS
def test_a_request_alone_is_answered_at_once(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    async def main() -> int:
        async with serve_app(_gateway(tmp_path / "data")) as (port, batch):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(5):
                writer.write(_get("/health", f"alone-{i}"))
                head, _body = await read_answer(reader)
                assert f"X-Request-Id: alone-{i}\r\n".encode() in head
            writer.close()
            return batch.held_total

    assert _run(loop_factory, main()) == 0


@LOOPS
def test_a_pipelined_connections_answers_keep_their_order_among_a_batch(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """Three requests in one write on one connection, the second answered through aiohttp's own
    path (OPTIONS), while other connections' requests are read in the same turn."""

    async def main() -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        async with serve_app(_gateway(tmp_path / "data")) as (port, _batch):
            conns = await _connections(port, 6)
            (p_reader, p_writer), others = conns[0], conns[1:]
            for i, (_reader, writer) in enumerate(others):
                writer.write(_get("/health", f"other-{i}"))
            p_writer.write(
                _get("/coordinator/agents", "pipe-1")
                + b"OPTIONS /coordinator/agents HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-2\r\n\r\n"
                + _get("/health", "pipe-3")
            )
            piped = [await read_answer(p_reader) for _ in range(3)]
            rest = [await read_answer(reader) for reader, _writer in others]
            for _reader, writer in conns:
                writer.close()
            return piped, rest

    piped, rest = _run(loop_factory, main())
    (h1, b1), (h2, b2), (h3, b3) = piped
    assert b"X-Request-Id: pipe-1\r\n" in h1
    assert orjson.loads(b1) == {"agents": []}
    assert h2.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 0\r\n" in h2
    assert b2 == b""
    assert b"X-Request-Id: pipe-3\r\n" in h3
    assert orjson.loads(b3)["status"] == "ok"
    for i, (head, _body) in enumerate(rest):
        assert f"X-Request-Id: other-{i}\r\n".encode() in head


@LOOPS
def test_an_answer_held_while_the_rest_of_its_turn_waits_still_leaves(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """Quick requests read in the same turn as requests whose handlers wait (an actor's gate,
    Redis): the quick ones are answered while the others still wait."""

    async def main() -> tuple[list[bytes], int]:
        release = asyncio.Event()

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.path == "/slow":
                await release.wait()
            return json_response({"path": request.path})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        async with serve_app(app) as (port, batch):
            conns = await _connections(port, 8)
            for i, (_reader, writer) in enumerate(conns):  # slow, quick, slow, quick, ...
                writer.write(_get("/slow" if i % 2 == 0 else "/quick", f"r-{i}"))
            quick = [(await read_answer(reader))[1] for reader, _writer in conns[1::2]]
            release.set()
            slow = [(await read_answer(reader))[1] for reader, _writer in conns[0::2]]
            for _reader, writer in conns:
                writer.close()
            return quick + slow, batch.held_total

    bodies, held = _run(loop_factory, main())
    assert [orjson.loads(b)["path"] for b in bodies] == ["/quick"] * 4 + ["/slow"] * 4
    assert held >= 3  # the quick answers read before a slow request began were held, then sent


class _Transport:
    """What `AnswerBatch` uses of a transport, recording what is written."""

    def __init__(self, closing: bool = False, broken: bool = False) -> None:
        self.closing = closing
        self.broken = broken
        self.written: list[bytes] = []

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("broken transport")
        self.written.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(b"".join(parts))


class _Protocol:
    def __init__(self, transport: _Transport) -> None:
        self.transport = transport
        self._messages: list[object] = []
        self._close = False
        self._force_close = False


async def test_a_connection_gone_or_broken_before_the_send_costs_no_other_its_answer() -> None:
    batch = AnswerBatch()
    gone, broken, fine = _Transport(), _Transport(broken=True), _Transport()
    batch.received = 4  # four requests read, none begun
    for transport in (gone, broken, fine):
        batch.started += 1
        assert batch.answer(_Protocol(transport), b"head ", b"body", True)  # type: ignore[arg-type]
    assert (gone.written, broken.written, fine.written) == ([], [], [])  # held: one still waits
    gone.closing = True
    await asyncio.sleep(0)  # the turn ends with the last request still waiting: sent anyway
    assert fine.written == [b"head body"]
    assert batch.unsent == 2
    assert batch.answer(_Protocol(_Transport(closing=True)), b"h", b"b", True) is False  # type: ignore[arg-type]


async def test_counts_off_by_a_lost_connection_never_hold_an_answer_alone() -> None:
    """More requests begun than read (a count gone wrong): the answer leaves at once, and the
    counts start again from there."""
    batch = AnswerBatch()
    batch.started = 3
    transport = _Transport()
    assert batch.answer(_Protocol(transport), b"h", b"b", True)  # type: ignore[arg-type]
    assert transport.written == [b"hb"]
    assert (batch.received, batch.waiting) == (3, 0)


async def test_an_answer_is_not_held_when_something_could_follow_it_on_its_connection() -> None:
    """A pipelined request queued behind it, a connection about to close, a body not read to
    its end: written at once even though other requests wait."""
    for change in ("_messages", "_close", "_force_close", "body"):
        batch = AnswerBatch()
        batch.received = 2
        transport = _Transport()
        protocol = _Protocol(transport)
        if change == "_messages":
            protocol._messages.append(object())
        elif change != "body":
            setattr(protocol, change, True)
        assert batch.answer(protocol, b"h", b"b", change != "body")  # type: ignore[arg-type]
        assert transport.written == [b"hb"], change
        assert batch.held_total == 0
