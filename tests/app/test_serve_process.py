"""The gateway as a real process: start-up line, one owner per data directory, graceful stop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import FakeClock
from gateway.phases.control import PhaseControl
from gateway.testing.gateway_process import GatewayProcess, GatewayProcessError


def first_log_line(gw: GatewayProcess) -> dict[str, object]:
    for line in gw.log_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    raise AssertionError("no JSON log line")


def test_first_log_line_says_it_runs_on_the_actor_store_alone(tmp_path: Path) -> None:
    """With no Redis configured the first log line names the embedded SQLite actor store."""
    with GatewayProcess(tmp_path / "data") as gw:
        line = first_log_line(gw)
    assert line["store"] == "actors"
    assert "embedded SQLite actor store alone" in str(line["message"])


def test_second_gateway_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    """Only one process may own a data directory; a second exits with a message saying so."""
    data = tmp_path / "data"
    with GatewayProcess(data):
        second = GatewayProcess(data, startup_timeout_s=15)
        with pytest.raises(GatewayProcessError) as info:
            second.start()
        assert "owns the data directory" in str(info.value)
        assert "Traceback" not in second.log_tail(200)
    # once the first is gone, the directory can be owned again
    with GatewayProcess(data) as again:
        assert again.proc is not None


async def test_sigterm_closes_websockets_with_1001_and_exits_cleanly(tmp_path: Path) -> None:
    """SIGTERM: open sockets get close code 1001, the process exits 0 within the grace period."""
    gw = GatewayProcess(tmp_path / "data").start()
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(
                f"{gw.url}/coordinator?agentId=term-test", timeout=aiohttp.ClientWSTimeout(ws_close=5)
            )
            welcome = await asyncio.wait_for(ws.receive_json(), 5)
            assert welcome["type"] == "agent-update"
            loop = asyncio.get_running_loop()
            stopping = loop.run_in_executor(None, gw.stop)
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1001
            assert await asyncio.wait_for(stopping, 20) == 0
    finally:
        gw.kill()


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    """What a stopped gateway acknowledged is served again by the next one on the same directory."""
    data = tmp_path / "data"
    with GatewayProcess(data) as gw:
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{gw.url}/coordinator/tasks", json={"title": "survive", "createdBy": "a"}) as r,
        ):
            task_id = (await r.json())["task"]["id"]
    with GatewayProcess(data) as gw:
        async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/coordinator/tasks") as r:
            ids = [t["id"] for t in (await r.json())["tasks"]]
    assert task_id in ids


def test_data_dir_in_a_redis_phase_without_redis_refuses_with_a_message(tmp_path: Path) -> None:
    """A data directory left in write-through cannot be served without Redis; exit 1, reason given."""
    data = tmp_path / "data"
    PhaseControl(data, FakeClock(), "write-through").close()
    gw = GatewayProcess(data, startup_timeout_s=15)
    with pytest.raises(GatewayProcessError) as info:
        gw.start()
    assert "exited with 1" in str(info.value)
    assert "needs the legacy Redis" in str(info.value)
    assert "Traceback" not in gw.log_tail(200)
