"""gateway.legacy.store.LegacyStore: every DO operation on the legacy Redis layout (real redis-server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio

from gateway.clock import FakeClock
from gateway.domain import commands as c
from gateway.domain.ids import IdGenerator
from gateway.domain.jscompat import iso_from_ms
from gateway.errors import ApiError, StoreUnavailable
from gateway.legacy import keys
from gateway.legacy.generator import BASE_MS, generate
from gateway.legacy.mapping import conversation_id
from gateway.legacy.records import DecodedValues
from gateway.legacy.store import LegacyStore
from gateway.settings import LegacySettings, LimitSettings, Settings
from gateway.store import Store
from gateway.testing import RedisServer

pytestmark = pytest.mark.integration

NOW = BASE_MS
MIN = 60_000
LIMITS = LimitSettings()
SETTINGS = Settings(legacy=LegacySettings(pool_size=64, timeout_s=0.5, retries=2))
ids = IdGenerator()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[LegacyStore]:
    s = LegacyStore.from_url(redis_url, SETTINGS, clock=FakeClock(NOW))
    yield s
    await s.close()


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def hjson(r: redis.asyncio.Redis, key: str, field: str) -> Any:
    raw = await r.hget(key, field)
    assert raw is not None
    return json.loads(raw)


def test_legacy_store_satisfies_the_store_protocol() -> None:
    """LegacyStore is a `Store` (checked by mypy through this assignment)."""
    store: Store = LegacyStore.from_url("redis://127.0.0.1:1/0", SETTINGS)
    assert store is not None


# --- agents ----------------------------------------------------------------------------------------


async def test_register_writes_the_post_shape_and_presence(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """A new agent is written in the legacy 7-field shape (+ carried arrays), presence online."""
    await store.register_agent(
        c.RegisterAgent.parse({"agentId": "phil", "currentTask": "fix", "capabilities": ["py"]}, NOW)
    )
    value = await hjson(r, keys.ACTIVE_AGENTS, "phil")
    assert list(value)[:7] == ["id", "name", "status", "currentTask", "workingOn", "role", "lastSeen"]
    assert value["capabilities"] == ["py"]
    assert value["lastSeen"] == iso_from_ms(NOW)
    assert await r.hget(keys.AGENT_PRESENCE, "phil") == "online"
    [agent] = await store.list_agents(NOW, 100)
    assert (agent.agent_id, agent.current_task, agent.working_on, agent.capabilities) == (
        "phil",
        "fix",
        None,
        ["py"],
    )


async def test_register_merges_onto_rich_records(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Fields of other legacy writers (metrics, memory, version) survive a DO registration."""
    rich = {"id": "r", "name": "r", "version": 3, "status": "inactive", "metrics": {"tasksCompleted": 2}}
    await r.hset(keys.ACTIVE_AGENTS, "r", json.dumps(rich))
    await store.register_agent(c.RegisterAgent.parse({"agentId": "r", "status": "busy"}, NOW))
    value = await hjson(r, keys.ACTIVE_AGENTS, "r")
    assert value["metrics"] == {"tasksCompleted": 2}
    assert value["version"] == 3
    assert value["status"] == "busy"


async def test_listing_follows_do_rules_and_keeps_unlisted_records(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """Offline, silent (> 30 min) and lastSeen-less agents are not listed, and not deleted."""
    agents = {
        "fresh": {"id": "fresh", "status": "idle", "lastSeen": iso_from_ms(NOW - MIN)},
        "newer": {"id": "newer", "status": "restored", "lastSeen": iso_from_ms(NOW - 1000)},
        "off": {"id": "off", "status": "offline", "lastSeen": iso_from_ms(NOW)},
        "silent": {"id": "silent", "status": "active", "lastSeen": iso_from_ms(NOW - 31 * MIN)},
        "spawned": {"id": "spawned", "status": "queued", "createdAt": iso_from_ms(NOW)},
    }
    await r.hset(keys.ACTIVE_AGENTS, mapping={k: json.dumps(v) for k, v in agents.items()})
    listed = await store.list_agents(NOW, 100)
    assert [a.agent_id for a in listed] == ["newer", "fresh"]
    assert await r.hlen(keys.ACTIVE_AGENTS) == 5


# --- chat ------------------------------------------------------------------------------------------


async def test_chat_is_lpushed_and_trimmed_to_1000(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Posts go to the head (newest first) and the list is trimmed to 1000 after each post."""
    await r.rpush(keys.MESSAGES, *[json.dumps({"id": f"old{i}", "author": "a", "authorType": "agent",
                                               "message": "m", "timestamp": iso_from_ms(NOW - 10**6 + i),
                                               "reactions": []}) for i in range(1005)])  # fmt: skip
    msg = await store.post_chat(c.PostChat.parse({"author": "phil", "message": "hi 👋"}, NOW, ids))
    assert await r.llen(keys.MESSAGES) == keys.CHAT_MAX
    head = await r.lindex(keys.MESSAGES, 0)
    assert head == json.dumps(
        {"id": msg.id, "author": "phil", "authorType": "agent", "message": "hi 👋",
         "timestamp": iso_from_ms(NOW), "reactions": []}, separators=(",", ":"), ensure_ascii=False,
    )  # fmt: skip


async def test_get_chat_returns_the_newest_n_in_chronological_order(store: LegacyStore) -> None:
    """`limit` gives the newest N, oldest of them first; `since` filters strictly after it."""
    for i in range(5):
        await store.post_chat(c.PostChat.parse({"author": "a", "message": f"m{i}"}, NOW + i, ids))
    page = await store.get_chat(c.ChatQuery.parse({"limit": "3"}, NOW + 10, 50, 1000))
    assert [msg.message for msg in page.messages] == ["m2", "m3", "m4"]
    since = await store.get_chat(c.ChatQuery.parse({"since": iso_from_ms(NOW + 3)}, NOW + 10, 50, 1000))
    assert [msg.message for msg in since.messages] == ["m4"]
    bad = await store.get_chat(c.ChatQuery.parse({"since": "nope"}, NOW + 10, 50, 1000))
    assert bad.messages == []


async def test_chat_pages_and_work_answer_the_bytes_of_their_plain_rendering(store: LegacyStore) -> None:
    """A chat page and /work's recent chat, whose messages are rendered once and kept, answer the
    same bytes as rendered afresh, also after a post moved the window."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann"}, NOW))
    for i in range(4):
        await store.post_chat(c.PostChat.parse({"author": "bob", "message": f"@ann m{i} ✓"}, NOW + i, ids))
    for step in range(3):
        page = await store.get_chat(c.ChatQuery.parse({"limit": "3"}, NOW + 10, 50, 1000))
        assert page.answer() == orjson.dumps(page.to_json())
        work = await store.work_bundle(c.WorkQuery.parse({"agentId": "ann"}, NOW + 10, 1000))
        assert orjson.dumps(work.wire()) == orjson.dumps(work.to_json())
        assert len(work.recent_chat) == 4 + step
        await store.post_chat(c.PostChat.parse({"author": "cy", "message": f"n{step}"}, NOW + 20 + step, ids))


