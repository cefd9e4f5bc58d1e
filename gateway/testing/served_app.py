"""An aiohttp app served on the production runner and site (`GatewayRunner`, `AcceptAllSite`,
what `agent-coord serve` uses), for tests of what goes on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from gateway.http.answer_batch import AnswerBatch
from gateway.http.server import AcceptAllSite, GatewayRunner, _JsonErrorServer
from gateway.testing.gateway_process import free_port

__all__ = ["serve_app"]


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[tuple[int, AnswerBatch]]:
    """`app` on 127.0.0.1 (a free port) as `agent-coord serve` runs it; the port and the
    server's `AnswerBatch`."""
    runner = GatewayRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    try:
        await AcceptAllSite(runner, "127.0.0.1", port).start()
        server = runner.server
        assert isinstance(server, _JsonErrorServer)  # noqa: S101 - GatewayRunner makes one
        yield port, server.answer_batch
    finally:
        await runner.cleanup()
