"""A `JsonAnswer` written in one step (gateway/http/responses.py) puts on the wire byte for byte
what aiohttp's own `Response` path writes: status line, headers in their order and case,
`Content-Length`, keep-alive, `HEAD`, HTTP/1.0, `Connection: close`, gzip and error answers."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.clock import FakeClock
from gateway.domain.ids import ids
from gateway.http.responses import JsonAnswer
from gateway.http.server import AcceptAllSite, GatewayRunner
from gateway.settings import Settings, StorageSettings
from gateway.testing.gateway_process import free_port

TIMEOUT_S = 10.0
LOCK = "/lock/src%2Fmix%2Ff1.ts"


def _req(
    method: str, target: str, body: bytes | None = None, *, rid: str | None = "req", extra: str = ""
) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n"
    if rid is not None:
        head += f"X-Request-Id: {rid}-{method}-{len(target)}\r\n"
    head += extra
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


# One keep-alive connection: every operation of the realistic mix (bench/mix.lua), before and after
# writes, its conflicts and errors, and the answers aiohttp must build itself.
KEEP_ALIVE: list[bytes] = [
    _req("POST", "/coordinator/agents", b'{"agentId":"mix-1","status":"active"}'),
    _req("POST", "/coordinator/agents", b'{"agentId":"mix-2","status":"active"}'),
    _req("POST", "/agent/mix-1/checkpoint", b'{"conversationSummary":"setup","currentTask":"Benchmarking"}'),
    _req("GET", "/coordinator/chat?limit=50"),
    _req("POST", "/coordinator/chat", b'{"author":"mix-1","message":"mix message 1","authorType":"agent"}'),
    _req("GET", "/coordinator/chat?limit=50"),
    _req("GET", f"{LOCK}/check"),
    _req("POST", f"{LOCK}/lock", b'{"agentId":"mix-1","reason":"mix","ttlMs":5000}'),
    _req("POST", f"{LOCK}/lock", b'{"agentId":"mix-2","reason":"mix","ttlMs":5000}'),  # 409
    _req("GET", f"{LOCK}/check"),
    _req("GET", "/agent/mix-1/checkpoint"),
    _req("GET", "/agent/mix-2/checkpoint"),
    _req("GET", "/coordinator/agents"),
    _req("GET", "/coordinator/work?agentId=mix-1"),
    _req("POST", "/coordinator/agents", b'{"agentId":"mix-1","status":"active","currentTask":"mix 2"}'),
    *(
        _req("POST", "/coordinator/tasks", f'{{"title":"mix task {i}","createdBy":"mix-1"}}'.encode())
        for i in range(8)
    ),
    _req("GET", "/coordinator/tasks?status=todo"),
    _req("GET", "/coordinator/tasks?status=todo", extra="Accept-Encoding: gzip, deflate\r\n"),  # gzip
    _req("POST", "/agent/mix-1/checkpoint", b'{"conversationSummary":"mix 3","pendingWork":["more"]}'),
    _req("GET", "/agent/mix-1/state"),
    _req("GET", "/health"),
    _req("GET", "/health", rid=None),  # a generated request id
    _req("GET", "/health", rid=None, extra=f"X-Request-Id: {'r' * 129}\r\n"),  # too long: generated
    _req("POST", "/agent/mix-2/messages", b'{"from":"mix-1","message":"dm 1"}'),
    _req("GET", "/coordinator/work?agentId=mix-2"),
    _req("GET", "/nope"),  # 404
    _req("POST", "/coordinator/chat", b'{"author":'),  # 400, not JSON
    _req("DELETE", "/health"),  # 405
    _req("HEAD", "/health"),
    _req("HEAD", "/coordinator/agents"),
    _req("OPTIONS", "/coordinator/agents"),
    _req("GET", "/"),
    _req("GET", "/", extra="Accept-Encoding: gzip\r\n"),
    _req("GET", "/ready"),
    _req("GET", "/health"),
]
# Connections the answer closes or keeps in HTTP/1.0's way: each alone.
# (request, whether the server closes the connection after its answer)
ALONE: list[tuple[bytes, bool]] = [
    (b"GET /health HTTP/1.0\r\nX-Request-Id: ten\r\n\r\n", True),
    (b"GET /coordinator/agents HTTP/1.0\r\nConnection: keep-alive\r\nX-Request-Id: ten-ka\r\n\r\n", False),
    (_req("GET", "/health", extra="Connection: close\r\n"), True),
    (_req("GET", "/nope", extra="Connection: close\r\n"), True),
    (b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n", True),  # the parser's own error answer (handle_error)
]

_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
_GENERATED_ID = re.compile(rb'([":] ?)[0-9a-f]{32}(["\r])')


async def _read_answer(reader: asyncio.StreamReader, *, head_only: bool) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
    match = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    if head_only or match is None:
        return head
    return head + await asyncio.wait_for(reader.readexactly(int(match.group(1))), TIMEOUT_S)


async def _exchange_all(port: int) -> list[bytes]:
    answers = []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in KEEP_ALIVE:
            writer.write(request)
            answers.append(await _read_answer(reader, head_only=request.startswith(b"HEAD ")))
    finally:
        writer.close()
    for request, closes in ALONE:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            answer = await _read_answer(reader, head_only=False)
            if closes:  # nothing after the answer but the server's close
                answer += await asyncio.wait_for(reader.read(), TIMEOUT_S)
            answers.append(answer)
        finally:
            writer.close()
    return [_GENERATED_ID.sub(rb"\1<id>\2", _DATE.sub(b"\r\nDate: <date>\r\n", a)) for a in answers]


@asynccontextmanager
async def _served(data_dir: Path) -> AsyncIterator[int]:
    app = create_app(Settings(storage=StorageSettings(data_dir=data_dir)), clock=FakeClock())
    runner = GatewayRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    try:
        await AcceptAllSite(runner, "127.0.0.1", port).start()
        yield port
    finally:
        await runner.cleanup()


async def _answers(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[bytes], int]:
    """The whole script's raw answers from a fresh gateway, and how many took the one-step write."""
    monkeypatch.setattr(ids, "_rng", random.Random(13))  # the same generated ids in both runs
    monkeypatch.setattr(ids, "_widths", {})
    fast = 0
    write_all: Callable[[JsonAnswer, object, object], Awaitable[None]] = JsonAnswer._write_all  # type: ignore[assignment]

    async def counted(self: JsonAnswer, request: object, writer: object) -> None:
        nonlocal fast
        fast += 1
        await write_all(self, request, writer)

    monkeypatch.setattr(JsonAnswer, "_write_all", counted)
    async with _served(data_dir) as port:
        return await _exchange_all(port), fast


