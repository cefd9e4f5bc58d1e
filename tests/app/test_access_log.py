"""What the gateway logs and counts about requests that go wrong on the client's side: a client
that hangs up mid-body, a token in the query string."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.app import METRICS
from gateway.logs import configure_logging
from gateway.settings import LogSettings
from gateway.testing.raw_http import send_and_hang_up

from .conftest import Served

pytestmark = pytest.mark.usefixtures("restore_logging")


def logging_to(level: str) -> io.StringIO:
    out = io.StringIO()
    configure_logging(LogSettings(level=level, format="json"), stream=out)
    return out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_a_client_that_hangs_up_mid_body_is_a_client_abort(served: Served) -> None:
    """A POST whose client closes the connection halfway through its body is logged as a client
    abort at info, without a traceback, and counted as 499, not as a 500."""
    out = logging_to("info")
    head = b"POST /coordinator/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    await send_and_hang_up(served.host, served.port, head + b'{"author": "a", "mess')
    for _ in range(100):  # the server notices the hang-up on its own schedule
        if any(line["event"] == "http.client_abort" for line in lines(out)):
            break
        await asyncio.sleep(0.01)
    events = [line["event"] for line in lines(out)]
    assert "http.unhandled" not in events
    [abort] = [line for line in lines(out) if line["event"] == "http.client_abort"]
    assert (abort["level"], abort["path"]) == ("info", "/coordinator/chat")
    statuses = {status for (_method, _route, status) in served.app[METRICS].requests}
    assert statuses == {499}


async def test_a_token_in_the_query_string_is_not_written_to_the_access_log(served: Served) -> None:
    """At debug, the access line of `?token=...` (and of `access_token`, `password`) shows *** for
    the value and keeps the other parameters."""
    out = logging_to("debug")
    async with ClientSession() as session:
        url = f"{served.url}/coordinator/agents?token=s3cret&limit=5&access_token=t2&password=p"
        async with session.get(url) as resp:
            assert resp.status == 200
    [access] = [line for line in lines(out) if line["event"] == "http.request"]
    assert access["path"] == "/coordinator/agents?token=***&limit=5&access_token=***&password=***"
    assert "s3cret" not in out.getvalue()
