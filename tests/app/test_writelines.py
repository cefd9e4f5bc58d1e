"""On uvloop, aiohttp hands an answer's headers and body to the transport as two buffers
(`gateway.http.server.use_writelines`): the client still receives every byte, in order."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import uvloop
from aiohttp import http_writer, web

from gateway.http.server import use_writelines

BODY = bytes(range(256)) * 1200  # 300 KB: more than a loopback socket takes in one write


async def _fetch_both() -> tuple[bytes, bytes]:
    async def big(_request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    async def small(_request: web.Request) -> web.Response:
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/small", small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            bodies = []
            for path in ("/big", "/small"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as r:
                    bodies.append(await r.read())
            return bodies[0], bodies[1]
    finally:
        await runner.cleanup()


@pytest.fixture
def restore_flag() -> object:
    saved = http_writer.SKIP_WRITELINES
    yield
    http_writer.SKIP_WRITELINES = saved


@pytest.mark.usefixtures("restore_flag")
def test_uvloop_answers_go_through_writelines_intact() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert use_writelines(runner.get_loop())
        assert http_writer.SKIP_WRITELINES is False
        big, small = runner.run(_fetch_both())
    assert big == BODY
    assert small == b'{"ok":true}'


@pytest.mark.usefixtures("restore_flag")
def test_other_loops_keep_aiohttps_choice() -> None:
    http_writer.SKIP_WRITELINES = True
    with asyncio.Runner() as runner:
        assert not use_writelines(runner.get_loop())
    assert http_writer.SKIP_WRITELINES is True
