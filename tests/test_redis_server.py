"""gateway.testing.RedisServer: a real, throw-away redis-server that can go away and come back."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis

from gateway.testing import RedisServer, RedisServerError, RedisServerNotFoundError, find_redis_server

pytestmark = pytest.mark.integration


def ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


def test_starts_on_a_private_loopback_port_and_answers_ping() -> None:
    """The server answers PING on 127.0.0.1 at a port that is not the shared 6379."""
    with RedisServer() as server:
        assert server.port != 6379
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.running
        assert ping(server.url)
    assert not server.running


def test_kill_then_start_again_on_the_same_port() -> None:
    """After SIGKILL the server is gone; start() brings it back on the same port, empty."""
    with RedisServer() as server:
        url = server.url
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.set("k", "v")
            server.kill()
            assert not server.running
            with pytest.raises(redis.ConnectionError):
                client.ping()
            server.start()
            assert server.url == url
            assert client.get("k") is None  # nothing is persisted across a restart
            assert client.ping()
        finally:
            client.close()


def test_stop_then_start_again() -> None:
    """stop() (SIGTERM) ends the process; start() serves again on the same URL."""
    with RedisServer() as server:
        url = server.url
        server.stop()
        assert not server.running
        server.start()
        assert server.url == url
        assert ping(url)


def test_start_twice_is_an_error() -> None:
    """Starting a server that is already running is refused rather than spawning a second one."""
    with RedisServer() as server, pytest.raises(RedisServerError, match="already running"):
        server.start()


def test_refuses_the_shared_port() -> None:
    """Port 6379 belongs to the shared Redis and cannot be asked for."""
    with pytest.raises(ValueError, match="6379"):
        RedisServer(port=6379)


def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    """Without redis-server on PATH, the error tells how to install it or point to one."""
    with pytest.raises(RedisServerNotFoundError) as caught:
        find_redis_server({"PATH": str(tmp_path)})
    message = str(caught.value)
    assert "apt-get install redis-server" in message
    assert "AGENT_COORD_REDIS_SERVER" in message


def test_binary_from_environment_variable(tmp_path: Path) -> None:
    """AGENT_COORD_REDIS_SERVER names the binary; a path that is not executable is an error."""
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n", encoding="utf-8")
    with pytest.raises(RedisServerNotFoundError, match="not an executable"):
        find_redis_server({"AGENT_COORD_REDIS_SERVER": str(fake), "PATH": ""})
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert find_redis_server({"AGENT_COORD_REDIS_SERVER": str(fake), "PATH": ""}) == str(fake)


def test_a_binary_that_exits_is_reported(tmp_path: Path) -> None:
    """If the process exits while starting, start() fails at once with its exit code."""
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'bad config' >&2\nexit 3\n", encoding="utf-8")
    fake.chmod(0o755)
    server = RedisServer(binary=str(fake), startup_timeout_s=5)
    with pytest.raises(RedisServerError, match=r"exited with code 3.*bad config"):
        server.start()
    assert not server.running
    server.close()


@pytest.mark.parametrize("run", [1, 2])
def test_redis_url_fixture_gives_an_empty_database(redis_url: str, run: int) -> None:
    """Each test using redis_url starts with an empty database, whatever the one before wrote."""
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set(f"left-behind-{run}", "1")  # the other run must not see this
    finally:
        client.close()
