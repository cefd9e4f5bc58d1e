"""gateway.legacy.pipeline: the URL of both pipelined connections (the shared one and the tracked
cache's), and their handshake against a real redis-server with a user, a password and a database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from gateway.legacy.pipeline import endpoint
from gateway.legacy.shared import SharedConnection
from gateway.legacy.tracking import TrackedHashes
from gateway.settings import LegacySettings

SETTINGS = LegacySettings(timeout_s=2.0, retries=0)


def test_endpoint_of_each_url_form() -> None:
    tcp = endpoint("redis://agent:p%40ss%3Aword@10.0.0.5:6380/4")
    assert tcp is not None
    assert tcp.where == {"host": "10.0.0.5", "port": 6380}
    assert tcp.auth() == ("agent", "p@ss:word")
    assert tcp.db == "4"

    bare = endpoint("redis://")
    assert bare is not None
    assert bare.where == {"host": "localhost", "port": 6379}
    assert bare.auth() is None
    assert bare.db == "0"

    password_only = endpoint("redis://:secret@host")
    assert password_only is not None
    assert password_only.auth() == ("default", "secret")

    unix = endpoint("unix:///run/redis.sock?db=2")
    assert unix is not None
    assert unix.where == {"path": "/run/redis.sock"}
    assert unix.db == "2"

    assert endpoint("rediss://host:6380/0") is None  # TLS: left to the pool
    assert SharedConnection.for_url("rediss://host:6380/0", SETTINGS) is None


@pytest.fixture
def user_url(redis_url: str) -> Iterator[str]:
    """The session server's URL for a user of its own with a password that needs escaping, db 3."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("pipeline-test", enabled=True, passwords=["+s3cr@t/pw"], keys=["*"], commands=["+@all"])
    try:
        host_port = redis_url.removeprefix("redis://").split("/")[0]
        yield f"redis://pipeline-test:s3cr%40t%2Fpw@{host_port}/3"
    finally:
        admin.acl_deluser("pipeline-test")
        redis.Redis.from_url(redis_url, db=3).flushdb()
        admin.close()


@pytest.mark.integration
async def test_both_connections_authenticate_and_select_the_database(user_url: str) -> None:
    shared = SharedConnection.for_url(user_url, SETTINGS)
    tracked = TrackedHashes(user_url, SETTINGS, ("h",))
    assert shared is not None
    try:
        assert await shared.call("HSET", "h", "f", "v") == 1
        assert await shared.call("CLIENT", "GETNAME") == "agent-coord"
        assert await tracked.wait_up()
        assert await tracked.read(["h"]) == [{"f": "v"}]
        direct = redis.Redis.from_url(user_url, decode_responses=True)
        try:
            assert direct.hgetall("h") == {"f": "v"}  # db 3, the URL's
            direct.hset("h", "g", "w")  # another client's write: the cache learns of it
        finally:
            direct.close()
        assert await tracked.read(["h"]) == [{"f": "v", "g": "w"}]
    finally:
        await shared.close()
        await tracked.close()


@pytest.mark.integration
async def test_a_wrong_password_fails_the_shared_connection_with_a_redis_error(user_url: str) -> None:
    shared = SharedConnection.for_url(user_url.replace("s3cr%40t", "wrong"), SETTINGS)
    assert shared is not None
    try:
        with pytest.raises(redis.exceptions.RedisError, match=r"WRONGPASS|invalid"):
            await shared.call("PING")
        assert shared.connections == 0
    finally:
        await shared.close()
