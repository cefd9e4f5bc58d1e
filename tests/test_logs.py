"""gateway.logs: one output format for structlog and stdlib loggers, request ids, secret masking."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import datetime
from typing import Any

import pytest

from gateway.logs import bind_request_id, clear_request_context, configure_logging, get_logger
from gateway.settings import LogSettings

pytestmark = pytest.mark.usefixtures("restore_logging")


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def fail() -> None:
    raise ValueError("boom")


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_timestamp_level_event_logger() -> None:
    """In JSON format each line is one object with ISO timestamp, level, event and logger."""
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    get_logger("gateway.test").info("started", port=8787)
    [line] = json_lines(out)
    assert line["event"] == "started"
    assert line["level"] == "info"
    assert line["logger"] == "gateway.test"
    assert line["port"] == 8787
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]


def test_request_id_appears_on_every_line_of_the_request() -> None:
    """A request id bound through contextvars is on structlog and stdlib lines alike, until cleared."""
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    bind_request_id("req-42")
    get_logger("gateway.http").info("handling")
    logging.getLogger("aiohttp.access").info("GET /health 200")
    clear_request_context()
    get_logger("gateway.http").info("idle")
    first, second, third = json_lines(out)
    assert first["request_id"] == "req-42"
    assert second["request_id"] == "req-42"
    assert second["logger"] == "aiohttp.access"
    assert second["event"] == "GET /health 200"
    assert "request_id" not in third


async def test_request_ids_do_not_leak_between_concurrent_tasks() -> None:
    """Two requests handled concurrently each log only their own request id."""
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    log = get_logger("gateway.http")
    both_bound = asyncio.Barrier(2)

    async def handle(request_id: str) -> None:
        bind_request_id(request_id)
        await both_bound.wait()
        log.info("handled", expected=request_id)

    await asyncio.gather(asyncio.create_task(handle("a")), asyncio.create_task(handle("b")))
    lines = json_lines(out)
    assert len(lines) == 2
    assert all(line["request_id"] == line["expected"] for line in lines)


def test_secret_keys_are_masked() -> None:
    """Values under token/password/secret/authorization keys never reach the output."""
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    get_logger("gateway.test").info(
        "login",
        admin_token="tok-1",
        password="pw-2",
        clientSecret="sec-3",
        headers={"Authorization": "Bearer tok-4", "Accept": "*/*"},
        redis="redis://:pw-5@redis.internal:6379/0",
        tokensUsed=1234,
        secret=None,
    )
    text = out.getvalue()
    for secret in ("tok-1", "pw-2", "sec-3", "tok-4", "pw-5"):
        assert secret not in text
    [line] = json_lines(out)
    assert line["admin_token"] == "***"
    assert line["headers"] == {"Authorization": "***", "Accept": "*/*"}
    assert line["redis"] == "redis://:***@redis.internal:6379/0"
    assert line["tokensUsed"] == 1234  # a count, not a credential
    assert line["secret"] is None  # nothing to hide, and "unset" is worth seeing


def test_auto_format_is_json_when_not_a_terminal() -> None:
    """format=auto writes JSON lines to a stream that is not a TTY."""
    out = io.StringIO()
    configure_logging(LogSettings(format="auto"), stream=out)
    get_logger("gateway.test").info("hello")
    assert json_lines(out)[0]["event"] == "hello"


def test_auto_format_is_console_on_a_terminal() -> None:
    """format=auto writes human-readable console lines (not JSON) to a TTY."""
    out = FakeTTY()
    configure_logging(LogSettings(format="auto"), stream=out)
    get_logger("gateway.test").info("hello", port=8787)
    text = out.getvalue()
    assert "hello" in text
    assert "port" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_level_filters_lower_levels() -> None:
    """Lines below the configured level are dropped, for structlog and stdlib loggers."""
    out = io.StringIO()
    configure_logging(LogSettings(level="warning", format="json"), stream=out)
    get_logger("gateway.test").info("dropped")
    logging.getLogger("aiohttp.server").info("dropped too")
    get_logger("gateway.test").warning("kept")
    assert [line["event"] for line in json_lines(out)] == ["kept"]


def test_reconfiguring_replaces_the_previous_output() -> None:
    """Calling configure_logging again moves output to the new stream instead of duplicating it."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(LogSettings(format="json"), stream=first)
    configure_logging(LogSettings(format="json"), stream=second)
    get_logger("gateway.test").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_exceptions_are_rendered_in_json() -> None:
    """log.exception() in JSON format carries the exception type and message."""
    out = io.StringIO()
    configure_logging(LogSettings(format="json"), stream=out)
    try:
        fail()
    except ValueError:
        get_logger("gateway.test").exception("failed")
    [line] = json_lines(out)
    assert line["event"] == "failed"
    assert "ValueError" in json.dumps(line["exception"])
    assert "boom" in json.dumps(line["exception"])


def _fail_holding_a_secret() -> None:
    authorization = "Bearer s3cr3t-admin-token"
    raise RuntimeError(f"bad request ({len(authorization)} chars)")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_carry_local_variables(fmt: str) -> None:
    """An exception's frames are logged without their locals, which may hold secrets."""
    out = FakeTTY() if fmt == "console" else io.StringIO()
    configure_logging(LogSettings(format=fmt), stream=out)
    try:
        _fail_holding_a_secret()
    except RuntimeError:
        get_logger("gateway.test").exception("failed")
    text = out.getvalue()
    assert "RuntimeError" in text
    assert "_fail_holding_a_secret" in text  # the frames are there
    assert "s3cr3t-admin-token" not in text
