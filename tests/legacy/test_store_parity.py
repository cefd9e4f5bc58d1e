"""LegacyStore and ActorStore give the same domain results (so the same JSON) for the same commands."""

# The operation table reads best with one operation per line, however long.
# ruff: noqa: E501

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import FakeClock
from gateway.do.actor_store import ActorStore, build_actor_host
from gateway.do.replica import ActorReplica
from gateway.domain import commands as c
from gateway.domain.entities import EntityKey
from gateway.domain.ids import IdGenerator
from gateway.domain.jscompat import iso_from_ms
from gateway.legacy.generator import BASE_MS
from gateway.legacy.replica import LegacyReplica
from gateway.legacy.store import LegacyStore
from gateway.settings import LimitSettings, Settings
from gateway.store import Store

pytestmark = pytest.mark.integration

NOW = BASE_MS
Op = Callable[[Store], Awaitable[Any]]


def ids() -> IdGenerator:
    return IdGenerator(random.Random(1))  # the same generated ids for both stores


def wire(value: Any) -> Any:
    """The JSON a handler would render from a store result (extra never rendered)."""
    if isinstance(value, list):
        return [wire(v) for v in value]
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "__dataclass_fields__"):
        return {k: wire(getattr(value, k)) for k in value.__dataclass_fields__ if k != "extra"}
    return value


OPS: list[tuple[str, Op]] = [
    ("register", lambda s: s.register_agent(
        c.RegisterAgent.parse({"agentId": "phil", "currentTask": "x", "capabilities": ["a"]}, NOW))),
    ("list agents", lambda s: s.list_agents(NOW, 100)),
    ("post chat", lambda s: s.post_chat(c.PostChat.parse({"author": "phil", "message": "hi @tyler"}, NOW, ids()))),
    ("post chat 2", lambda s: s.post_chat(c.PostChat.parse({"author": "tyler", "message": "yo"}, NOW + 1, ids()))),
    ("get chat", lambda s: s.get_chat(c.ChatQuery.parse({"limit": "1", "agentId": "tyler"}, NOW + 2, 50, 1000))),
    ("create task", lambda s: s.create_task(c.CreateTask.parse({"id": "t1", "title": "T", "assignee": "phil"}, NOW, ids()))),
    ("create task 2", lambda s: s.create_task(c.CreateTask.parse({"id": "t2", "title": "U"}, NOW + 1, ids()))),
    ("update task", lambda s: s.update_task(
        c.UpdateTask.parse({"id": "t2", "status": "in-progress", "assignee": "tyler"}, NOW + 3))),
    ("list tasks", lambda s: s.list_tasks(c.ListTasks.parse({}, 100))),
    ("work", lambda s: s.work_bundle(c.WorkQuery.parse({"agentId": "phil"}, NOW + 4, 1000))),
    ("claim zone", lambda s: s.claim_zone(c.ZoneClaim.parse({"zoneId": "z", "path": "web/", "owner": "phil"}, NOW))),
    ("find zone", lambda s: s.find_zone("web/a")),
    ("list zones", lambda s: s.list_zones(c.ZoneQuery.parse({}, 100))),
    ("claim", lambda s: s.claim(c.ClaimWork.parse({"what": "f", "by": "phil"}, NOW))),
    ("claim conflict", lambda s: s.claim(c.ClaimWork.parse({"what": "f", "by": "tyler"}, NOW))),
    ("list claims", lambda s: s.list_claims(c.ClaimQuery.parse({}, NOW, 100))),
    ("get claim", lambda s: s.get_claim("f", NOW + 31 * 60_000)),
    ("create handoff", lambda s: s.create_handoff(
        c.CreateHandoff.parse({"fromAgent": "a", "title": "t", "context": "c", "nextSteps": ["x"]}, NOW, ids()))),
    ("list handoffs", lambda s: s.list_handoffs(c.HandoffQuery.parse({"toAgent": "q"}, 100))),
    ("save checkpoint", lambda s: s.save_checkpoint(
        c.SaveCheckpoint.parse("phil", {"conversationSummary": "s", "accomplishments": ["a"]}, NOW))),
    ("save checkpoint 2", lambda s: s.save_checkpoint(c.SaveCheckpoint.parse("phil", {"filesEdited": ["f"]}, NOW + 1))),
    ("get checkpoint", lambda s: s.get_checkpoint("phil")),
    ("send dm", lambda s: s.send_dm(c.SendDm.parse("tyler", {"from": "phil", "message": "m"}, NOW, ids()))),
    ("list dms", lambda s: s.list_dms(c.ListDms.parse("tyler", {}, 100))),
    ("mark read", lambda s: s.mark_dms_read(c.MarkDmsRead.parse("tyler", {"messageIds": [ids().dm(NOW)]}, NOW + 7))),
    ("list dms after read", lambda s: s.list_dms(c.ListDms.parse("tyler", {}, 100))),
    ("state before read", lambda s: s.agent_state("tyler")),
    ("add memory", lambda s: s.add_memory(
        c.AddMemory.parse("phil", {"content": "Redis stuff", "tags": ["x"]}, NOW, ids()))),
    ("search memory", lambda s: s.search_memory(c.MemoryQuery.parse("phil", {"query": "redis"}, 50))),
    ("lock", lambda s: s.acquire_lock(c.AcquireLock.parse(
        "p", {"agentId": "phil", "ttlMs": 60_000}, NOW, ids(), ttl_min_ms=1, ttl_max_ms=10**8, ttl_default_ms=10**6))),
    ("check", lambda s: s.check_lock("p", NOW + 10)),
    ("lock conflict", lambda s: s.acquire_lock(c.AcquireLock.parse(
        "p", {"agentId": "tyler"}, NOW + 10, ids(), ttl_min_ms=1, ttl_max_ms=10**8, ttl_default_ms=10**6))),
    ("unlock not owner", lambda s: s.release_lock(c.ReleaseLock.parse("p", {"agentId": "tyler"}, NOW + 20))),
    ("unlock", lambda s: s.release_lock(c.ReleaseLock.parse("p", {"agentId": "phil"}, NOW + 20))),
    ("check expired", lambda s: s.check_lock("p", NOW + 30)),
]  # fmt: skip


