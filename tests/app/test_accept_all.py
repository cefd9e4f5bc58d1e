"""Connections opened together are all accepted in one turn of the loop (`AcceptAllSite`): on
uvloop's own server the last of N waited N turns, each serving every request in flight, which
was the mix's 170-450 ms maximum latency at wrk's start (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop
from aiohttp import web

from gateway.http.server import AcceptAllSite

CLIENTS = 20
TURNS = 4  # the accept, connect_accepted_socket's task, connection_made, and one to spare


async def _hello(_request: web.Request) -> web.Response:
    return web.Response(body=b'{"ok":true}', content_type="application/json")


async def _started(site_type: type[web.TCPSite]) -> tuple[web.AppRunner, web.TCPSite]:
    """An app answering `/` on a free loopback port, served through `site_type`."""
    app = web.Application()
    app.router.add_get("/", _hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = site_type(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site


async def _accepted_after_turns(site_type: type[web.TCPSite]) -> tuple[int, list[bytes]]:
    runner, site = await _started(site_type)
    clients = [socket.create_connection(("127.0.0.1", site.port)) for _ in range(CLIENTS)]
    try:
        for _ in range(TURNS):
            await asyncio.sleep(0)
        assert runner.server is not None
        accepted = len(runner.server.connections)
        loop = asyncio.get_running_loop()
        for c in clients:
            c.setblocking(False)
            await loop.sock_sendall(c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return accepted, [await asyncio.wait_for(loop.sock_recv(c, 4096), 5) for c in clients]
    finally:
        for c in clients:
            c.close()
        await runner.cleanup()


def test_connections_opened_together_are_all_accepted_at_once_on_uvloop() -> None:
    """20 clients that connected together are all being served after a few turns, and answered."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        accepted, answers = runner.run(_accepted_after_turns(AcceptAllSite))
    assert accepted == CLIENTS
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b'{"ok":true}') for a in answers)


def test_the_same_on_asyncios_loop() -> None:
    """The site works on asyncio's own loop too (tests and tools that do not use uvloop)."""
    with asyncio.Runner() as runner:
        accepted, answers = runner.run(_accepted_after_turns(AcceptAllSite))
    assert accepted == CLIENTS
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers)


def test_a_stopped_site_refuses_new_connections() -> None:
    """After the runner's cleanup the port no longer accepts connections."""

    async def scenario() -> int:
        runner, site = await _started(AcceptAllSite)
        port = site.port
        assert runner.addresses == [("127.0.0.1", port)]
        await runner.cleanup()
        return port

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        port = runner.run(scenario())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
