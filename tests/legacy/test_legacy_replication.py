"""LegacyStore's replication interface: idempotent upserts and deletes of entity state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from gateway.clock import FakeClock
from gateway.domain import commands as c
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import Agent, Claim, DirectMessage, GroupMessage, Handoff, Lock, Memory, Task
from gateway.errors import ApiError
from gateway.legacy import keys
from gateway.legacy.generator import BASE_MS
from gateway.legacy.store import LegacyStore
from gateway.settings import Settings

pytestmark = pytest.mark.integration

NOW = BASE_MS
T = iso_from_ms(NOW)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[LegacyStore]:
    s = LegacyStore.from_url(redis_url, Settings(), clock=FakeClock(NOW))
    yield s
    await s.close()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_upserts_are_idempotent_and_read_back_equal(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Writing the same entity twice leaves one equal value that the store reads back unchanged."""
    task = Task("task-1", "t", None, "in-progress", "phil", "tyler", "urgent", ["a"], ["f.py"], T, T)
    handoff = Handoff("h1", "a", None, "t", "ctx", None, None, ["n"], "high", "pending", None, T, None, None)
    for _ in range(2):
        await store.upsert_task(task)
        await store.upsert_handoff(handoff)
    assert await r.hlen(keys.TASKS) == 1
    assert await store.list_tasks(c.ListTasks.parse({}, 10)) == [task]
    assert await store.get_handoff("h1") == handoff


async def test_upsert_agent_keeps_legacy_only_fields(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Replicating an actor-side agent onto a rich legacy record keeps metrics, version, name."""
    await r.hset(
        keys.ACTIVE_AGENTS, "r", json.dumps({"id": "r", "name": "Rex", "version": 4, "status": "idle"})
    )
    await store.upsert_agent(Agent("r", "active", "task", None, T, ["py"], [], []))
    value = json.loads(await r.hget(keys.ACTIVE_AGENTS, "r") or "{}")
    assert (value["name"], value["version"], value["status"], value["capabilities"]) == (
        "Rex",
        4,
        "active",
        ["py"],
    )
    assert await r.hget(keys.AGENT_PRESENCE, "r") == "online"


async def test_upsert_refuses_to_overwrite_an_unreadable_value(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """A corrupt legacy value is never replaced by replication (it is reported instead)."""
    await r.hset(keys.TASKS, "task-1", "{broken")
    with pytest.raises(ApiError):
        await store.upsert_task(Task("task-1", "t", None, "todo", None, "c", "low", [], [], T, T))
    assert await r.hget(keys.TASKS, "task-1") == "{broken"


async def test_claims_locks_and_memory(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Claim and lock upserts/deletes hit their fields; memory upserts keep the tag index."""
    await store.upsert_claim(Claim("api/x.ts", "phil", None, T))
    assert await r.hexists(keys.CLAIMS, "phil:api/x.ts")
    await store.delete_claim("phil", "api/x.ts")
    assert not await r.exists(keys.CLAIMS)
    lock = Lock("p", "file-lock", "phil", None, T, iso_from_ms(NOW + 1000), NOW + 1000)
    await store.upsert_lock(lock)
    assert (await store.check_lock("p", NOW)).lock == lock
    await store.delete_lock("p")
    assert (await store.check_lock("p", NOW)).lock is None
    await store.upsert_memory(Memory("mem-1", "learning", "c", ["Tag"], T), "phil")
    assert await r.smembers(keys.memory_tag("tag")) == {"mem-1"}
    assert [x.id for x in await store.search_memory(c.MemoryQuery.parse("phil", {}, 50))] == ["mem-1"]


async def test_dm_and_chat_replication_is_idempotent(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """A DM or chat message replicated twice appears once; a read flag is replicated with readAt."""
    dm = DirectMessage("msg-1", "a", "note", "hello", T, False)
    await store.upsert_dm(dm, "b")
    await store.upsert_dm(dm, "b")
    conv = json.loads(await r.hget(keys.DM_CONVOS, "dm-a-b") or "{}")
    assert conv["unreadCount"] == {"a": 0, "b": 1}
    await store.upsert_dm(DirectMessage("msg-1", "a", "note", "hello", T, True), "b")
    msgs = json.loads(await r.hget(keys.DM_MESSAGES, "dm-a-b") or "[]")
    assert [(x["id"], x["read"], x.get("readAt")) for x in msgs] == [("msg-1", True, T)]
    assert json.loads(await r.hget(keys.DM_CONVOS, "dm-a-b") or "{}")["unreadCount"] == {"a": 0, "b": 0}
    msg = GroupMessage("1-abc", "a", "agent", "hi", T, [])
    await store.append_chat(msg)
    await store.append_chat(msg)
    assert await r.llen(keys.MESSAGES) == 1
