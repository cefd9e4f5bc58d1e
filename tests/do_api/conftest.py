"""Fixtures of the DO API tests: a fake clock, settings on a temporary data directory, a running
gateway on a real loopback socket, and a raw HTTP helper that sends paths byte for byte.

Every test that uses `api` (or `settings`) runs once per serving store (`store_kind`):

* `actors`: the actor store alone, no Redis (the `cutover` phase);
* `parallel`: a real Redis behind the phase router, the legacy store serving and the actors
  mirrored in the background after each reply;
* `write-through`: a real Redis behind the phase router, the legacy store serving reads and
  taking writes first, the actors replicated before each reply;
* `read-switch`: the same, the actors serving and Redis replicated.

The same requests must give the same status codes and JSON in every variant. A test that is
about the actor store itself (alarms, a restart of the host, lock history rows) carries
`@pytest.mark.actors_only("why")` and runs against the actors alone; the reasons are listed in
docs/compatibility.md, "Serving from the legacy store". After each test of a two-store variant
the fixture checks that every replication succeeded (none was queued for repair) and that both
stores hold the same entities, whole, compared through the mapping (`gateway.testing.snapshots`;
a lock expired by then counts as no lock).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiohttp import ClientResponse, ClientSession, web
from aiohttp.test_utils import TestServer
from yarl import URL

from gateway.actors import ActorHost
from gateway.app import HOST, MIGRATION, ROUTER, create_app
from gateway.clock import FakeClock
from gateway.do.actor_store import build_actor_host
from gateway.http.ws import OPEN_SOCKETS
from gateway.settings import (
    LegacySettings,
    LimitSettings,
    MigrationSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from gateway.testing.snapshots import actor_snapshot, legacy_snapshot

START_MS = 1_795_627_727_041  # 2026-11-25T17:28:47.041Z

STORE_KINDS = ("actors", "parallel", "write-through", "read-switch")
"""The serving stores every endpoint test runs against (see the module docstring)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "actors_only(reason): the test is about the actor store itself; run it on the actors alone",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `store_kind` over STORE_KINDS, or the actors alone for `actors_only` tests."""
    if "store_kind" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        if "store_kind" in str(mark.args[0]):
            return  # the test picks its stores itself
    marker = metafunc.definition.get_closest_marker("actors_only")
    if marker is not None and not (marker.args and isinstance(marker.args[0], str) and marker.args[0]):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: actors_only needs a reason")
    kinds = ["actors"] if marker is not None else list(STORE_KINDS)
    metafunc.parametrize("store_kind", kinds)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock(START_MS)


@pytest.fixture
async def host(tmp_path: Path, clock: FakeClock) -> AsyncIterator[ActorHost]:
    """An actor host of the DO backend on a fresh data directory and the test's clock (no app,
    no Redis): for tests that drive the actors directly."""
    h = build_actor_host(tmp_path, LimitSettings(), clock=clock)
    await h.start()
    yield h
    await h.close()


@pytest.fixture
def settings(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Settings:
    """Embedded defaults on a fresh data directory, with a small body limit for the 413 test;
    for a two-store variant, an emptied private Redis and the variant's phase."""
    base = Settings(
        server=ServerSettings(max_body_bytes=64 * 1024, shutdown_grace_s=1.0),
        storage=StorageSettings(data_dir=tmp_path / "data"),
    )
    if store_kind == "actors":
        return base
    redis_url: str = request.getfixturevalue("redis_url")
    return dataclasses.replace(
        base,
        legacy=LegacySettings(redis_url=redis_url, timeout_s=5.0),
        migration=MigrationSettings(phase=store_kind),
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

    @property
    def phase(self) -> str:
        """The serving phase: `cutover` for the actor store alone."""
        return self.app[MIGRATION].phase

    @property
    def legacy_serves(self) -> bool:
        """Is the legacy Redis the authoritative store (reads and first writes)?"""
        return self.phase in ("parallel", "write-through")

    async def settle(self) -> None:
        """Let every actor turn, alarm and background replication finish."""
        if ROUTER in self.app:
            await self.app[ROUTER].drain()
        await self.host.wait_idle()

    async def sockets_closed(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until the server has handled the close of every socket: none is open
        or held, and no operation (a close's presence write and its replication) is in flight."""
        gate = self.app[MIGRATION].gate
        deadline = time.monotonic() + timeout_s
        while self.app[OPEN_SOCKETS] or self.host.socket_count or gate.active:
            assert time.monotonic() < deadline, "sockets still closing"
            await asyncio.sleep(0.01)
        await self.settle()

    async def repairs_done(self, timeout_s: float = 10.0) -> None:
        """Wait (bounded) until the repair queue is empty (a lock expired by its alarm in
        read-switch reaches Redis through it)."""
        queue = self.app[MIGRATION].queue
        deadline = time.monotonic() + timeout_s
        while queue.all():
            assert time.monotonic() < deadline, f"repairs left: {[str(e.key) for e in queue.all()]}"
            await asyncio.sleep(0.01)
        await self.settle()


async def start_api(settings: Settings, clock: FakeClock) -> tuple[TestServer, ClientSession]:
    server = TestServer(create_app(settings, clock=clock))
    await server.start_server()
    return server, ClientSession()


@pytest.fixture
async def api(settings: Settings, clock: FakeClock) -> AsyncIterator[Api]:
    """A gateway on a real loopback port, over the fake clock, serving from `store_kind`."""
    server, session = await start_api(settings, clock)
    try:
        client = Api(server, session)
        yield client
        if ROUTER in client.app:
            await session.close()  # the client's sockets close: the server records the presence
            await client.sockets_closed()
            await client.repairs_done()
            assert client.app[ROUTER].counters["queued"] == 0, "a replication to the other store failed"
            assert_same_entities(settings, clock.now_ms())
    finally:
        await session.close()
        await server.close()


def assert_same_entities(settings: Settings, now_ms: int) -> None:
    """Both stores hold the same entities, whole, through the mapping."""
    assert settings.legacy.redis_url is not None
    r = redis.Redis.from_url(settings.legacy.redis_url, decode_responses=True, socket_timeout=5)
    try:
        legacy = legacy_snapshot(r, now_ms)
    finally:
        r.close()
    actors = actor_snapshot(settings.storage.data_dir, now_ms)
    for domain in legacy:
        assert legacy[domain] == actors[domain], f"the stores differ in {domain}"


def with_limits(settings: Settings, **kw: Any) -> Settings:
    """`settings` with some `limits` replaced."""
    return dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, **kw))