@pytest.fixture
async def stores(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    host = build_actor_host(tmp_path, LimitSettings(), clock=FakeClock(NOW))
    await host.start()
    legacy = LegacyStore.from_url(redis_url, Settings(), clock=FakeClock(NOW))
    yield ActorStore(host), legacy
    await legacy.close()
    await host.close()


async def test_both_stores_answer_alike(stores: tuple[Store, Store]) -> None:
    """A sequence over every endpoint family gives equal results from the actors and from Redis."""
    actors, legacy = stores
    for name, op in OPS:
        assert wire(await op(legacy)) == wire(await op(actors)), name


async def test_both_stores_record_the_same_read_at(stores: tuple[Store, Store]) -> None:
    """Marking a DM read records the command's time as `readAt` in both stores, whatever their clocks."""
    actors, legacy = stores
    assert isinstance(actors, ActorStore)
    assert isinstance(legacy, LegacyStore)
    send = c.SendDm.parse("tyler", {"from": "phil", "message": "m"}, NOW, ids())
    mark = c.MarkDmsRead.parse("tyler", {"messageIds": [send.id]}, NOW + 7)
    for store in stores:
        await store.send_dm(send)
        await store.mark_dms_read(mark)
        await store.mark_dms_read(c.MarkDmsRead.parse("tyler", {"messageIds": [send.id]}, NOW + 9))
    key = EntityKey("dm", "tyler", send.id)
    on_actors = await ActorReplica(actors.host).read_entity(key)
    on_redis = await LegacyReplica(legacy.records, legacy.clock).read_entity(key)
    assert on_actors is not None
    assert on_redis is not None
    assert on_actors.extra["readAt"] == on_redis.extra["readAt"] == iso_from_ms(NOW + 7)
