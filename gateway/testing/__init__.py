"""Test helpers shipped with the package, so every test suite (ours, and tools built on the gateway)
uses the same ones: `RedisServer` runs a throw-away real redis-server on a free loopback port."""

from gateway.testing.redis_server import (
    RedisServer,
    RedisServerError,
    RedisServerNotFoundError,
    find_redis_server,
)

__all__ = ["RedisServer", "RedisServerError", "RedisServerNotFoundError", "find_redis_server"]
