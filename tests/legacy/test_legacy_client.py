"""gateway.legacy.client: one pool, bounded retries for idempotent operations, 503 when Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.exceptions

from gateway.errors import GatewayError, LegacyStoreError, StoreUnavailable
from gateway.legacy.client import LegacyClient, LuaScript, Redis
from gateway.settings import LegacySettings
from gateway.testing import RedisServer

pytestmark = pytest.mark.integration

SETTINGS = LegacySettings(pool_size=4, timeout_s=0.5, retries=2)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[LegacyClient]:
    c = LegacyClient.connect(redis_url, SETTINGS)
    yield c
    await c.close()


async def test_runs_commands_and_decodes_to_str(client: LegacyClient) -> None:
    """Commands run through the pool and return str values."""
    await client.run("SET", lambda r: r.set("k", "v"), idempotent=True)
    assert await client.run("GET", lambda r: r.get("k"), idempotent=True) == "v"
    assert await client.ping()


async def test_from_settings_needs_a_url() -> None:
    """Without a URL there is no legacy store to build a client for."""
    with pytest.raises(ValueError, match="redis_url"):
        LegacyClient.from_settings(LegacySettings())


async def test_idempotent_operations_are_retried_on_transient_errors(client: LegacyClient) -> None:
    """A transient error is retried (bounded) for an idempotent operation, and then succeeds."""
    calls = 0

    async def flaky(r: Redis) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise redis.exceptions.ConnectionError("reset by peer")
        return "ok"

    assert await client.run("flaky", flaky, idempotent=True) == "ok"
    assert calls == 3


async def test_non_idempotent_operations_are_sent_once(client: LegacyClient) -> None:
    """LPUSH-like operations are never repeated: one attempt, then 503."""
    calls = 0

    async def failing(r: Redis) -> None:
        nonlocal calls
        calls += 1
        raise redis.exceptions.TimeoutError("timed out")

    with pytest.raises(StoreUnavailable) as info:
        await client.run("LPUSH chat", failing, idempotent=False)
    assert calls == 1
    assert info.value.status == 503
    assert info.value.body()["retryable"] is True
    assert "legacy store unavailable" in info.value.body()["error"]


async def test_retries_are_bounded_by_the_setting(client: LegacyClient) -> None:
    """An idempotent operation is tried at most retries + 1 times."""
    calls = 0

    async def failing(r: Redis) -> None:
        nonlocal calls
        calls += 1
        raise redis.exceptions.ConnectionError("refused")

    with pytest.raises(StoreUnavailable):
        await client.run("HGET", failing, idempotent=True)
    assert calls == SETTINGS.retries + 1


async def test_redis_errors_that_are_not_transient_become_legacy_store_errors(client: LegacyClient) -> None:
    """WRONGTYPE is not retried and is translated into the project's hierarchy (500)."""
    await client.run("SET", lambda r: r.set("s", "x"), idempotent=True)
    with pytest.raises(LegacyStoreError) as info:
        await client.run("HGET", lambda r: r.hget("s", "f"), idempotent=True)
    assert isinstance(info.value, GatewayError)
    assert info.value.status == 500
    assert info.value.body() == {"error": info.value.message}  # not retryable
    assert "WRONGTYPE" in info.value.message


async def test_a_stopped_redis_gives_store_unavailable_quickly(redis_server: RedisServer) -> None:
    """Redis stopped: the request fails with 503 within the time budget, it does not hang."""
    c = LegacyClient.connect(redis_server.url, SETTINGS)
    try:
        await c.ping()
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="legacy store unavailable"):
            await c.run("HGETALL tasks", lambda r: r.hgetall("agent-coord:tasks"), idempotent=True)
        assert time.monotonic() - started < 3 * SETTINGS.timeout_s + 1
    finally:
        if not redis_server.running:
            redis_server.start()
        await c.close()


async def test_the_client_recovers_when_redis_comes_back(redis_server: RedisServer) -> None:
    """After Redis restarts, the same client works again (pooled connections are replaced)."""
    c = LegacyClient.connect(redis_server.url, SETTINGS)
    try:
        await c.ping()
        redis_server.kill()
        with pytest.raises(StoreUnavailable):
            await c.ping()
        redis_server.start()
        assert await c.ping()
    finally:
        if not redis_server.running:
            redis_server.start()
        await c.close()


async def test_the_pool_bounds_connections_and_a_waiter_gets_a_freed_one(redis_url: str) -> None:
    """With `pool_size` commands blocking, one more waits for a pooled connection instead of
    opening another, and runs as soon as one is given back."""
    c = LegacyClient.connect(redis_url, LegacySettings(pool_size=2, timeout_s=2.0, retries=0))
    order: list[str] = []

    async def block(r: Redis) -> None:
        await r.blpop(["agent-coord:nothing"], timeout=0.3)
        order.append("blocked")

    try:
        blockers = [asyncio.ensure_future(c.run("BLPOP", block, idempotent=False)) for _ in range(2)]
        await asyncio.sleep(0.05)  # both hold a connection now
        assert await c.ping()
        order.append("ping")
        await asyncio.gather(*blockers)
        assert order.index("ping") > 0  # it ran only once a blocking command gave a connection back
    finally:
        await c.close()


