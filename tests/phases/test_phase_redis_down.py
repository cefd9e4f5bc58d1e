"""Redis stopped in each phase that writes it (migration.md, "Rules that make this correct").

In-process over a fake clock, so the repair worker's backoff passes when the test says so; Redis
is a real redis-server of the test's own, stopped and started again on the same port (it comes
back empty: it persists nothing).
"""

from __future__ import annotations

import asyncio
import os
import signal

from gateway.legacy import keys
from gateway.testing import RedisServer
from gateway.testing.snapshots import empty_snapshot

from .conftest import GwFactory
from .helpers import poll, write_everything

HUNG_TIMEOUT_S = 0.5
"""The legacy timeout of the tests that hang Redis (SIGSTOP): how long the first write waits."""


async def test_write_through_fails_the_write_and_leaves_the_actors_alone(
    start_gw: GwFactory, own_redis: RedisServer
) -> None:
    """write-through, Redis down: every write answers 503 with a JSON error, nothing reaches the
    actors and nothing is queued (there is nothing to repair)."""
    gw = await start_gw("write-through", redis=own_redis.url)
    before = gw.actors.snapshot()
    own_redis.stop()
    c = gw.client
    writes = [
        ("POST", "/coordinator/agents", {"agentId": "alice"}),
        ("POST", "/coordinator/chat", {"author": "alice", "message": "lost"}),
        ("POST", "/coordinator/tasks", {"title": "lost"}),
        ("POST", "/coordinator/zones", {"action": "claim", "zoneId": "z", "path": "p/", "owner": "alice"}),
        ("POST", "/coordinator/claims", {"action": "claim", "what": "w", "by": "alice"}),
        ("POST", "/coordinator/handoffs", {"fromAgent": "alice", "title": "t", "context": "c"}),
        ("POST", "/agent/alice/checkpoint", {"conversationSummary": "lost"}),
        ("POST", "/agent/bob/messages", {"from": "alice", "message": "lost"}),
        ("POST", "/agent/alice/memory", {"content": "lost"}),
        ("POST", "/lock/src%2Fa.ts/lock", {"agentId": "alice"}),
    ]
    for method, path, body in writes:
        status, answer = await c.call(method, path, body)
        assert status == 503, (path, status, answer)
        assert answer["retryable"] is True
        assert answer["error"] == "A backing store is unavailable; retry later", answer
    assert gw.actors.snapshot() == before == empty_snapshot()
    report = await c.status()
    assert report["phase"] == "write-through"
    assert report["repairQueue"]["depth"] == 0


async def test_read_switch_queues_while_redis_is_down_and_repairs_when_it_returns(
    start_gw: GwFactory, own_redis: RedisServer
) -> None:
    """read-switch, Redis down: every write succeeds and its entities queue (admin status shows
    the depth); when Redis is back the queue drains and both stores hold the same entities."""
    gw = await start_gw("read-switch", redis=own_redis.url)
    own_redis.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    w = await write_everything(gw.client)
    assert loop.time() - started < 10  # a dead Redis is not waited for on every write
    status = await gw.client.status()
    depth = status["repairQueue"]["depth"]
    assert depth >= 15  # every entity written: agents, chat, task, zones, claims, handoffs, ...
    assert status["repairQueue"]["oldestAgeMs"] is not None
    assert status["replication"]["queued"] >= depth
    assert gw.actors.snapshot()["task"][w.task_id]["status"] == "in-progress"

    own_redis.start()
    await gw.clock.advance(120_000)  # past any backoff

    async def drained() -> bool:
        await gw.clock.advance(1_000)
        return int((await gw.client.status())["repairQueue"]["depth"]) == 0

    await poll(drained, what="the repair queue to drain")
    assert gw.legacy.snapshot() == gw.actors.snapshot()
    assert (await gw.client.status())["repairQueue"]["repaired"] >= depth


async def test_read_switch_does_not_wait_for_a_hung_redis_on_every_write(
    start_gw: GwFactory, own_redis: RedisServer
) -> None:
    """read-switch, Redis hung (SIGSTOP: connections open, no answers): the first write waits for
    the timeout, later ones queue at once instead of each waiting for Redis again."""
    gw = await start_gw("read-switch", redis=own_redis.url, legacy_timeout_s=HUNG_TIMEOUT_S)
    await gw.client.ok("POST", "/coordinator/agents", {"agentId": "alice"})  # connections pooled
    pid = own_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        loop = asyncio.get_running_loop()
        await gw.client.ok("POST", "/coordinator/chat", {"author": "alice", "message": "first"})
        started = loop.time()
        ids = [
            (await gw.client.ok("POST", "/coordinator/chat", {"author": "alice", "message": f"m{i}"}))[
                "message"
            ]["id"]
            for i in range(10)
        ]
        elapsed = loop.time() - started
        assert elapsed < 1.0, f"10 writes took {elapsed:.2f} s with Redis hung"
        assert (await gw.client.status())["repairQueue"]["depth"] == 11
    finally:
        os.kill(pid, signal.SIGCONT)
    await gw.clock.advance(120_000)

    async def drained() -> bool:
        await gw.clock.advance(1_000)
        return int((await gw.client.status())["repairQueue"]["depth"]) == 0

    await poll(drained, what="the repair queue to drain")
    assert set(ids) <= set(gw.legacy.snapshot()["chat"])
    assert gw.legacy.snapshot() == gw.actors.snapshot()


async def test_an_entity_redis_cannot_take_does_not_block_replication(
    start_gw: GwFactory, own_redis: RedisServer
) -> None:
    """read-switch: a legacy value the gateway must not overwrite (unreadable) keeps its own
    repair entry, retried alone; later writes still replicate before the reply, and an entry
    queued behind it (Redis hung for a moment) is repaired."""
    gw = await start_gw("read-switch", redis=own_redis.url, legacy_timeout_s=HUNG_TIMEOUT_S)
    gw.legacy.r.hset(keys.TASKS, "t-bad", "{not json")
    await gw.client.ok("POST", "/coordinator/tasks", {"id": "t-bad", "title": "mine"})
    await gw.client.ok("POST", "/coordinator/tasks", {"id": "t-good", "title": "ok"})
    assert gw.legacy.r.hexists(keys.TASKS, "t-good")  # replicated at once, not queued
    pid = own_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        await gw.client.ok("POST", "/coordinator/tasks", {"id": "t-later", "title": "queued"})
    finally:
        os.kill(pid, signal.SIGCONT)
    assert [e.key.id for e in gw.runtime.queue.all()] == ["t-bad", "t-later"]

    async def only_the_bad_one_left() -> bool:
        await gw.clock.advance(61_000)
        return [e.key.id for e in gw.runtime.queue.all()] == ["t-bad"]

    await poll(only_the_bad_one_left, what="t-later to be repaired past t-bad")
    assert gw.legacy.r.hexists(keys.TASKS, "t-later")
    assert gw.legacy.r.hget(keys.TASKS, "t-bad") == "{not json"  # never overwritten
    (bad,) = gw.runtime.queue.all()
    assert bad.attempts >= 1
    assert "unreadable" in str(bad.last_error)
    await gw.client.ok("POST", "/coordinator/tasks", {"id": "t-after", "title": "direct"})
    assert gw.legacy.r.hexists(keys.TASKS, "t-after")  # the bad entity does not mark Redis down
