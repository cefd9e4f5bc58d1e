"""With `gateway.http.request_task` installed, each request runs in its connection's task (no
task of its own) and still behaves as it did in one: its context variables stay its own, an
exception is a 500 on a connection that goes on serving, a timeout inside a handler leaves the
connection usable, and a client that goes away cancels its handler."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import uvloop
from aiohttp import web

from gateway.http import request_task

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


async def _serve(
    routes: dict[str, Handler], *, handler_cancellation: bool = False
) -> tuple[web.AppRunner, int]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _run(main: Callable[[], Coroutine[Any, Any, T]], *, inline: bool = True) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if inline:
            assert request_task.install(runner.get_loop())
        return runner.run(main())


async def _tasks_and_values() -> tuple[list[object], list[str]]:
    tasks: list[object] = []  # the tasks themselves: an id could be reused once one is freed

    async def handler(_request: web.Request) -> web.Response:
        tasks.append(asyncio.current_task())
        before = seen.get()
        seen.set("set by a handler")
        await asyncio.sleep(0)  # a step after a suspension runs in the same context
        assert seen.get() == "set by a handler"
        return web.Response(text=before)

    runner, port = await _serve({"/": handler})
    values = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{port}/") as r:
                    values.append(await r.text())
    finally:
        await runner.cleanup()
    return tasks, values


def test_requests_of_a_connection_run_in_its_task_with_their_own_context() -> None:
    tasks, values = _run(_tasks_and_values)
    assert len(set(tasks)) == 1  # one keep-alive connection, one task, no task per request
    assert values == ["unset", "unset", "unset"]  # what a handler set never reaches the next


def test_without_the_factory_each_request_has_a_task() -> None:
    tasks, values = _run(_tasks_and_values, inline=False)
    assert len(set(tasks)) == 3
    assert values == ["unset", "unset", "unset"]


async def _failure_then_success() -> list[tuple[int, str]]:
    async def boom(_request: web.Request) -> web.Response:
        await asyncio.sleep(0)
        raise RuntimeError("handler failed")

    async def timed_out(_request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.Event().wait()
        except TimeoutError:
            return web.Response(text="timed out")
        return web.Response(text="not reached")

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    runner, port = await _serve({"/boom": boom, "/timeout": timed_out, "/ok": ok})
    answers = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for path in ("/boom", "/ok", "/timeout", "/ok", "/ok"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as r:
                    answers.append((r.status, await r.text() if r.status == 200 else ""))
    finally:
        await runner.cleanup()
    return answers


def test_a_failure_or_a_timeout_in_a_handler_leaves_the_connection_serving() -> None:
    answers = _run(_failure_then_success)
    assert answers == [(500, ""), (200, "ok"), (200, "timed out"), (200, "ok"), (200, "ok")]


async def _client_goes_away() -> str:
    started = asyncio.Event()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def forever(_request: web.Request) -> web.Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.set_result("cancelled")
            raise
        return web.Response(text="not reached")

    runner, port = await _serve({"/forever": forever}, handler_cancellation=True)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(started.wait(), 5)
        writer.close()
        await writer.wait_closed()
        del reader
        return await asyncio.wait_for(outcome, 5)
    finally:
        await runner.cleanup()


def test_a_client_going_away_cancels_its_handler() -> None:
    assert _run(_client_goes_away) == "cancelled"


async def _other_coroutines() -> bool:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    task = asyncio.get_running_loop().create_task(work(), name="kept")
    assert type(task) is asyncio.Task
    assert task.get_name() == "kept"
    return await task == 7


def test_every_other_coroutine_still_gets_a_task() -> None:
    assert _run(_other_coroutines) is True


def test_install_leaves_a_loop_with_a_factory_of_its_own() -> None:
    def factory(loop: asyncio.AbstractEventLoop, coro: object, **kwargs: object) -> object:
        return asyncio.Task(coro, loop=loop, **kwargs)  # type: ignore[arg-type]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        loop = runner.get_loop()
        loop.set_task_factory(factory)  # type: ignore[arg-type]
        assert not request_task.install(loop)
        assert loop.get_task_factory() is factory
