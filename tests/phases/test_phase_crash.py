"""A gateway process killed while replication is pending repairs it after the restart.

Real `agent-coord serve` processes, SIGKILLed (or stopped by a crash point) with no cleanup;
Redis is a real redis-server of the test's own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.actors.crash import CRASH_EXIT_CODE
from gateway.phases.repair import INTENTS_FILE, IntentJournal
from gateway.testing import RedisServer
from gateway.testing.gateway_process import GatewayProcess

from .helpers import ActorView, Client, LegacyView, new_session, queue_drained

MakeProc = Callable[..., GatewayProcess]


def token(data_dir: Path) -> str:
    return (data_dir / "admin-token").read_text(encoding="utf-8").strip()


def pending(data_dir: Path) -> tuple[int, int]:
    """(repair entries, open intents) in the repair queue's database and intent journal, read
    behind the gateway's back."""
    db = sqlite3.connect(data_dir / "repair.sqlite")
    try:
        entries = int(db.execute("SELECT COUNT(*) FROM repair").fetchone()[0])
    finally:
        db.close()
    return entries, len(IntentJournal.left_behind(data_dir / INTENTS_FILE))


@pytest.mark.slow
@pytest.mark.integration
async def test_sigkill_with_queued_repairs_loses_nothing(
    gateway_proc: MakeProc, own_redis: RedisServer, data_dir: Path
) -> None:
    """read-switch, Redis down, concurrent writes, SIGKILL mid-stream: after Redis and the gateway
    restart the queue drains, every acknowledged write is in the actors, and both stores agree."""
    proc = gateway_proc(data_dir, own_redis.url, "read-switch").start()
    own_redis.stop()
    acked: dict[str, list[str]] = {"chat": [], "task": [], "dm": [], "memory": []}
    killed = asyncio.Event()

    async def writer(c: Client, n: int) -> None:
        i = 0
        while not killed.is_set():
            i += 1
            kind = ("chat", "task", "dm", "memory")[(n + i) % 4]
            path, body, field = {
                "chat": ("/coordinator/chat", {"author": f"w{n}", "message": f"m{i}"}, "message"),
                "task": ("/coordinator/tasks", {"title": f"t{n}-{i}"}, "task"),
                "dm": ("/agent/bob/messages", {"from": f"w{n}", "message": f"d{i}"}, "message"),
                "memory": (f"/agent/w{n}/memory", {"content": f"c{i}"}, "memory"),
            }[kind]
            try:
                status, answer = await c.call("POST", path, body)
            except aiohttp.ClientError:
                return  # the gateway is gone: this request was not acknowledged
            if status == 200:
                acked[kind].append(answer[field]["id"])

    async with new_session() as session:
        c = Client(proc.url, session, token(data_dir))
        writers = [asyncio.create_task(writer(c, n)) for n in range(8)]
        deadline = asyncio.get_running_loop().time() + 20
        while sum(map(len, acked.values())) < 60:
            assert asyncio.get_running_loop().time() < deadline, acked
            await asyncio.sleep(0.01)
        proc.kill()
        killed.set()
        await asyncio.wait_for(asyncio.gather(*writers), 20)
    entries, _ = pending(data_dir)
    assert entries > 0  # the kill found work queued

    own_redis.start()  # empty: Redis persists nothing in these tests
    proc.start()
    async with new_session() as session:
        c = Client(proc.url, session, token(data_dir))
        await queue_drained(c)
        assert (await c.status())["phase"] == "read-switch"
    proc.stop()
    actors = ActorView(data_dir).snapshot()
    for kind, ids in acked.items():
        assert set(ids) <= set(actors[kind]), kind  # nothing acknowledged is missing
    legacy = LegacyView(own_redis.url)
    try:
        assert legacy.snapshot() == actors
        chat_ids = [m["id"] for m in legacy.chat()]
        assert len(chat_ids) == len(set(chat_ids))  # and nothing is there twice
    finally:
        legacy.close()


@pytest.mark.integration
@pytest.mark.parametrize(("phase", "authoritative"), [("read-switch", "actors"), ("write-through", "legacy")])
async def test_killed_between_the_two_writes_repairs_at_the_next_start(
    gateway_proc: MakeProc, redis_url: str, data_dir: Path, phase: str, authoritative: str
) -> None:
    """A gateway that dies after the authoritative write and before the replication (crash point
    `router.before_replicate`) leaves an intent; the next start turns it into a repair, so the
    other store gets the entity although the request was never answered."""
    proc = gateway_proc(data_dir, redis_url, phase, env={"AGENT_COORD_CRASH_AT": "router.before_replicate"})
    proc.start()
    async with new_session() as session:
        with pytest.raises(aiohttp.ClientError):
            await Client(proc.url, session).call("POST", "/coordinator/tasks", {"id": "t-1", "title": "half"})
    assert proc.proc is not None
    assert proc.proc.wait(10) == CRASH_EXIT_CODE
    legacy, actors = LegacyView(redis_url), ActorView(data_dir)
    try:
        held = {"actors": set(actors.snapshot()["task"]), "legacy": set(legacy.snapshot()["task"])}
        assert held == {authoritative: {"t-1"}, ({"actors", "legacy"} - {authoritative}).pop(): set()}
        assert pending(data_dir) == (0, 1)

        proc.env = {}
        proc.start()
        async with new_session() as session:
            c = Client(proc.url, session, token(data_dir))
            await queue_drained(c)
            assert (await c.status())["repairQueue"]["recoveredAtStart"] == 1
        proc.stop()
        assert legacy.snapshot()["task"] == actors.snapshot()["task"]
        assert set(actors.snapshot()["task"]) == {"t-1"}
    finally:
        legacy.close()