async def test_answers_written_in_one_step_equal_aiohttps_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answer of the script is the same bytes (the Date and generated request ids aside)
    with the one-step write and with aiohttp's `Response.prepare` for every answer."""
    fast_answers, fast_count = await _answers(tmp_path / "fast", monkeypatch)
    with monkeypatch.context() as m:
        m.setattr(JsonAnswer, "prepare", web.Response.prepare)
        slow_answers, slow_count = await _answers(tmp_path / "slow", monkeypatch)
    assert slow_count == 0
    # the plain keep-alive GET and POST answers of the script take the one-step write; HEAD,
    # OPTIONS, gzip and the answers that close the connection do not
    assert fast_count == len(KEEP_ALIVE) - 5
    assert len(fast_answers) == len(slow_answers) == len(KEEP_ALIVE) + len(ALONE)
    requests = [*KEEP_ALIVE, *(r for r, _ in ALONE)]
    for request, fast, slow in zip(requests, fast_answers, slow_answers, strict=True):
        assert fast == slow, request
    statuses = [int(a.split(b" ", 2)[1]) for a in fast_answers]
    assert {200, 400, 404, 405, 409} <= set(statuses)  # the script reaches its error paths


def test_headers_asked_for_are_made_once_with_the_request_id() -> None:
    """Asking a `JsonAnswer` for its headers gives aiohttp's: the JSON and CORS headers in order,
    then `X-Request-Id` if it was set, and later changes land in the same multidict."""
    answer = JsonAnswer(b'{"ok":true}', 201)
    answer.set_request_id("abc")
    headers = answer.headers
    assert list(headers) == [
        "Access-Control-Allow-Origin",
        "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers",
        "Content-Type",
        "X-Request-Id",
    ]
    assert headers["X-Request-Id"] == "abc"
    answer.set_request_id("def")
    assert answer.headers is headers
    assert headers["X-Request-Id"] == "def"
    assert answer.status == 201
    assert answer.reason == "Created"
    assert answer.body == b'{"ok":true}'
    assert answer.content_type == "application/json"
