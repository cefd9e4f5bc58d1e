"""Fixtures of the app tests: the gateway served by the production runner and site
(`GatewayRunner`, `AcceptAllSite`, the ones `agent-coord serve` uses: aiohttp's test server
differs, e.g. it cancels the handler of a client that went away) on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.http.server import AcceptAllSite, GatewayRunner
from gateway.settings import Settings, StorageSettings
from gateway.testing.gateway_process import free_port


@dataclass(frozen=True, slots=True)
class Served:
    """A running gateway app and where it listens."""

    app: web.Application
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The gateway on the actor store alone, served by GatewayRunner on 127.0.0.1."""
    app = create_app(Settings(storage=StorageSettings(data_dir=tmp_path / "data")))
    runner = GatewayRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    try:
        await AcceptAllSite(runner, "127.0.0.1", port).start()
        yield Served(app, "127.0.0.1", port)
    finally:
        await runner.cleanup()
