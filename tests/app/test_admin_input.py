"""The admin API answers malformed input with a 4xx JSON error, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.settings import MigrationSettings, Settings, StorageSettings
from gateway.testing.raw_http import RawAnswer, exchange

TOKEN = "admin-secret"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[TestServer]:
    """A gateway on the actor store alone with a known admin token."""
    settings = Settings(
        storage=StorageSettings(data_dir=tmp_path / "data"),
        migration=MigrationSettings(admin_token=TOKEN),
    )
    srv = TestServer(create_app(settings))
    await srv.start_server()
    yield srv
    await srv.close()


def get(path: str, authorization: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + b"\r\n\r\n"


async def ask(server: TestServer, data: bytes) -> RawAnswer:
    assert server.port is not None
    return await exchange(server.host, server.port, data)


async def test_a_non_utf8_authorization_header_is_a_401(server: TestServer) -> None:
    """A raw 0xff byte in the Authorization header is refused with a 401 JSON error."""
    answer = await ask(server, get("/admin/status", b"Bearer \xff\xfe"))
    assert answer.status == 401
    assert answer.content_type == "application/json"
    assert "bearer token" in orjson.loads(answer.body)["error"]


@pytest.mark.parametrize("limit", ["%C2%B2", "%D9%A3", "1.5", "-1", "0", "10001"])
async def test_a_history_limit_that_is_not_ascii_digits_in_range_is_a_400(
    server: TestServer, limit: str
) -> None:
    """`?limit=²` (a digit to str.isdigit, not to int) and other bad limits answer 400 naming limit."""
    path = f"/admin/phase/history?limit={limit}"
    answer = await ask(server, get(path, f"Bearer {TOKEN}".encode()))
    assert answer.status == 400
    assert "limit" in orjson.loads(answer.body)["error"]


async def test_a_valid_history_limit_is_served(server: TestServer) -> None:
    """`?limit=5` answers the phase history."""
    answer = await ask(server, get("/admin/phase/history?limit=5", f"Bearer {TOKEN}".encode()))
    assert answer.status == 200
    assert "changes" in orjson.loads(answer.body)
