"""Fixtures of the DO API tests: a fake clock, settings on a temporary data directory, a running
gateway on a real loopback socket, and a raw HTTP helper that sends paths byte for byte."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, ClientSession, web
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.app import HOST, create_app
from gateway.clock import FakeClock
from gateway.settings import ServerSettings, Settings, StorageSettings

START_MS = 1_795_627_727_041  # 2026-11-25T17:28:47.041Z


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock(START_MS)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults on a fresh data directory, with a small body limit for the 413 test."""
    return Settings(
        server=ServerSettings(max_body_bytes=64 * 1024, shutdown_grace_s=1.0),
        storage=StorageSettings(data_dir=tmp_path / "data"),
    )


class Api:
    """A client of one running gateway that never rewrites the request path."""

    def __init__(self, server: TestServer, session: ClientSession) -> None:
        self.server = server
        self.session = session
        self.base = f"http://{server.host}:{server.port}"

    def url(self, path: str) -> URL:
        return URL(self.base + path, encoded=True)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        data = raw if raw is not None else (None if body is None else orjson.dumps(body))
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        resp = await self.session.request(method, self.url(path), data=data, headers=hdrs)
        await resp.read()
        return resp

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """Status and parsed JSON body."""
        resp = await self.request(method, path, body, **kw)
        text = await resp.read()
        return resp.status, (orjson.loads(text) if text else None)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def ws(self, path: str) -> Any:
        return await self.session.ws_connect(self.url(path))

    @property
    def app(self) -> web.Application:
        return self.server.app

    @property
    def host(self) -> Any:
        return self.app[HOST]


async def start_api(settings: Settings, clock: FakeClock) -> tuple[TestServer, ClientSession]:
    server = TestServer(create_app(settings, clock=clock))
    await server.start_server()
    return server, ClientSession()


@pytest.fixture
async def api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    """A gateway on a real loopback port, over the fake clock."""
    server, session = await start_api(settings, clock)
    try:
        yield Api(server, session)
    finally:
        await session.close()
        await server.close()


def with_limits(settings: Settings, **kw: Any) -> Settings:
    """`settings` with some `limits` replaced."""
    return dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, **kw))
