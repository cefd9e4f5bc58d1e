"""`GET /ready`: ready to serve in the current phase, or a 503 saying which check failed."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.app import HOST, MIGRATION, create_app
from gateway.domain.entities import EntityKey
from gateway.settings import LegacySettings, MigrationSettings, Settings, StorageSettings
from gateway.testing import RedisServer

from .conftest import Served


async def get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_a_started_gateway_on_the_actors_is_ready(served: Served) -> None:
    """cutover, host started, empty queue: 200 ready; /health is the liveness answer as before."""
    status, body = await get(f"{served.url}/ready")
    assert status == 200
    assert body == {
        "ready": True,
        "phase": "cutover",
        "checks": {"actorHost": {"ok": True}, "repairQueue": {"ok": True, "depth": 0, "max": 1000}},
    }
    status, health = await get(f"{served.url}/health")
    assert (status, health["status"], health["service"]) == (200, "ok", "agent-coord-do")


async def test_a_gateway_whose_host_is_closing_is_not_ready(served: Served) -> None:
    """Once the actor host is shutting down, /ready is a 503 naming the actor host."""
    await served.app[HOST].close(1.0)
    status, body = await get(f"{served.url}/ready")
    assert status == 503
    assert body["ready"] is False
    assert body["checks"]["actorHost"] == {"ok": False}  # type: ignore[index]


async def test_a_full_repair_queue_makes_the_gateway_not_ready(tmp_path: Path) -> None:
    """More entities waiting for repair than migration.ready_repair_queue_max: 503."""
    settings = Settings(
        storage=StorageSettings(data_dir=tmp_path / "data"),
        migration=MigrationSettings(ready_repair_queue_max=1),
    )
    server = TestServer(create_app(settings))
    await server.start_server()
    try:
        queue = server.app[MIGRATION].queue
        for agent in ("a", "b"):
            await queue.enqueue(EntityKey("agent", "", agent), "legacy", "test")
        status, body = await get(f"http://{server.host}:{server.port}/ready")
        assert status == 503
        assert body["checks"]["repairQueue"] == {"ok": False, "depth": 2, "max": 1}  # type: ignore[index]
    finally:
        await server.close()


async def test_write_through_without_redis_is_not_ready_and_says_so_without_its_address(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    """write-through with Redis stopped: 503 naming the legacy Redis check, not its address;
    read-switch with Redis stopped stays ready (writes queue for repair)."""
    # a stopped Redis refuses at once; the timeout only guards a slow reply on a loaded machine
    legacy = LegacySettings(redis_url=own_redis.url, timeout_s=5.0, retries=0)
    for phase, expected in (("write-through", 503), ("read-switch", 200)):
        settings = Settings(  # a data directory per phase: it keeps the phase it last ran in
            storage=StorageSettings(data_dir=tmp_path / phase),
            legacy=legacy,
            migration=MigrationSettings(phase=phase),
        )
        server = TestServer(create_app(settings))
        await server.start_server()
        try:
            url = f"http://{server.host}:{server.port}/ready"
            status, body = await get(url)
            assert (status, body["checks"]["legacyRedis"]) == (  # type: ignore[index]
                200,
                {"ok": True, "required": phase == "write-through"},
            )
            own_redis.stop()
            status, body = await get(url)
            assert status == expected, body
            assert body["checks"]["legacyRedis"]["ok"] is False  # type: ignore[index]
            assert str(own_redis.port) not in str(body)
        finally:
            if not own_redis.running:
                own_redis.start()
            await server.close()
