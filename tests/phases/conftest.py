"""Fixtures of the phase tests: phased gateways in-process (over a fake clock) and as real processes,
a Redis of their own for tests that stop it, and the two stores read directly."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from gateway.app import MIGRATION, ROUTER, create_app
from gateway.clock import FakeClock
from gateway.legacy.store import LegacyStore
from gateway.phases.router import PhasedStore
from gateway.phases.runtime import MigrationRuntime
from gateway.settings import (
    LegacySettings,
    MigrationSettings,
    ServerSettings,
    Settings,
    StorageSettings,
)
from gateway.testing.gateway_process import GatewayProcess

from .helpers import ActorView, Client, LegacyView, new_session

START_MS = 1_795_627_727_041  # 2026-11-25T17:28:47.041Z
TOKEN = "phase-test-token"


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock(START_MS)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The gateway's data directory."""
    return tmp_path / "data"


LEGACY_TIMEOUT_S: Final = 5.0
"""How long the tests' gateways wait for a Redis reply. A closed or refused connection fails at
once whatever this is; only a hung Redis (SIGSTOP) waits for it, and the tests that hang one ask
for a short timeout themselves. A short default failed tests on a loaded machine: the tracking
connection's first reply took longer than 0.5 s and the gateway took Redis for gone."""


def phase_settings(
    data_dir: Path,
    redis_url: str,
    phase: str,
    *,
    legacy_timeout_s: float = LEGACY_TIMEOUT_S,
    **migration: Any,
) -> Settings:
    """Settings of a phased gateway on `data_dir`."""
    return Settings(
        server=ServerSettings(shutdown_grace_s=1.0),
        storage=StorageSettings(data_dir=data_dir),
        legacy=LegacySettings(redis_url=redis_url, timeout_s=legacy_timeout_s, retries=1),
        migration=dataclasses.replace(MigrationSettings(phase=phase, admin_token=TOKEN), **migration),
    )


@dataclass
class Gw:
    """One phased gateway running in this process on a real loopback port."""

    server: TestServer
    session: ClientSession
    client: Client
    clock: FakeClock
    legacy: LegacyView
    actors: ActorView

    @property
    def router(self) -> PhasedStore:
        return self.server.app[ROUTER]

    @property
    def runtime(self) -> MigrationRuntime:
        return self.server.app[MIGRATION]

    async def legacy_cache_up(self) -> None:
        """Wait until the legacy client's tracking connection is on. It connects at the first
        request that reads or writes a tracked hash, and until then the pool serves those: a test
        that counts Redis commands must not depend on how fast that connection came up."""
        store = self.router.legacy
        assert isinstance(store, LegacyStore)
        tracked = store.records.client.tracked
        assert tracked is not None, "legacy.cache_listings is off"
        assert await asyncio.wait_for(tracked.wait_up(), 10), "the tracking connection did not come up"

    async def close(self) -> None:
        await self.session.close()
        await self.server.close()
        self.legacy.close()


GwFactory = Callable[..., Awaitable[Gw]]


@pytest.fixture
async def start_gw(data_dir: Path, redis_url: str, clock: FakeClock) -> AsyncIterator[GwFactory]:
    """Start a phased gateway in-process: `await start_gw(phase, redis_url=..., **migration)`."""
    started: list[Gw] = []

    async def start(
        phase: str, *, redis: str | None = None, legacy_timeout_s: float = LEGACY_TIMEOUT_S, **migration: Any
    ) -> Gw:
        url = redis or redis_url
        settings = phase_settings(data_dir, url, phase, legacy_timeout_s=legacy_timeout_s, **migration)
        server = TestServer(create_app(settings, clock=clock))
        await server.start_server()
        session = new_session()
        gw = Gw(
            server,
            session,
            Client(f"http://{server.host}:{server.port}", session, TOKEN),
            clock,
            LegacyView(url),
            ActorView(data_dir),
        )
        started.append(gw)
        return gw

    yield start
    for gw in reversed(started):
        await gw.close()


@pytest.fixture
def gateway_proc(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Make real gateway processes (`agent-coord serve`) that are killed when the test ends."""
    made: list[GatewayProcess] = []

    def make(data_dir: Path, redis_url: str | None, phase: str | None = None, **kw: Any) -> GatewayProcess:
        env = {
            "AGENT_COORD_LEGACY_TIMEOUT_S": str(LEGACY_TIMEOUT_S),
            "AGENT_COORD_LEGACY_RETRIES": "1",
            **kw.pop("env", {}),
        }
        proc = GatewayProcess(data_dir, redis_url=redis_url, phase=phase, env=env, **kw)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()