async def test_image_only_and_corrupt_chat_messages_do_not_break_reads(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """An image-only message reads as empty text; a corrupt element is skipped and kept."""
    await r.lpush(keys.MESSAGES, "{broken")
    img = {"id": "x", "author": "t", "authorType": "human", "timestamp": iso_from_ms(NOW), "reactions": [],
           "imageData": "data:image/png;base64,AA", "imageName": "image"}  # fmt: skip
    await r.lpush(keys.MESSAGES, json.dumps(img))
    page = await store.get_chat(c.ChatQuery.parse({}, NOW, 50, 1000))
    assert [(msg.id, msg.message) for msg in page.messages] == [("x", "")]
    assert await r.llen(keys.MESSAGES) == 2
    assert store.corruption.counts[keys.MESSAGES] == 1


@pytest.mark.parametrize("corrupt", [3, 150])
async def test_corrupt_chat_elements_do_not_use_up_the_limit(
    store: LegacyStore, r: redis.asyncio.Redis, corrupt: int
) -> None:
    """Issue 15, finding 7: `limit=3` over three (or 150) corrupt newest elements answered with
    fewer messages than there are. Corrupt elements are skipped and do not count: the limit is
    filled from the readable ones behind them, in /chat, /work and the mention cursor's head."""
    for i in range(5):
        await store.post_chat(c.PostChat.parse({"author": "a", "message": f"m{i}"}, NOW + i, ids))
    await r.lpush(keys.MESSAGES, *[f"{{corrupt {n}" for n in range(corrupt)])
    page = await store.get_chat(c.ChatQuery.parse({"limit": "3"}, NOW + 10, 50, 1000))
    assert [msg.message for msg in page.messages] == ["m2", "m3", "m4"]
    work = await store.work_bundle(c.WorkQuery.parse({"agentId": "phil"}, NOW + 10, 50))
    assert [msg.message for msg in work.recent_chat] == [f"m{i}" for i in range(5)]
    assert await r.llen(keys.MESSAGES) == 5 + corrupt  # nothing deleted


async def test_mentions_use_a_cursor_kept_on_the_agent(store: LegacyStore) -> None:
    """Mentions after a registered agent's last check are pending once, then consumed by the read;
    reading chat does not register an unknown agent (as the actor store)."""
    await store.post_chat(c.PostChat.parse({"author": "a", "message": "@phil look"}, NOW, ids))
    unknown = await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW + 1, 50, 1000))
    assert [msg.message for msg in unknown.pending_mentions] == ["@phil look"]
    assert await store.list_agents(NOW + 1, 10) == []
    await store.register_agent(c.RegisterAgent.parse({"agentId": "phil", "status": "idle"}, NOW + 1))
    first = await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW + 2, 50, 1000))
    assert [msg.message for msg in first.pending_mentions] == ["@phil look"]
    again = await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW + 3, 50, 1000))
    assert again.pending_mentions == []
    [agent] = await store.list_agents(NOW + 3, 10)
    assert (agent.agent_id, agent.status) == ("phil", "active")


