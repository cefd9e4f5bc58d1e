"""gateway.legacy.replica.LegacyReplica: idempotent upserts and deletes of entity state in Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from gateway.clock import FakeClock
from gateway.domain import commands as c
from gateway.domain.entities import EntityKey
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    DirectMessage,
    GroupMessage,
    Handoff,
    Lock,
    Memory,
    Task,
    Zone,
)
from gateway.errors import ApiError
from gateway.legacy import keys
from gateway.legacy.generator import BASE_MS
from gateway.legacy.replica import LegacyReplica
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
def replica(store: LegacyStore) -> LegacyReplica:
    return LegacyReplica(store.records, store.clock)


def key_of(entity: Any, scope: str = "") -> EntityKey:
    """The key replication would use for `entity`."""
    domain = {Task: "task", Handoff: "handoff", Agent: "agent", Claim: "claim", Lock: "lock",
              Memory: "memory", DirectMessage: "dm", GroupMessage: "chat"}[type(entity)]  # fmt: skip
    ident = {Claim: "what", Lock: "resource_path", Agent: "agent_id"}.get(type(entity), "id")
    return EntityKey(domain, scope, getattr(entity, ident))


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_upserts_are_idempotent_and_read_back_equal(
    store: LegacyStore, replica: LegacyReplica, r: redis.asyncio.Redis
) -> None:
    """Writing the same entity twice leaves one equal value that the store reads back unchanged."""
    task = Task("task-1", "t", None, "in-progress", "phil", "tyler", "urgent", ["a"], ["f.py"], T, T)
    handoff = Handoff("h1", "a", None, "t", "ctx", None, None, ["n"], "high", "pending", None, T, None, None)
    for _ in range(2):
        await replica.write_entity(key_of(task), task)
        await replica.write_entity(key_of(handoff), handoff)
    assert await r.hlen(keys.TASKS) == 1
    assert await store.list_tasks(c.ListTasks.parse({}, 10)) == [task]
    assert await store.get_handoff("h1") == handoff


async def test_upsert_agent_keeps_legacy_only_fields(
    store: LegacyStore, replica: LegacyReplica, r: redis.asyncio.Redis
) -> None:
    """Replicating an actor-side agent onto a rich legacy record keeps metrics, version, name."""
    await r.hset(
        keys.ACTIVE_AGENTS, "r", json.dumps({"id": "r", "name": "Rex", "version": 4, "status": "idle"})
    )
    entity = Agent("r", "active", "task", None, T, ["py"], [], [])
    await replica.write_entity(key_of(entity), entity)
    value = json.loads(await r.hget(keys.ACTIVE_AGENTS, "r") or "{}")
    assert (value["name"], value["version"], value["status"], value["capabilities"]) == (
        "Rex",
        4,
        "active",
        ["py"],
    )
    assert await r.hget(keys.AGENT_PRESENCE, "r") == "online"


async def test_upsert_refuses_to_overwrite_an_unreadable_value(
    store: LegacyStore, replica: LegacyReplica, r: redis.asyncio.Redis
) -> None:
    """A corrupt legacy value is never replaced by replication (it is reported instead)."""
    await r.hset(keys.TASKS, "task-1", "{broken")
    with pytest.raises(ApiError):
        await replica.write_entity(
            key_of(x := Task("task-1", "t", None, "todo", None, "c", "low", [], [], T, T)), x
        )
    assert await r.hget(keys.TASKS, "task-1") == "{broken"


async def test_claims_locks_and_memory(
    store: LegacyStore, replica: LegacyReplica, r: redis.asyncio.Redis
) -> None:
    """Claim and lock upserts/deletes hit their fields; memory upserts keep the tag index."""
    entity = Claim("api/x.ts", "phil", None, T)
    await replica.write_entity(key_of(entity), entity)
    assert await r.hexists(keys.CLAIMS, "phil:api/x.ts")
    await replica.write_entity(EntityKey("claim", "", "api/x.ts"), None)
    assert not await r.exists(keys.CLAIMS)
    lock = Lock("p", "file-lock", "phil", None, T, iso_from_ms(NOW + 1000), NOW + 1000)
    await replica.write_entity(key_of(lock), lock)
    assert (await store.check_lock("p", NOW)).lock == lock
    await replica.write_entity(EntityKey("lock", "", "p"), None)
    assert (await store.check_lock("p", NOW)).lock is None
    await replica.write_entity(
        EntityKey("memory", "phil", "mem-1"), Memory("mem-1", "learning", "c", ["Tag"], T)
    )
    assert await r.smembers(keys.memory_tag("tag")) == {"mem-1"}
    assert [x.id for x in await store.search_memory(c.MemoryQuery.parse("phil", {}, 50))] == ["mem-1"]


async def test_a_replicated_claim_replaces_stale_fields_of_others(
    store: LegacyStore, replica: LegacyReplica, r: redis.asyncio.Redis
) -> None:
    """Upserting the DO claim of a `what` removes other agents' stale fields for it (the DO
    takeover replaced them); a fresh one of another agent (a known conflict) is kept."""
    stale = {"what": "x", "by": "old", "since": iso_from_ms(NOW - 31 * 60_000), "stale": False}
    fresh = {"what": "x", "by": "rival", "since": iso_from_ms(NOW - 60_000), "stale": False}
    other = {"what": "y", "by": "old", "since": iso_from_ms(NOW - 31 * 60_000), "stale": False}
    for fld, value in (("old:x", stale), ("rival:x", fresh), ("old:y", other)):
        await r.hset(keys.CLAIMS, fld, json.dumps(value))
    entity = Claim("x", "phil", None, T)
    await replica.write_entity(key_of(entity), entity)
    assert sorted(await r.hkeys(keys.CLAIMS)) == ["old:y", "phil:x", "rival:x"]


async def test_dm_and_chat_replication_is_idempotent(
    store: LegacyStore, replica: LegacyReplica, r: redis.asyncio.Redis
) -> None:
    """A DM or chat message replicated twice appears once; a read flag is replicated with readAt."""
    dm = DirectMessage("msg-1", "a", "note", "hello", T, False)
    await replica.write_entity(key_of(dm, "b"), dm)
    await replica.write_entity(key_of(dm, "b"), dm)
    conv = json.loads(await r.hget(keys.DM_CONVOS, "dm-a-b") or "{}")
    assert conv["unreadCount"] == {"a": 0, "b": 1}
    await replica.write_entity(key_of(dm, "b"), DirectMessage("msg-1", "a", "note", "hello", T, True))
    msgs = json.loads(await r.hget(keys.DM_MESSAGES, "dm-a-b") or "[]")
    assert [(x["id"], x["read"], x.get("readAt")) for x in msgs] == [("msg-1", True, T)]
    assert json.loads(await r.hget(keys.DM_CONVOS, "dm-a-b") or "{}")["unreadCount"] == {"a": 0, "b": 0}
    msg = GroupMessage("1-abc", "a", "agent", "hi", T, [])
    await replica.write_entity(key_of(msg), msg)
    await replica.write_entity(key_of(msg), msg)
    assert await r.llen(keys.MESSAGES) == 1


# --- LegacyReplica: read_entity / write_entity by EntityKey --------------------------------------------


ENTITIES: list[tuple[EntityKey, Any]] = [
    (EntityKey("agent", "", "phil"), Agent("phil", "active", "t", None, T, ["py"], None, None)),
    (EntityKey("task", "", "task-9"),
     Task("task-9", "t", "d", "review", None, "c", "critical", [], [], T, T)),
    (EntityKey("zone", "", "web"), Zone("web", "web/", "phil", None, T)),
    (EntityKey("claim", "", "api/a.ts"), Claim("api/a.ts", "phil", "edit", T, stale=False)),
    (EntityKey("handoff", "", "h9"),
     Handoff("h9", "a", "b", "t", "", None, "f", [], "low", "claimed", "b", T, T, None)),
    (EntityKey("checkpoint", "phil", "phil"), Checkpoint("phil", "s", ["done"], [], None, [], T)),
    (EntityKey("lock", "", "src/a.ts"),
     Lock("src/a.ts", "branch", "phil", "r", T, iso_from_ms(NOW + 5), NOW + 5)),
    (EntityKey("chat", "", "1-x"), GroupMessage("1-x", "a", "agent", "hello", T, [])),
]  # fmt: skip


@pytest.mark.parametrize(("key", "entity"), ENTITIES, ids=[k.domain for k, _ in ENTITIES])
async def test_replica_writes_reads_and_deletes(
    store: LegacyStore, replica: LegacyReplica, key: EntityKey, entity: Any
) -> None:
    """An entity written by key reads back equal, a second write changes nothing, None removes it."""
    await replica.write_entity(key, entity)
    await replica.write_entity(key, entity)
    assert await replica.read_entity(key) == entity
    await replica.write_entity(key, None)
    assert await replica.read_entity(key) is None


async def test_replica_per_agent_entities(
    store: LegacyStore, replica: LegacyReplica, r: redis.asyncio.Redis
) -> None:
    """DMs are placed in the recipient's conversation and memories under their owner."""
    dm = DirectMessage("msg-9", "a", "status", "hi", T, False)
    await replica.write_entity(EntityKey("dm", "b", "msg-9"), dm)
    back = await replica.read_entity(EntityKey("dm", "b", "msg-9"))
    assert isinstance(back, DirectMessage)
    assert (back.id, back.type, back.read, back.extra["to"]) == ("msg-9", "status", False, "b")
    await replica.write_entity(EntityKey("dm", "b", "msg-9"), None)
    assert json.loads(await r.hget(keys.DM_MESSAGES, "dm-a-b") or "[]") == []
    mem = Memory("mem-9", "pattern", "c", ["X"], T)
    await replica.write_entity(EntityKey("memory", "phil", "mem-9"), mem)
    got = await replica.read_entity(EntityKey("memory", "phil", "mem-9"))
    assert isinstance(got, Memory)
    assert got.extra == {"createdBy": "phil"}
    await replica.write_entity(EntityKey("memory", "phil", "mem-9"), None)
    assert not await r.exists(keys.memory_tag("x"))


async def test_socket_presence_helpers(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """touch_agent marks active (and may move the mention cursor); set_agent_status sets offline."""
    await store.touch_agent("ws-agent", NOW, advance_cursor=True)
    value = json.loads(await r.hget(keys.ACTIVE_AGENTS, "ws-agent") or "{}")
    assert (value["status"], value["lastSeen"], value["lastChatCheck"]) == ("active", T, T)
    await store.set_agent_status("ws-agent", "offline", NOW + 1)
    assert json.loads(await r.hget(keys.ACTIVE_AGENTS, "ws-agent") or "{}")["status"] == "offline"
    assert await r.hget(keys.AGENT_PRESENCE, "ws-agent") == "offline"
    await store.set_agent_status("nobody", "idle", NOW)
    assert not await r.hexists(keys.ACTIVE_AGENTS, "nobody")
