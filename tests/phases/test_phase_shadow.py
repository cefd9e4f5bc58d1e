"""Shadow reads against a real gateway: compared, counted, never served, visible in the status."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.legacy import keys
from gateway.testing.gateway_process import GatewayProcess

from .helpers import Client, LegacyView, new_session, poll

MakeProc = Callable[..., GatewayProcess]


@pytest.mark.integration
@pytest.mark.parametrize(("phase", "served"), [("write-through", "legacy"), ("read-switch", "actors")])
async def test_a_value_changed_behind_the_gateway_shows_up_as_a_mismatch(
    gateway_proc: MakeProc, redis_url: str, data_dir: Path, phase: str, served: str
) -> None:
    """With every read shadowed (AGENT_COORD_MIGRATION_SHADOW_SAMPLE_RATE=1.0), equal stores compare
    clean; a task title changed in Redis behind the gateway's back is a `task` mismatch in
    /admin/status with both values, and the client gets the authoritative store's value."""
    proc = gateway_proc(
        data_dir, redis_url, phase, env={"AGENT_COORD_MIGRATION_SHADOW_SAMPLE_RATE": "1.0"}
    ).start()
    token = (data_dir / "admin-token").read_text(encoding="utf-8").strip()
    async with new_session() as session:
        c = Client(proc.url, session, token)
        task = (await c.ok("POST", "/coordinator/tasks", {"id": "t-1", "title": "same"}))["task"]
        assert (await c.ok("GET", "/coordinator/tasks"))["tasks"][0]["title"] == "same"

        def tasks_compared(n: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                domains = (await c.status())["shadow"]["domains"]
                return int(domains.get("task", {}).get("compared", 0)) >= n

            return check

        await poll(tasks_compared(1), what="the first shadow comparison")
        clean = (await c.status())["shadow"]
        assert clean["sampleRate"] == 1.0
        assert clean["domains"]["task"]["mismatched"] == 0
        assert clean["samples"] == []

        legacy = LegacyView(redis_url)
        try:
            raw = str(legacy.r.hget(keys.TASKS, task["id"]))
            legacy.r.hset(keys.TASKS, task["id"], raw.replace('"same"', '"edited in redis"'))
        finally:
            legacy.close()
        listed = (await c.ok("GET", "/coordinator/tasks"))["tasks"]
        authoritative, shadow = (
            ("edited in redis", "same") if served == "legacy" else ("same", "edited in redis")
        )
        assert listed[0]["title"] == authoritative

        await poll(tasks_compared(2), what="the second shadow comparison")
        status = (await c.status())["shadow"]
        assert status["domains"]["task"]["mismatched"] == 1
        assert status["domains"]["task"]["mismatchRate"] == 0.5
        (sample,) = status["samples"]
        assert (sample["domain"], sample["what"], sample["path"]) == ("task", "list", "$[0].title")
        assert sample["served"][0]["title"] == authoritative
        assert sample["shadow"][0]["title"] == shadow