async def test_the_mention_cursor_is_the_last_message_seen(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """The cursor is the newest message id read (a same-millisecond message after a check is still
    pending); once that message is trimmed away every message left is newer; a cursor with only
    the time `lastChatCheck` (written before the id existed) still works by time."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "phil"}, NOW))
    await store.post_chat(c.PostChat.parse({"author": "a", "message": "@phil one"}, NOW, ids))
    await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW, 50, 1000))
    agent = await hjson(r, keys.ACTIVE_AGENTS, "phil")
    head = json.loads(str(await r.lindex(keys.MESSAGES, 0)))["id"]
    assert (agent["lastChatCheck"], agent["lastChatCheckId"]) == (iso_from_ms(NOW), head)
    await store.post_chat(c.PostChat.parse({"author": "a", "message": "@phil two"}, NOW, ids))
    page = await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW, 50, 1000))
    assert [msg.message for msg in page.pending_mentions] == ["@phil two"]
    await store.post_chat(c.PostChat.parse({"author": "a", "message": "@phil three"}, NOW + 1, ids))
    await r.rpop(keys.MESSAGES, 2)  # trimmed: the cursor's message is gone
    page = await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW + 2, 50, 1000))
    assert [msg.message for msg in page.pending_mentions] == ["@phil three"]
    del agent["lastChatCheckId"]
    await r.hset(keys.ACTIVE_AGENTS, "phil", json.dumps({**agent, "lastChatCheck": iso_from_ms(NOW)}))
    page = await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW + 3, 50, 1000))
    assert [msg.message for msg in page.pending_mentions] == ["@phil three"]


# --- tasks and the work bundle -----------------------------------------------------------------------


async def test_tasks_create_update_list(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Create (409 on a duplicate id), update (404 when missing), list with filters newest first."""
    t1 = await store.create_task(
        c.CreateTask.parse({"id": "t1", "title": "one", "files": ["a.py"]}, NOW, ids)
    )
    await store.create_task(
        c.CreateTask.parse({"id": "t2", "title": "two", "assignee": "phil"}, NOW + 1, ids)
    )
    with pytest.raises(ApiError) as dup:
        await store.create_task(c.CreateTask.parse({"id": "t1", "title": "x"}, NOW, ids))
    assert dup.value.status == 409
    value = await hjson(r, keys.TASKS, "t1")
    assert value["assignee"] == ""  # the legacy create default for unassigned
    assert value["files"] == ["a.py"]
    updated = await store.update_task(c.UpdateTask.parse({"id": "t1", "status": "done"}, NOW + 5))
    assert updated.status == "done"
    assert (await hjson(r, keys.TASKS, "t1"))["completedAt"] == iso_from_ms(NOW + 5)
    with pytest.raises(ApiError) as missing:
        await store.update_task(c.UpdateTask.parse({"id": "nope", "status": "done"}, NOW))
    assert missing.value.status == 404
    listed = await store.list_tasks(c.ListTasks.parse({}, 100))
    assert [t.id for t in listed] == ["t2", "t1"]
    assert [t.id for t in await store.list_tasks(c.ListTasks.parse({"assignee": "phil"}, 100))] == ["t2"]
    assert t1.files == ["a.py"]


async def test_updating_a_legacy_task_keeps_its_other_fields(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """A null assignee, a `critical` priority and legacy-only fields survive a DO update."""
    legacy: dict[str, Any] = {
        "id": "task-x", "title": "t", "status": "todo", "priority": "critical", "assignee": None,
        "createdBy": "tyler", "createdAt": iso_from_ms(NOW), "updatedAt": iso_from_ms(NOW), "tags": [],
        "blockedReason": "waiting",
    }  # fmt: skip
    await r.hset(keys.TASKS, "task-x", json.dumps(legacy))
    await store.update_task(c.UpdateTask.parse({"id": "task-x", "title": "renamed"}, NOW + 1))
    value = await hjson(r, keys.TASKS, "task-x")
    assert value == legacy | {"title": "renamed", "updatedAt": iso_from_ms(NOW + 1)}


async def test_work_bundle(store: LegacyStore) -> None:
    """/work: team, todo, mine, the last messages; the caller is marked active."""
    await store.create_task(c.CreateTask.parse({"id": "a", "title": "a"}, NOW, ids))
    await store.create_task(c.CreateTask.parse({"id": "b", "title": "b", "assignee": "phil",
                                                "status": "in-progress"}, NOW + 1, ids))  # fmt: skip
    await store.post_chat(c.PostChat.parse({"author": "x", "message": "hello"}, NOW, ids))
    bundle = await store.work_bundle(c.WorkQuery.parse({"agentId": "phil"}, NOW + 2, 1000))
    data = bundle.to_json()
    assert data["summary"] == {"activeAgents": 1, "todoTasks": 1, "inProgressTasks": 1, "pendingMentions": 0}
    assert [m["message"] for m in data["recentChat"]] == ["hello"]


@pytest.mark.parametrize("encoding", ["plain", "double-encoded"])
async def test_work_finds_mentions_far_down_the_chat_up_to_the_cursor(
    store: LegacyStore, r: redis.asyncio.Redis, encoding: str
) -> None:
    """/work reads only the newest messages whole and, further down, those that can be mentions
    or the cursor: a mention 90 messages down is found, one behind a cursor message without an
    '@' is not, whatever shape the agent's value has in Redis."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "phil"}, NOW))
    await store.post_chat(c.PostChat.parse({"author": "a", "message": "@phil old"}, NOW, ids))
    for i in range(10):
        await store.post_chat(c.PostChat.parse({"author": "a", "message": f"before {i}"}, NOW, ids))
    await store.get_chat(c.ChatQuery.parse({"agentId": "phil"}, NOW + 1, 50, 1000))  # the cursor
    for i in range(100):
        text = "@phil new" if i == 10 else f"after {i}"
        await store.post_chat(c.PostChat.parse({"author": "a", "message": text}, NOW + 2, ids))
    if encoding == "double-encoded":
        agent = await r.hget(keys.ACTIVE_AGENTS, "phil")
        await r.hset(keys.ACTIVE_AGENTS, "phil", json.dumps(agent))
    work = await store.work_bundle(c.WorkQuery.parse({"agentId": "phil"}, NOW + 3, 50))
    assert [msg.message for msg in work.pending_mentions] == ["@phil new"]
    assert [msg.message for msg in work.recent_chat] == [f"after {i}" for i in range(80, 100)]


# --- zones, claims, handoffs -------------------------------------------------------------------------


async def test_zones(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Claim (legacy createdAt), find by prefix, list by owner, release only by the owner."""
    await store.claim_zone(c.ZoneClaim.parse({"zoneId": "web", "path": "web/", "owner": "phil"}, NOW))
    assert (await hjson(r, keys.ZONES, "web"))["createdAt"] == iso_from_ms(NOW)
    found = await store.find_zone("web/index.ts")
    assert found is not None
    assert found.zone_id == "web"
    assert await store.find_zone("api/x") is None
    assert [z.zone_id for z in await store.list_zones(c.ZoneQuery.parse({"owner": "phil"}, 10))] == ["web"]
    assert not await store.release_zone(c.ReleaseZone.parse({"zoneId": "web", "owner": "tyler"}))
    assert await store.release_zone(c.ReleaseZone.parse({"zoneId": "web", "owner": "phil"}))
    assert not await r.hexists(keys.ZONES, "web")


async def test_claims_conflicts_staleness_and_several_per_what(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """A fresh claim blocks others; a stale one is taken over (its field removed, as the DO
    replaces its row); several legacy fields for one `what` read as one DO claim, untouched."""
    ok = await store.claim(c.ClaimWork.parse({"what": "api/dm.ts", "by": "phil"}, NOW))
    assert not ok.conflict
    assert await r.hexists(keys.CLAIMS, "phil:api/dm.ts")
    blocked = await store.claim(c.ClaimWork.parse({"what": "api/dm.ts", "by": "tyler"}, NOW + MIN))
    assert blocked.conflict
    assert blocked.claim.by == "phil"
    taken = await store.claim(c.ClaimWork.parse({"what": "api/dm.ts", "by": "tyler"}, NOW + 31 * MIN))
    assert not taken.conflict
    assert await r.hkeys(keys.CLAIMS) == ["tyler:api/dm.ts"]  # the superseded stale field is gone
    assert not await store.release_claim(c.ReleaseClaim.parse({"what": "api/dm.ts", "by": "phil"}))
    # the legacy API can leave several fields for one `what` (an old stale one not yet cleaned up)
    old = {"what": "api/dm.ts", "by": "ana", "since": iso_from_ms(NOW - 60 * MIN), "stale": False}
    await r.hset(keys.CLAIMS, "ana:api/dm.ts", json.dumps(old))
    claim = await store.get_claim("api/dm.ts", NOW + 31 * MIN)
    assert claim is not None
    assert claim.by == "tyler"
    listed = await store.list_claims(c.ClaimQuery.parse({}, NOW + 31 * MIN, 100))
    assert [(cl.what, cl.by) for cl in listed] == [("api/dm.ts", "tyler")]
    assert await r.hlen(keys.CLAIMS) == 2  # reads leave the known conflict in place
    assert await store.release_claim(c.ReleaseClaim.parse({"what": "api/dm.ts", "by": "tyler"}))
    assert not await store.release_claim(c.ReleaseClaim.parse({"what": "api/dm.ts", "by": "tyler"}))


async def test_concurrent_claims_have_one_winner(store: LegacyStore) -> None:
    """Twenty agents claiming one `what` at once: exactly one gets it."""
    outcomes = await asyncio.gather(
        *(store.claim(c.ClaimWork.parse({"what": "hot.ts", "by": f"a{i}"}, NOW)) for i in range(20))
    )
    assert sum(not o.conflict for o in outcomes) == 1


async def test_handoffs(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Create (legacy `submitted`), targeted claim refused, claim then complete (`integrated`)."""
    h = await store.create_handoff(
        c.CreateHandoff.parse({"fromAgent": "a", "toAgent": "b", "title": "t", "context": "ctx"}, NOW, ids)
    )
    assert (await hjson(r, keys.HANDOFFS, h.id))["status"] == "submitted"
    refused = await store.claim_handoff(c.ClaimHandoff.parse({"handoffId": h.id, "agentId": "c"}, NOW))
    assert refused.error == "Handoff is targeted to b"
    claimed = await store.claim_handoff(c.ClaimHandoff.parse({"handoffId": h.id, "agentId": "b"}, NOW + 1))
    assert claimed.handoff is not None
    assert claimed.handoff.status == "claimed"
    again = await store.claim_handoff(c.ClaimHandoff.parse({"handoffId": h.id, "agentId": "b"}, NOW + 2))
    assert again.error == "Handoff already claimed"
    wrong = await store.complete_handoff(c.CompleteHandoff.parse({"handoffId": h.id, "agentId": "x"}, NOW))
    assert wrong.error == "Handoff is claimed by b"
    done = await store.complete_handoff(c.CompleteHandoff.parse({"handoffId": h.id, "agentId": "b"}, NOW + 3))
    assert done.handoff is not None
    value = await hjson(r, keys.HANDOFFS, h.id)
    assert (value["status"], value["completedAt"], value["updatedAt"]) == (
        "integrated",
        *[iso_from_ms(NOW + 3)] * 2,
    )
    missing = await store.claim_handoff(c.ClaimHandoff.parse({"handoffId": "nope", "agentId": "b"}, NOW))
    assert missing.error == "Handoff not found"


async def test_legacy_open_handoffs_match_every_to_agent_filter(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """Legacy `toAgent: "any"` is an open handoff: listed for any toAgent, claimable by anyone."""
    await r.hset(keys.HANDOFFS, "ho-1", json.dumps({"id": "ho-1", "fromAgent": "a", "toAgent": "any",
                 "status": "submitted", "title": "t", "priority": "medium", "createdAt": iso_from_ms(NOW),
                 "updatedAt": iso_from_ms(NOW)}))  # fmt: skip
    listed = await store.list_handoffs(c.HandoffQuery.parse({"toAgent": "zed", "status": "pending"}, 10))
    assert [h.id for h in listed] == ["ho-1"]
    outcome = await store.claim_handoff(c.ClaimHandoff.parse({"handoffId": "ho-1", "agentId": "zed"}, NOW))
    assert outcome.handoff is not None
    value = await hjson(r, keys.HANDOFFS, "ho-1")
    assert (value["toAgent"], value["status"], "context" in value) == ("any", "claimed", False)


# --- agent: checkpoints, DMs, memory -----------------------------------------------------------------


async def test_checkpoints(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Save keeps the summary when not given, carries legacy currentTask, never decodes recentContext."""
    legacy = {"agentId": "phil", "conversationSummary": "s", "currentTask": "task-1",
              "recentContext": '{"version":2}', "checkpointAt": iso_from_ms(NOW)}  # fmt: skip
    await r.hset(keys.CHECKPOINTS, "phil", json.dumps(legacy))
    cp = await store.get_checkpoint("phil")
    assert cp is not None
    assert cp.recent_context == '{"version":2}'
    await store.save_checkpoint(c.SaveCheckpoint.parse("phil", {"accomplishments": ["x"]}, NOW + 1))
    value = await hjson(r, keys.CHECKPOINTS, "phil")
    assert value == {"agentId": "phil", "conversationSummary": "s", "currentTask": "task-1",
                     "recentContext": '{"version":2}', "checkpointAt": iso_from_ms(NOW + 1),
                     "accomplishments": ["x"]}  # fmt: skip
    assert await store.get_checkpoint("nobody") is None


async def test_dms_conversations_read_markers_and_unread_counts(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """A DM lands in a conversation; the inbox lists it; mark-read sets readAt and recounts."""
    dm = await store.send_dm(c.SendDm.parse("tyler", {"from": "claude-code", "message": "hi"}, NOW, ids))
    await store.send_dm(c.SendDm.parse("claude-code", {"from": "tyler", "message": "yo"}, NOW + 1, ids))
    conv = await hjson(r, keys.DM_CONVOS, "dm-claude-code-tyler")
    assert conv["participants"] == ["claude-code", "tyler"]
    assert conv["unreadCount"] == {"claude-code": 1, "tyler": 1}
    assert conv["lastMessage"] == {"preview": "yo", "timestamp": iso_from_ms(NOW + 1), "from": "tyler"}
    assert await hjson(r, keys.DM_USER_CONVOS, "tyler") == ["dm-claude-code-tyler"]
    inbox = await store.list_dms(c.ListDms.parse("tyler", {}, 100))
    assert [(d.id, d.from_agent, d.read) for d in inbox] == [(dm.id, "claude-code", False)]
    await store.mark_dms_read(c.MarkDmsRead.parse("tyler", {"messageIds": [dm.id, "unknown"]}, NOW + 5))
    msgs = await hjson(r, keys.DM_MESSAGES, "dm-claude-code-tyler")
    assert msgs[0]["read"] is True
    assert msgs[0]["readAt"] == iso_from_ms(NOW + 5)  # the command's time, not the store's clock
    await store.mark_dms_read(c.MarkDmsRead.parse("tyler", {"messageIds": [dm.id]}, NOW + 9))
    assert (await hjson(r, keys.DM_MESSAGES, "dm-claude-code-tyler"))[0]["readAt"] == iso_from_ms(NOW + 5)
    assert (await hjson(r, keys.DM_CONVOS, "dm-claude-code-tyler"))["unreadCount"] == {
        "claude-code": 1,
        "tyler": 0,
    }
    assert await store.list_dms(c.ListDms.parse("tyler", {"unread": "true"}, 100)) == []
    state = await store.agent_state("claude-code")
    assert [d.message for d in state.unread_messages] == ["yo"]


async def test_dm_arrays_are_capped_at_500(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """A conversation keeps its last 500 messages."""
    old = [{"id": f"dm-{i}", "conversationId": "dm-a-b", "from": "a", "fromType": "agent", "to": "b",
            "toType": "agent", "message": str(i), "timestamp": iso_from_ms(NOW - 10**6 + i), "read": True}
           for i in range(keys.DM_MAX)]  # fmt: skip
    await r.hset(keys.DM_MESSAGES, "dm-a-b", json.dumps(old))
    await store.send_dm(c.SendDm.parse("b", {"from": "a", "message": "new"}, NOW, ids))
    msgs = await hjson(r, keys.DM_MESSAGES, "dm-a-b")
    assert len(msgs) == keys.DM_MAX
    assert (msgs[0]["id"], msgs[-1]["message"]) == ("dm-1", "new")


async def test_memory_add_search_and_tag_index(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Memories are team-wide with createdBy; search is per agent, by category and LIKE query."""
    mem = await store.add_memory(
        c.AddMemory.parse(
            "phil", {"category": "warning", "content": "Upstash auto-parses", "tags": ["Redis"]}, NOW, ids
        )
    )
    await store.add_memory(c.AddMemory.parse("tyler", {"content": "other agent"}, NOW + 1, ids))
    value = await hjson(r, keys.SHARED_MEMORY, mem.id)
    assert (value["createdBy"], value["references"]) == ("phil", 0)
    assert await r.smembers(keys.memory_tag("redis")) == {mem.id}
    assert [
        x.id for x in await store.search_memory(c.MemoryQuery.parse("phil", {"query": "UPSTASH"}, 50))
    ] == [mem.id]
    assert [x.id for x in await store.search_memory(c.MemoryQuery.parse("phil", {"query": "redi"}, 50))] == [
        mem.id
    ]
    assert await store.search_memory(c.MemoryQuery.parse("phil", {"category": "learning"}, 50)) == []
    assert len((await store.agent_state("tyler")).recent_memories) == 1


# --- locks ---------------------------------------------------------------------------------------------


def acquire(path: str, agent: str, now: int, **body: Any) -> c.AcquireLock:
    return c.AcquireLock.parse(path, {"agentId": agent, **body}, now, ids, ttl_min_ms=1,
                               ttl_max_ms=86_400_000, ttl_default_ms=7_200_000)  # fmt: skip


async def test_lock_check_acquire_refresh_release(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Acquire writes expiresAt inside the value (no TTL); the holder refreshes; others get 409."""
    got = await store.acquire_lock(acquire("api/dm.ts", "phil", NOW, ttlMs=600_000, reason="fix"))
    assert got.acquired
    value = await hjson(r, keys.LOCKS, "api/dm.ts")
    assert value == {"resourcePath": "api/dm.ts", "lockedBy": "phil", "reason": "fix",
                     "lockedAt": iso_from_ms(NOW), "expiresAt": iso_from_ms(NOW + 600_000)}  # fmt: skip
    assert await r.ttl(keys.LOCKS) == -1
    check = await store.check_lock("api/dm.ts", NOW + 1000)
    assert check.to_json()["lock"]["remainingMs"] == 599_000
    other = await store.acquire_lock(acquire("api/dm.ts", "tyler", NOW + 1000))
    assert not other.acquired
    again = await store.acquire_lock(acquire("api/dm.ts", "phil", NOW + 2000, ttlMs=600_000))
    assert again.lock.locked_at == iso_from_ms(NOW)
    assert again.lock.expires_ms == NOW + 602_000
    assert again.lock.reason == "fix"
    denied = await store.release_lock(c.ReleaseLock.parse("api/dm.ts", {"agentId": "tyler"}, NOW))
    assert denied.outcome == "not_owner"
    released = await store.release_lock(c.ReleaseLock.parse("api/dm.ts", {"agentId": "phil"}, NOW))
    assert released.outcome == "released"
    assert not await r.hexists(keys.LOCKS, "api/dm.ts")
    assert (
        await store.release_lock(c.ReleaseLock.parse("api/dm.ts", {"agentId": "x"}, NOW))
    ).outcome == "none"
    history = await store.lock_history("api/dm.ts", 50)
    assert history.history == []


async def test_expired_locks(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """An expired legacy lock is taken over by acquire and removed by check (with the note)."""
    expired = {"resourcePath": "a", "lockedBy": "old", "lockedAt": iso_from_ms(NOW - 20 * MIN),
               "expiresAt": iso_from_ms(NOW - 10 * MIN)}  # fmt: skip
    await r.hset(
        keys.LOCKS, mapping={"a": json.dumps(expired), "b": json.dumps(expired | {"resourcePath": "b"})}
    )
    check = await store.check_lock("a", NOW)
    assert check.to_json() == {"locked": False, "resourcePath": "a", "note": "Previous lock expired"}
    assert not await r.hexists(keys.LOCKS, "a")
    got = await store.acquire_lock(acquire("b", "new", NOW))
    assert got.acquired
    assert got.expired_previous is not None
    assert got.expired_previous.locked_by == "old"


async def test_fifty_concurrent_acquires_have_exactly_one_winner(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """50 agents acquire one path at once: one wins, 49 see the winner's lock."""
    outcomes = await asyncio.gather(*(store.acquire_lock(acquire("hot.ts", f"a{i}", NOW)) for i in range(50)))
    winners = [o for o in outcomes if o.acquired]
    assert len(winners) == 1
    assert all(o.lock.locked_by == winners[0].lock.locked_by for o in outcomes)
    assert (await hjson(r, keys.LOCKS, "hot.ts"))["lockedBy"] == winners[0].lock.locked_by


async def test_acquire_races_the_legacy_hsetnx_sequence(store: LegacyStore, r: redis.asyncio.Redis) -> None:
    """Interleaved with the legacy API's HGET/HSETNX on the same path, exactly one side wins."""

    async def legacy_acquire(agent: str) -> bool:
        current = await r.hget(keys.LOCKS, "race.ts")
        if current is not None:
            return False
        value = {"resourcePath": "race.ts", "lockedBy": agent, "lockedAt": iso_from_ms(NOW),
                 "expiresAt": iso_from_ms(NOW + 10 * MIN)}  # fmt: skip
        return bool(await r.hsetnx(keys.LOCKS, "race.ts", json.dumps(value)))

    for round_ in range(20):
        await r.delete(keys.LOCKS)
        results = await asyncio.gather(
            legacy_acquire(f"legacy{round_}"),
            store.acquire_lock(acquire("race.ts", f"gw{round_}", NOW)),
            legacy_acquire(f"legacy2-{round_}"),
        )
        legacy_wins = sum(1 for x in (results[0], results[2]) if x)
        gateway_won = results[1].acquired
        assert legacy_wins + int(gateway_won) == 1
        holder = (await hjson(r, keys.LOCKS, "race.ts"))["lockedBy"]
        assert (holder == f"gw{round_}") == gateway_won


async def test_acquire_decides_on_what_another_client_wrote_after_the_gateway_read(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """The gateway saw a path free, then another client locked it: the acquire is refused with
    that client's lock. The gateway saw it held, then another client removed it: the acquire
    wins (a refusal is never answered from what the gateway saw before). A value another
    client made unreadable is the 409, and stays."""
    assert (await store.check_lock("p.ts", NOW)).lock is None
    theirs = {"resourcePath": "p.ts", "lockedBy": "legacy", "lockedAt": iso_from_ms(NOW),
              "expiresAt": iso_from_ms(NOW + 10 * MIN)}  # fmt: skip
    await r.hset(keys.LOCKS, "p.ts", json.dumps(theirs))
    refused = await store.acquire_lock(acquire("p.ts", "phil", NOW + 1))
    assert not refused.acquired
    assert refused.lock.locked_by == "legacy"
    assert (await hjson(r, keys.LOCKS, "p.ts"))["lockedBy"] == "legacy"

    await r.hdel(keys.LOCKS, "p.ts")
    won = await store.acquire_lock(acquire("p.ts", "phil", NOW + 2))
    assert won.acquired
    assert (await hjson(r, keys.LOCKS, "p.ts"))["lockedBy"] == "phil"

    await r.hset(keys.LOCKS, "p.ts", "{nope")
    with pytest.raises(ApiError) as info:
        await store.acquire_lock(acquire("p.ts", "phil", NOW + 3))
    assert info.value.status == 409
    assert await r.hget(keys.LOCKS, "p.ts") == "{nope"


async def test_a_check_removes_only_the_expired_lock_it_saw(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """The gateway saw an expired lock; another client then took the path: the check answers the
    new lock and leaves it. Removing an expired lock still answers the note."""
    old = {"resourcePath": "q.ts", "lockedBy": "old", "lockedAt": iso_from_ms(NOW - 20 * MIN),
           "expiresAt": iso_from_ms(NOW - 10 * MIN)}  # fmt: skip
    await r.hset(keys.LOCKS, "q.ts", json.dumps(old))
    assert (await store.peek_lock("q.ts", NOW)).expired_now is not None
    new = old | {"lockedBy": "legacy", "expiresAt": iso_from_ms(NOW + 10 * MIN)}
    await r.hset(keys.LOCKS, "q.ts", json.dumps(new))
    check = await store.check_lock("q.ts", NOW)
    assert check.lock is not None
    assert check.lock.locked_by == "legacy"
    assert (await hjson(r, keys.LOCKS, "q.ts"))["lockedBy"] == "legacy"

    await r.hset(keys.LOCKS, "q.ts", json.dumps(old))
    assert (await store.peek_lock("q.ts", NOW)).expired_now is not None
    removed = await store.check_lock("q.ts", NOW)
    assert removed.to_json() == {"locked": False, "resourcePath": "q.ts", "note": "Previous lock expired"}
    assert not await r.hexists(keys.LOCKS, "q.ts")


async def test_checkpoint_save_merges_onto_what_another_client_wrote_after_the_gateway_read(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """A checkpoint another client rewrote after the gateway's last save is the one the next save
    merges onto (its summary kept, its legacy `currentTask` carried); one it made unreadable is
    the 409, and stays."""
    await store.save_checkpoint(c.SaveCheckpoint.parse("phil", {"conversationSummary": "mine"}, NOW))
    theirs = {"agentId": "phil", "conversationSummary": "theirs", "currentTask": "task-9",
              "checkpointAt": iso_from_ms(NOW)}  # fmt: skip
    await r.hset(keys.CHECKPOINTS, "phil", json.dumps(theirs))
    await store.save_checkpoint(c.SaveCheckpoint.parse("phil", {"accomplishments": ["x"]}, NOW + 1))
    assert await hjson(r, keys.CHECKPOINTS, "phil") == {
        "agentId": "phil", "conversationSummary": "theirs", "currentTask": "task-9",
        "checkpointAt": iso_from_ms(NOW + 1), "accomplishments": ["x"]}  # fmt: skip
    await r.hset(keys.CHECKPOINTS, "phil", "{nope")
    with pytest.raises(ApiError) as info:
        await store.save_checkpoint(c.SaveCheckpoint.parse("phil", {"accomplishments": ["y"]}, NOW + 2))
    assert info.value.status == 409
    assert await r.hget(keys.CHECKPOINTS, "phil") == "{nope"


@pytest.mark.parametrize("raw", ["{nope", '{"lockedBy":["phil"],"expiresAt":"2030-01-01T00:00:00.000Z"}'])
async def test_unreadable_lock_is_not_overwritten(
    store: LegacyStore, r: redis.asyncio.Redis, raw: str
) -> None:
    """Issue 15, finding 7: a corrupt lock value made /check say unlocked while /lock answered
    409. Now check, acquire, release and history agree: the same 409 naming the key, and the
    value stays."""
    await r.hset(keys.LOCKS, "bad", raw)
    calls = (
        lambda: store.check_lock("bad", NOW),
        lambda: store.acquire_lock(acquire("bad", "phil", NOW)),
        lambda: store.release_lock(c.ReleaseLock.parse("bad", {"agentId": "phil"}, NOW)),
        lambda: store.lock_history("bad", 10),
    )
    bodies = []
    for call in calls:
        with pytest.raises(ApiError) as info:
            await call()
        assert info.value.status == 409
        bodies.append(info.value.body())
    assert all(b == bodies[0] for b in bodies), bodies
    assert (bodies[0]["key"], bodies[0]["field"], bodies[0]["resourcePath"]) == (keys.LOCKS, "bad", "bad")
    assert await r.hget(keys.LOCKS, "bad") == raw


@pytest.mark.parametrize(
    ("key", "fld", "raw"),
    [
        (keys.TASKS, "t-bad", '{"id":5,"title":["x"],"status":null}'),
        (keys.CHECKPOINTS, "phil", '{"agentId":"phil","pendingWork":"all of it"}'),
        (keys.HANDOFFS, "h-bad", '{"id":"h-bad","fromAgent":"a","toAgent":["b"],"status":"submitted"}'),
        (keys.HANDOFFS, "h-bad", "{nope"),
    ],
)
async def test_writes_over_an_unreadable_value_are_409s_naming_the_key(
    store: LegacyStore, r: redis.asyncio.Redis, key: str, fld: str, raw: str
) -> None:
    """A task update, a checkpoint save or a handoff claim over a value that does not map (a
    property of the wrong type, or corrupt JSON) answers 409 with the key and field, and leaves the
    value as it is; reads skip it and count it."""
    await r.hset(key, fld, raw)
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        keys.TASKS: lambda: store.update_task(c.UpdateTask.parse({"id": fld, "status": "done"}, NOW)),
        keys.CHECKPOINTS: lambda: store.save_checkpoint(
            c.SaveCheckpoint.parse(fld, {"pendingWork": []}, NOW)
        ),
        keys.HANDOFFS: lambda: store.claim_handoff(
            c.ClaimHandoff.parse({"handoffId": fld, "agentId": "b"}, NOW)
        ),
    }
    with pytest.raises(ApiError) as info:
        await writes[key]()
    assert info.value.status == 409
    assert (info.value.body()["key"], info.value.body()["field"]) == (key, fld)
    assert await r.hget(key, fld) == raw
    assert store.corruption.counts[key] >= 1


# --- a realistic data set; a Redis that goes away -------------------------------------------------------


@pytest.mark.parametrize(
    ("listed_ids", "unread"),
    [
        (["dm-a-tyler", "dm-b-tyler"], 2),
        (json.dumps(["dm-a-tyler"]), 1),  # double-encoded
        (["dm-a-tyler", 5, None, "dm-b-tyler"], 2),  # ids the script does not read as this gateway does
        ({"dm-a-tyler": 1}, 0),  # not an array: unreadable, reported once
        ("{nope", 0),
        ([], 0),
    ],
)
async def test_state_reads_the_inbox_the_dm_listing_reads(
    store: LegacyStore, r: redis.asyncio.Redis, listed_ids: Any, unread: int
) -> None:
    """Whatever shape the agent's conversation list has, `/state`'s unread messages are the unread
    messages the DM listing reads, newest first; an unreadable list is reported once per read."""
    for sender in ("a", "b"):
        await store.send_dm(c.SendDm.parse("tyler", {"from": sender, "message": f"from {sender}"}, NOW, ids))
    await r.hset(
        keys.DM_USER_CONVOS, "tyler", listed_ids if isinstance(listed_ids, str) else json.dumps(listed_ids)
    )
    before = store.corruption.total
    state = await store.agent_state("tyler")
    reported = store.corruption.total - before
    listed = await store.list_dms(c.ListDms.parse("tyler", {"unreadOnly": "true"}, 1000))
    assert [d.id for d in state.unread_messages] == [d.id for d in listed]
    assert len(listed) == unread
    assert store.corruption.total - before == 2 * reported
    assert reported == (1 if isinstance(listed_ids, dict) or listed_ids == "{nope" else 0)


async def test_every_read_works_on_a_generated_data_set_and_deletes_nothing(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """Corrupt and double-encoded values are skipped or read, reported, and left in place."""
    summary = await generate(r, scale=60, seed=3, flush=True)
    before = await r.dbsize()
    now = BASE_MS
    assert await store.list_agents(now, 1000)
    assert (await store.get_chat(c.ChatQuery.parse({"limit": "1000"}, now, 50, 1000))).messages
    assert await store.list_tasks(c.ListTasks.parse({}, 10_000))
    assert await store.list_claims(c.ClaimQuery.parse({"includeStale": "true"}, now, 1000))
    assert await store.list_zones(c.ZoneQuery.parse({}, 1000))
    assert await store.list_handoffs(c.HandoffQuery.parse({}, 1000))
    for agent in ("claude-code", "phil", "tyler"):
        await store.agent_state(agent)
        await store.list_dms(c.ListDms.parse(agent, {}, 1000))
        await store.search_memory(c.MemoryQuery.parse(agent, {"query": "a"}, 50))
    await store.get_checkpoint("corrupt-checkpoint-agent")
    with pytest.raises(ApiError) as unreadable:  # neither free nor held: the 409 of every lock route
        await store.check_lock("api/corrupt-lock.ts", now)
    assert unreadable.value.status == 409
    assert store.corruption.total >= 5
    assert await r.dbsize() == before
    for key, field in summary.corrupt:
        if field is not None:
            assert await r.hexists(key, field)
    double_agent = [a for a in await store.list_agents(now, 1000) if a.agent_id == "double-agent"]
    assert double_agent


async def test_a_stopped_redis_gives_store_unavailable_quickly(redis_server: RedisServer) -> None:
    """Redis stopped: operations fail with StoreUnavailable (503) within the time budget."""
    store = LegacyStore.from_url(redis_server.url, SETTINGS)
    try:
        await store.list_agents(NOW, 10)
        redis_server.stop()
        for op in (
            lambda: store.list_agents(NOW, 10),
            lambda: store.post_chat(c.PostChat.parse({"author": "a", "message": "m"}, NOW, ids)),
            lambda: store.acquire_lock(acquire("x", "a", NOW)),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await op()
            assert time.monotonic() - started < 3.0
            assert info.value.status == 503
    finally:
        if not redis_server.running:
            redis_server.start()
        await store.close()


# --- parsed values kept by their text (listings) ------------------------------------------------------


async def test_listings_see_a_value_changed_by_another_client(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """A listing served from parsed values still shows what another writer put in Redis: the
    cache is keyed by the exact text, so a changed value is parsed anew."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann", "currentTask": "one"}, NOW))
    [first] = await store.list_agents(NOW, 100)
    [again] = await store.list_agents(NOW, 100)
    assert again is first  # unchanged text: the parsed agent is reused, not decoded again
    value = await hjson(r, keys.ACTIVE_AGENTS, "ann")
    await r.hset(keys.ACTIVE_AGENTS, "ann", json.dumps({**value, "currentTask": "two"}))
    [changed] = await store.list_agents(NOW, 100)
    assert changed.current_task == "two"


async def test_a_task_listing_is_reused_until_the_hash_changes(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """Listing the same tasks again while the hash is unchanged hands out the same rendered list;
    a task another client writes (or changes) is in the next listing, and in `/work`'s."""
    await store.create_task(c.CreateTask.parse({"title": "one", "createdBy": "ann"}, NOW, ids))
    todo = c.ListTasks.parse({"status": "todo"}, LIMITS.list_limit_max)
    first = await store.list_tasks(todo)
    assert await store.list_tasks(todo) is first
    value = await hjson(r, keys.TASKS, first[0].id)
    await r.hset(keys.TASKS, "other", json.dumps({**value, "id": "other", "title": "two"}))
    assert sorted(t.title for t in await store.list_tasks(todo)) == ["one", "two"]
    await r.hset(keys.TASKS, "other", json.dumps({**value, "id": "other", "status": "done"}))
    assert [t.title for t in await store.list_tasks(todo)] == ["one"]
    work = await store.work_bundle(c.WorkQuery.parse({"agentId": "ann"}, NOW, LIMITS.list_limit_max))
    assert [t.title for t in work.todo] == ["one"]
    assert [t.id for t in work.mine] == []


async def test_a_corrupt_value_in_a_listing_is_reported_on_every_read(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """Only readable values are kept: a corrupt task is skipped and reported each time it is read."""
    await r.hset(keys.TASKS, "bad", "{not json")
    for n in (1, 2):
        assert await store.list_tasks(c.ListTasks.parse({}, LIMITS.list_limit_max)) == []
        assert store.corruption.counts[keys.TASKS] == n


def test_the_cache_of_parsed_values_is_bounded() -> None:
    """At its limit the cache is emptied whole, so memory stays bounded by the setting."""
    cache = DecodedValues(limit=3)
    for i in range(3):
        cache.put("k", str(i), f"text {i}", i)
    assert cache.get("k", "2", "text 2") == 2
    cache.put("k", "3", "text 3", 3)
    assert cache.get("k", "0", "text 0") is None
    assert cache.get("k", "3", "text 3") == 3


async def test_concurrent_dm_sends_do_not_abort_each_other(store: LegacyStore) -> None:
    """Sixty DMs sent at once between different agents all arrive, and none of the gateway's own
    changes is retried: those on one conversation or one user's list take turns in-process
    instead of failing each other's compare-and-set (under load the retries used up the
    attempts and answered 503)."""
    sends = [
        store.send_dm(c.SendDm.parse(f"to-{i % 7}", {"from": f"from-{i}", "message": f"m{i}"}, NOW + i, ids))
        for i in range(60)
    ]
    sent = await asyncio.gather(*sends)
    assert len({d.id for d in sent}) == 60
    inboxes = [await store.list_dms(c.ListDms.parse(f"to-{k}", {}, LIMITS.list_limit_max)) for k in range(7)]
    assert sum(len(box) for box in inboxes) == 60
    assert store.records.watch_conflicts == 0


async def test_a_dm_retries_when_another_writer_changed_its_conversation_meanwhile(
    store: LegacyStore, redis_url: str
) -> None:
    """Another Redis client rewrites the conversation between the DM's read and its write: the
    DM's compare-and-set fails, it reads again and decides again, and neither write is lost."""
    first = c.SendDm.parse("bob", {"from": "alice", "message": "first"}, NOW, ids)
    await store.send_dm(first)
    conv_id = json.loads(await _hget(redis_url, keys.DM_CONVOS))["id"]
    other = redis.Redis.from_url(redis_url, decode_responses=True)
    calls: list[int] = []

    def change(msgs: list[Any], conv: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
        calls.append(len(msgs))
        if len(calls) == 1:  # another writer appends a message after our read
            foreign = [*msgs, {"id": "foreign", "from": "carol", "to": "bob", "message": "x"}]
            other.hset(keys.DM_MESSAGES, conv_id, json.dumps(foreign))
        return [*msgs, {"id": "ours", "from": "alice", "to": "bob", "message": "y"}], dict(conv or {})

    try:
        await store.records.update_conversation(conv_id, change, [])
    finally:
        other.close()
    assert calls == [1, 2]
    assert store.records.watch_conflicts == 1
    held = json.loads(await _hget(redis_url, keys.DM_MESSAGES))
    assert [m["id"] for m in held][1:] == ["foreign", "ours"]


async def test_a_dm_on_fields_this_process_never_saw_keeps_what_another_writer_made(
    store: LegacyStore, r: redis.asyncio.Redis, redis_url: str
) -> None:
    """A DM decides first on what this process last saw, a field it never saw taken as missing:
    when another writer already made the conversation and the users' lists, the
    compare-and-set finds them, the DM is decided again on them, and nothing is overwritten."""
    other = LegacyStore.from_url(redis_url, SETTINGS, clock=FakeClock(NOW))
    try:
        await other.send_dm(c.SendDm.parse("bob", {"from": "alice", "message": "first"}, NOW, ids))
        await other.send_dm(c.SendDm.parse("carol", {"from": "bob", "message": "x"}, NOW, ids))
    finally:
        await other.close()
    await store.send_dm(c.SendDm.parse("bob", {"from": "alice", "message": "second"}, NOW + 1, ids))
    conv_id = conversation_id("alice", "bob")
    held = await hjson(r, keys.DM_MESSAGES, conv_id)
    assert [m["message"] for m in held] == ["first", "second"]
    assert (await hjson(r, keys.DM_CONVOS, conv_id))["unreadCount"] == {"alice": 0, "bob": 2}
    assert await hjson(r, keys.DM_USER_CONVOS, "alice") == [conv_id]
    assert len(await hjson(r, keys.DM_USER_CONVOS, "bob")) == 2  # bob's other conversation kept
    assert store.records.watch_conflicts == 0  # a wrong guess, not another writer's race


async def test_a_dm_over_an_unreadable_conversation_is_a_409_after_a_read(
    store: LegacyStore, r: redis.asyncio.Redis
) -> None:
    """The conversation this process last wrote was made unreadable by another writer: the
    compare-and-set finds it changed and the DM answers 409, leaving the value as it is."""
    await store.send_dm(c.SendDm.parse("bob", {"from": "alice", "message": "first"}, NOW, ids))
    conv_id = next(iter(await r.hgetall(keys.DM_CONVOS)))
    await r.hset(keys.DM_MESSAGES, conv_id, "{nope")
    with pytest.raises(ApiError) as info:
        await store.send_dm(c.SendDm.parse("bob", {"from": "alice", "message": "second"}, NOW + 1, ids))
    assert info.value.status == 409
    assert await r.hget(keys.DM_MESSAGES, conv_id) == "{nope"
    assert store.corruption.counts[keys.DM_MESSAGES] >= 1


async def _hget(redis_url: str, key: str) -> str:
    """The one field of the hash `key` (a test with one conversation)."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        values = list((await client.hgetall(key)).values())
    finally:
        await client.aclose()
    assert len(values) == 1
    return str(values[0])
