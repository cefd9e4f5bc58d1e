"""The legacy client's retry policy on fakeredis: fast and exact about attempt counts."""

from __future__ import annotations

import fakeredis
import pytest
from redis.asyncio import Redis

from gateway.errors import LegacyStoreError, StoreUnavailable
from gateway.legacy.client import LegacyClient
from gateway.settings import LegacySettings


def fake_client(server: fakeredis.FakeServer, retries: int = 3) -> LegacyClient:
    client = LegacyClient("redis://127.0.0.1:1/0", LegacySettings(retries=retries, timeout_s=5.0))
    client.redis = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    return client


async def test_a_down_store_is_retried_for_safe_operations_only() -> None:
    """Reads get retries+1 attempts, a non-idempotent write exactly one; both end in a 503 error."""
    server = fakeredis.FakeServer()
    server.connected = False
    client = fake_client(server, retries=3)
    calls = {"read": 0, "push": 0}

    async def read(r: Redis) -> object:
        calls["read"] += 1
        return await r.get("k")

    async def push(r: Redis) -> object:
        calls["push"] += 1
        return await r.lpush("agent-coord:messages", "x")

    with pytest.raises(StoreUnavailable, match="legacy store unavailable: GET k failed after 4 attempt"):
        await client.run("GET k", read, idempotent=True)
    with pytest.raises(StoreUnavailable):
        await client.run("LPUSH", push, idempotent=False)
    assert calls == {"read": 4, "push": 1}
    assert StoreUnavailable("x").status == 503


async def test_a_store_that_comes_back_is_used_again() -> None:
    """Once the server answers again, the same client works without being rebuilt."""
    server = fakeredis.FakeServer()
    client = fake_client(server)
    server.connected = False
    with pytest.raises(StoreUnavailable):
        await client.run("PING", lambda r: r.ping(), idempotent=True)
    server.connected = True
    assert await client.ping() is True


async def test_a_redis_error_that_is_not_transient_is_not_retried() -> None:
    """WRONGTYPE and the like are the legacy data's problem: one attempt, a LegacyStoreError."""
    client = fake_client(fakeredis.FakeServer())
    await client.redis.rpush("agent-coord:handoffs", "a list, as the legacy cleanup writes it")
    calls = 0

    async def hgetall(r: Redis) -> object:
        nonlocal calls
        calls += 1
        return await r.hgetall("agent-coord:handoffs")

    with pytest.raises(LegacyStoreError, match="WRONGTYPE"):
        await client.run("HGETALL agent-coord:handoffs", hgetall, idempotent=True)
    assert calls == 1
