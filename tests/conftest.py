"""Fixtures shared by the whole test suite (fixtures used by one test file live in that file)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest
import redis
import structlog
from hypothesis import settings

import gateway.logs
from gateway.settings import ENV_PREFIX
from gateway.testing import RedisServer

# Property tests: the same examples on every run (a failure is reproducible, not luck), and no
# per-example deadline (its 200 ms default fails on a loaded machine without any bug).
settings.register_profile("agent-coord", derandomize=True, deadline=None)
settings.load_profile("agent-coord")

# --- the legacy Redis ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session, on a free loopback port (never the shared 6379)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session redis-server's URL, emptied (FLUSHDB) before the test."""
    if not redis_server.running:  # a test stopped or killed it
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop and start (data does not survive)."""
    with RedisServer() as server:
        yield server


# --- lines for the end of the run ------------------------------------------------------------------

_SUMMARY: pytest.StashKey[list[str]] = pytest.StashKey()


@pytest.fixture
def summary_line(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Add a line to the summary printed at the end of the run (e.g. the fuzz run's counts)."""
    lines = request.config.stash.setdefault(_SUMMARY, [])
    return lines.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the summary lines tests added, whatever the capture mode."""
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.write_sep("-", "summary lines")
        for line in lines:
            terminalreporter.write_line(line)


# --- process-wide state ----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove AGENT_COORD_* variables from os.environ, so the developer's shell cannot leak in."""
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True, scope="session")
def uncached_loggers() -> Iterator[None]:
    """Loggers configured by one test (a CLI run in-process) are not cached for the next ones.

    With structlog's cache on first use, a module logger first used under a test's
    `configure_logging` would keep those processors, and a later test's `capture_logs` would
    see none of its events: the result of a test would depend on which tests ran before it.
    """
    gateway.logs.CACHE_LOGGERS_ON_FIRST_USE = False
    yield
    gateway.logs.CACHE_LOGGERS_ON_FIRST_USE = True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging after the test: root handlers and level, and structlog's config."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
