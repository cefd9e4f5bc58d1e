"""The one connection to the legacy Redis: a pooled redis-py asyncio client behind a retry policy.

Every legacy command of the gateway goes through `LegacyClient.run`, which

* uses ONE bounded connection pool (`legacy.pool_size`); a caller waits at most `legacy.timeout_s`
  for a free connection;
* sets connect and socket timeouts from `legacy.timeout_s`, so a Redis that is down or hung fails
  fast instead of hanging a request;
* retries transient failures (connection and timeout errors), bounded by `legacy.retries` extra
  attempts and by a total time budget, with exponential backoff and jitter (`gateway.retry`),
  but ONLY when the caller says the operation is safe to repeat (reads, an HSET of a whole value,
  HDEL). LPUSH and the non-idempotent scripts are sent once: a reply lost after Redis applied the
  command must not apply it twice. redis-py's own retry is switched off so there is one policy.
  The loop is written out rather than built with tenacity per call: a tenacity policy cost about
  50-100 us per command, more than the command itself (docs/benchmarks.md, issue 13);
* translates redis-py's exceptions at this boundary: connection, timeout and pool exhaustion
  become `StoreUnavailable` (503, retryable); anything else redis reports (WRONGTYPE, a script
  error) becomes `LegacyStoreError` (500). redis-py's `ConnectionError`/`TimeoutError` are only
  ever referred to as `redis.exceptions.*`, never imported under the built-in names.

The gateway's single commands, pipelines of them, MULTI/EXEC and scripts (`call`, `pipeline`,
`transaction`, `script`) go over one shared pipelined connection instead (`SharedConnection`:
redis-py's pool cost several times a command's own CPU), under the same retry and translation;
WATCH transactions and bulk work keep the pool (`run`).

Values are decoded as UTF-8 with `surrogateescape`, so a value holding invalid UTF-8 reaches the
codec (which reports it as corrupt) instead of failing a whole HGETALL, and a field name that is
not UTF-8 round-trips unchanged when written back.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.errors import LegacyStoreError, StoreUnavailable
from gateway.legacy.shared import LuaScript, SharedConnection
from gateway.legacy.tracking import TrackedHashes
from gateway.retry import Backoff
from gateway.settings import LegacySettings, mask_url

__all__ = ["LegacyClient", "LuaScript", "Redis"]

T = TypeVar("T")
Redis = redis.asyncio.Redis
"""The client type operations receive (`decode_responses=True`: str in, str out)."""

_TRANSIENT: Final = (
    redis.exceptions.ConnectionError,  # includes pool exhaustion and "connection refused"
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)
BACKOFF: Final = Backoff(base_s=0.05, cap_s=0.5, jitter=(0.0, 1.0))
"""Between attempts of an idempotent operation: up to 50, 100, 200 ms ..., at most 0.5 s."""
_RNG = random.Random()  # noqa: S311 - jitter, not security


class LegacyClient:
    """A pooled asyncio Redis client with the gateway's retry and error-translation policy."""

    def __init__(
        self,
        client: Redis,
        settings: LegacySettings,
        *,
        url: str = "",
        tracked: TrackedHashes | None = None,
        shared: SharedConnection | None = None,
    ) -> None:
        """Wrap `client` (built by `connect`, or a test's); `url` names it in error messages;
        `tracked`, when given, keeps whole hashes in memory (`gateway.legacy.tracking`); `shared`
        carries the single commands (else they take the pool)."""
        self.redis = client
        self.settings = settings
        self.url = url
        self.tracked = tracked
        self.shared = shared

    @classmethod
    def connect(
        cls,
        redis_url: str,
        settings: LegacySettings,
        *,
        track: Sequence[str] = (),
        track_lists: Mapping[str, int] | None = None,
    ) -> LegacyClient:
        """A client with the gateway's pool on `redis_url` (no connection is made until used);
        the hashes `track`, and the first elements of the lists `track_lists` (key -> how many),
        are kept in memory (`TrackedHashes`, one more connection) unless `legacy.cache_listings`
        is off."""
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=settings.pool_size,
            timeout=settings.timeout_s,  # waiting for a free pooled connection
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
            decode_responses=True,
            encoding_errors="surrogateescape",
            retry=Retry(NoBackoff(), 0),  # `run` below is the one retry policy
            health_check_interval=0,
        )
        tracked = (
            TrackedHashes(redis_url, settings, track, lists=track_lists)
            if (track or track_lists) and settings.cache_listings
            else None
        )
        shared = SharedConnection.for_url(redis_url, settings)
        client = redis.asyncio.Redis(connection_pool=pool)
        return cls(client, settings, url=redis_url, tracked=tracked, shared=shared)

    @classmethod
    def from_settings(cls, settings: LegacySettings, redis_url: str | None = None) -> LegacyClient:
        """A client for `redis_url`, else `settings.redis_url`."""
        url = redis_url or settings.redis_url
        if not url:
            raise ValueError("legacy.redis_url is not set: there is no legacy store to connect to")
        return cls.connect(url, settings)

    async def run(self, what: str, op: Callable[[Redis], Awaitable[T]], *, idempotent: bool) -> T:
        """Run `op` against Redis; retry it on transient errors only when `idempotent`.

        `what` names the operation in error messages (`"HGETALL agent-coord:tasks"`).
        """
        attempts = self.settings.retries + 1 if idempotent else 1
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await op(self.redis)
            except _TRANSIENT as exc:
                elapsed = time.monotonic() - started
                if attempt >= attempts or elapsed >= self.settings.timeout_s:
                    raise StoreUnavailable(
                        f"legacy store unavailable: {what} failed after {attempt} attempt(s) in "
                        f"{elapsed:.2f}s against {mask_url(self.url)}: {exc}"
                    ) from exc
            except redis.exceptions.RedisError as exc:
                raise LegacyStoreError(f"legacy store error: {what}: {exc}") from exc
            await asyncio.sleep(BACKOFF.delay_s(attempt - 1, _RNG))

    async def call(self, what: str, *words: Any, idempotent: bool = True) -> Any:
        """One command's raw reply (RESP2, as the pool's `execute_command` of a command without a
        reply callback: str, int, None, lists), under `run`'s retry and translation."""
        shared = self.shared
        if shared is not None:
            return await self.run(what, lambda _r: shared.call(*words), idempotent=idempotent)
        return await self.run(what, lambda r: _command(r, words), idempotent=idempotent)

    async def pipeline(
        self, what: str, commands: Sequence[tuple[Any, ...]], *, idempotent: bool = True
    ) -> list[Any]:
        """The raw replies of `commands`, sent in one round trip without MULTI."""
        shared = self.shared
        if shared is not None:
            return await self.run(what, lambda _r: shared.pipeline(commands), idempotent=idempotent)
        return await self.run(what, lambda r: _pooled(r, commands, transaction=False), idempotent=idempotent)

    async def transaction(
        self, what: str, commands: Sequence[tuple[Any, ...]], *, idempotent: bool = True
    ) -> list[Any]:
        """The raw replies of `commands`, run in MULTI/EXEC."""
        shared = self.shared
        if shared is not None:
            return await self.run(what, lambda _r: shared.transaction(commands), idempotent=idempotent)
        return await self.run(what, lambda r: _pooled(r, commands, transaction=True), idempotent=idempotent)

    async def script(
        self, what: str, script: LuaScript, keys: Sequence[str], args: Sequence[Any], *, idempotent: bool
    ) -> Any:
        """`script`'s raw reply (EVALSHA, EVAL when Redis does not know it: it did not run)."""
        shared = self.shared

        async def op(r: Redis) -> Any:
            if shared is not None:
                return await shared.script(script, keys, args)
            try:
                return await _command(r, ("EVALSHA", script.sha, len(keys), *keys, *args))
            except redis.exceptions.NoScriptError:
                return await _command(r, ("EVAL", script.text, len(keys), *keys, *args))

        return await self.run(what, op, idempotent=idempotent)

    async def ping(self) -> bool:
        """True when Redis answers PING (for readiness checks); raises StoreUnavailable otherwise."""
        return bool(await self.run("PING", lambda r: r.ping(), idempotent=True))

    async def close(self) -> None:
        """Close the client, its pool and its tracking connection."""
        if self.tracked is not None:
            await self.tracked.close()
        if self.shared is not None:
            await self.shared.close()
        await self.redis.aclose(close_connection_pool=True)


async def _pooled(r: Redis, commands: Sequence[tuple[Any, ...]], *, transaction: bool) -> list[Any]:
    """`commands` through a pooled pipeline (a client without a shared connection)."""
    async with r.pipeline(transaction=transaction) as pipe:
        for cmd in commands:
            _ = pipe.execute_command(*cmd)
        return await pipe.execute()


async def _command(r: Redis, words: tuple[Any, ...]) -> Any:
    """One command through the pool (a client without a shared connection)."""
    return await r.execute_command(*words)  # type: ignore[no-untyped-call]