async def test_an_exhausted_pool_is_a_503_after_the_timeout(redis_url: str) -> None:
    """Every pooled connection taken: a command waits at most `timeout_s`, then fails with a
    retryable 503 instead of hanging."""
    c = LegacyClient.connect(redis_url, LegacySettings(pool_size=1, timeout_s=0.3, retries=0))
    taken = await c.redis.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="legacy store unavailable: PING") as info:
            await c.ping()
        assert 0.25 < time.monotonic() - started < 2.0
        assert info.value.body()["retryable"] is True
    finally:
        await c.redis.connection_pool.release(taken)
        await c.close()


# --- the shared pipelined connection (single commands, pipelines, MULTI/EXEC, scripts) ----------------


async def test_shared_commands_answer_as_the_pool_does(client: LegacyClient) -> None:
    """Commands of many callers at once, on the one shared connection: each caller gets its own
    reply, decoded to str (invalid UTF-8 kept with surrogateescape), None for a missing field."""
    assert client.shared is not None
    await client.call("HSET", "HSET", "h", "bad", b"\xff\xfe")
    replies = await asyncio.gather(
        *(client.call("HSET", "HSET", "h", f"f{i}", f"v{i}") for i in range(50)),
        *(client.call("HGET", "HGET", "h", f"f{i}") for i in range(50)),
    )
    assert replies[50:] == [f"v{i}" for i in range(50)]  # each HGET after its HSET: sent in order
    assert await client.call("HGET", "HGET", "h", "missing") is None
    assert await client.call("HGET", "HGET", "h", "bad") == b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert await client.pipeline("two", [("HGET", "h", "f1"), ("HLEN", "h")]) == ["v1", 51]
    assert await client.transaction("MULTI", [("LPUSH", "l", "a"), ("LTRIM", "l", "0", "0")]) == [1, "OK"]
    assert client.shared.connections == 1


async def test_a_shared_command_error_is_a_legacy_store_error(client: LegacyClient) -> None:
    """WRONGTYPE from the shared connection: 500, as from the pool; the connection stays usable."""
    await client.call("SET", "SET", "s", "x")
    with pytest.raises(LegacyStoreError, match="WRONGTYPE"):
        await client.call("HGET", "HGET", "s", "f")
    with pytest.raises(LegacyStoreError, match="WRONGTYPE"):
        await client.pipeline("two", [("GET", "s"), ("HGET", "s", "f")])
    assert await client.call("GET", "GET", "s") == "x"


async def test_a_script_redis_forgot_is_sent_whole(client: LegacyClient) -> None:
    """EVALSHA of a script Redis does not know (a restart, SCRIPT FLUSH) runs it with EVAL: once."""
    script = LuaScript("redis.call('INCR', KEYS[1]); return ARGV[1]")
    await client.call("SCRIPT FLUSH", "SCRIPT", "FLUSH")
    assert await client.script("incr", script, ["n"], ["one"], idempotent=False) == "one"
    assert await client.script("incr", script, ["n"], ["two"], idempotent=False) == "two"
    assert await client.call("GET", "GET", "n") == "2"


async def test_the_shared_connection_survives_a_redis_restart(redis_server: RedisServer) -> None:
    """Redis killed: the commands fail with 503 (no hang); Redis back: the next command reconnects."""
    c = LegacyClient.connect(redis_server.url, SETTINGS)
    try:
        assert await c.call("PING", "PING") == "PONG"
        redis_server.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="legacy store unavailable"):
            await c.call("HGET", "HGET", "h", "f")
        with pytest.raises(StoreUnavailable):
            await c.call("LPUSH", "LPUSH", "l", "x", idempotent=False)
        assert time.monotonic() - started < 3 * SETTINGS.timeout_s + 1
        redis_server.start()
        assert await c.call("HGET", "HGET", "h", "f") is None
        assert c.shared is not None
        assert c.shared.connections == 2
    finally:
        if not redis_server.running:
            redis_server.start()
        await c.close()


async def test_a_reply_that_never_comes_is_a_timeout(redis_url: str) -> None:
    """A command Redis does not answer within `legacy.timeout_s` (here a blocking pop) fails the
    shared connection: its caller and the commands queued behind it get 503, not a hang."""
    c = LegacyClient.connect(redis_url, LegacySettings(timeout_s=0.3, retries=0))
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            c.call("BLPOP", "BLPOP", "empty", "0", idempotent=False),
            c.call("GET", "GET", "x"),
            return_exceptions=True,
        )
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert time.monotonic() - started < 2.0
        assert await c.call("GET", "GET", "x") is None  # a new connection
    finally:
        await c.close()
