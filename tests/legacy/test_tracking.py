"""The agents and tasks hashes kept in memory (`gateway.legacy.tracking`), against a real
redis-server: every read answers what Redis holds, whoever wrote it, and the cache serves only
while its tracking connection is up."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import redis
import redis.asyncio

from gateway.clock import FakeClock
from gateway.domain import commands as c
from gateway.domain.ids import IdGenerator
from gateway.domain.jscompat import iso_from_ms, parse_js_date
from gateway.domain.model import ChatPage
from gateway.errors import ApiError
from gateway.legacy import keys, mapping
from gateway.legacy.client import LegacyClient
from gateway.legacy.records import CHAT_SCAN, LegacyRecords
from gateway.legacy.store import LegacyStore
from gateway.legacy.tracking import APPENDS_KEPT, TrackedHashes
from gateway.settings import LegacySettings, LimitSettings, Settings
from gateway.testing import RedisServer

NOW = 1_700_000_000_000
SETTINGS = LegacySettings(pool_size=8, timeout_s=1.0, retries=2)
ids = IdGenerator()


def _store(url: str, settings: LegacySettings = SETTINGS) -> LegacyStore:
    """The gateway's legacy store, its tracking connection reconnecting at once after a loss."""
    client = LegacyClient.connect(url, settings, track=(keys.TASKS, keys.ACTIVE_AGENTS))
    if client.tracked is not None:
        client.tracked = TrackedHashes(
            url, settings, (keys.TASKS, keys.ACTIVE_AGENTS), lists={keys.MESSAGES: CHAT_SCAN}, reconnect_s=0.0
        )
    return LegacyStore(LegacyRecords(client), LimitSettings(), clock=FakeClock(NOW))


def _tracked(store: LegacyStore) -> TrackedHashes:
    tracked = store.records.client.tracked
    assert tracked is not None
    return tracked


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[LegacyStore]:
    s = _store(redis_url)
    assert await _tracked(s).wait_up()
    yield s
    await s.close()


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    """Another client of the same Redis (the legacy API, an operator)."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


def _task(task_id: str, title: str) -> str:
    return json.dumps(
        {"id": task_id, "title": title, "status": "todo", "createdAt": "2024-01-01T00:00:00.000Z"}
    )


def _hgetalls(r: redis.Redis) -> int:
    stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def _titles(store: LegacyStore) -> list[str]:
    return sorted(t.title for t in await store.list_tasks(c.ListTasks.parse({"limit": "1000"}, 1000)))


async def test_another_clients_writes_are_seen_by_the_next_read(store: LegacyStore, r: redis.Redis) -> None:
    """A write another client was answered for is in the gateway's next listing, at once."""
    r.hset(keys.TASKS, "t1", _task("t1", "one"))
    assert await _titles(store) == ["one"]
    assert await _titles(store) == ["one"]  # from memory: a PING, no HGETALL
    assert _tracked(store).hits >= 1
    for step in range(20):
        r.hset(keys.TASKS, f"t{step + 2}", _task(f"t{step + 2}", f"n{step:02}"))
        assert f"n{step:02}" in await _titles(store)
    r.hdel(keys.TASKS, "t1")
    assert "one" not in await _titles(store)
    r.delete(keys.TASKS)
    assert await _titles(store) == []
    r.hset(keys.TASKS, "t9", _task("t9", "after a DEL"))
    assert await _titles(store) == ["after a DEL"]
    r.flushdb()  # `invalidate null`: every hash
    assert await _titles(store) == []


async def test_the_gateways_own_writes_are_read_from_memory(store: LegacyStore, r: redis.Redis) -> None:
    """The gateway's own writes are in its next read without reading the hash again, and a
    write by another client after them is still seen (Redis tracks the hash again)."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann", "status": "idle"}, NOW))
    agents = await store.list_agents(NOW, 100)
    await store.create_task(c.CreateTask.parse({"title": "first", "createdBy": "ann"}, NOW, ids))
    assert await _titles(store) == ["first"]
    before = _hgetalls(r)
    for i in range(5):
        await store.create_task(c.CreateTask.parse({"title": f"mine {i}", "createdBy": "ann"}, NOW, ids))
        await store.register_agent(c.RegisterAgent.parse({"agentId": f"a{i}", "status": "idle"}, NOW))
        assert f"mine {i}" in await _titles(store)
        assert f"a{i}" in [a.agent_id for a in await store.list_agents(NOW, 100)]
        bundle = await store.work_bundle(c.WorkQuery.parse({"agentId": "ann"}, NOW, 1000))
        assert {a.agent_id for a in bundle.team} == {"ann", *(f"a{j}" for j in range(i + 1))}
    assert _hgetalls(r) == before  # every read came from memory
    assert [a.agent_id for a in agents] == ["ann"]
    # another writer after the gateway's own writes: invalidated, read again
    r.hset(keys.TASKS, "x", _task("x", "from the legacy API"))
    value = json.loads(str(r.hget(keys.ACTIVE_AGENTS, "ann")))
    r.hset(keys.ACTIVE_AGENTS, "ann", json.dumps({**value, "status": "offline"}))
    assert "from the legacy API" in await _titles(store)
    assert "ann" not in [a.agent_id for a in await store.list_agents(NOW, 100)]


async def test_interleaved_writers_leave_the_cache_equal_to_redis(store: LegacyStore, redis_url: str) -> None:
    """The gateway and another client writing the same hash at once: after each step, and at
    the end, the gateway's reads hold exactly what Redis holds."""
    other = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    rng = random.Random(7)
    try:

        async def ours(i: int) -> None:
            await store.records.hset(keys.TASKS, f"g{i % 7}", {"id": f"g{i}", "title": f"ours {i}"})

        async def theirs(i: int) -> None:
            if rng.random() < 0.3:
                await other.hdel(keys.TASKS, f"g{i % 7}")
            else:
                await other.hset(keys.TASKS, f"g{i % 7}", json.dumps({"id": f"g{i}", "title": f"theirs {i}"}))

        for batch in range(30):
            steps = [
                ours(batch * 10 + i) if rng.random() < 0.5 else theirs(batch * 10 + i) for i in range(10)
            ]
            await asyncio.gather(*steps, store.records.hgetall_raw(keys.TASKS))
            assert await store.records.hgetall_raw(keys.TASKS) == await other.hgetall(keys.TASKS)
    finally:
        await other.aclose()


def test_a_fill_is_dropped_when_an_invalidation_arrives_while_it_is_in_flight() -> None:
    """An HGETALL whose reply comes after an invalidation of its hash answers its caller, but is
    not kept: the next read asks Redis again."""
    tracked = TrackedHashes("redis://127.0.0.1:1/0", SETTINGS, (keys.TASKS,))
    tracked._ready = True
    fill = tracked._filler(keys.TASKS)
    tracked.on_push(tracked._conn, ["invalidate", [keys.TASKS]])  # type: ignore[arg-type]
    assert fill({"t": "v"}) == {"t": "v"}
    assert tracked._cache[keys.TASKS] is None
    fill = tracked._filler(keys.TASKS)
    assert fill({"t": "v"}) == {"t": "v"}
    assert tracked._cache[keys.TASKS] == {"t": "v"}


async def _kill_tracking_connection(r: redis.Redis) -> None:
    killed = [cl for cl in r.client_list() if cl.get("name") == "agent-coord-tracking"]
    assert len(killed) == 1
    r.client_kill_filter(_id=killed[0]["id"])


async def test_a_killed_tracking_connection_turns_the_cache_off_until_it_is_back(
    store: LegacyStore, r: redis.Redis
) -> None:
    """CLIENT KILL of the tracking connection: reads go to Redis (and see every write) until a
    new connection has tracking on again; then the cache serves, and stays correct."""
    tracked = _tracked(store)
    r.hset(keys.TASKS, "t1", _task("t1", "one"))
    assert await _titles(store) == ["one"]
    await _kill_tracking_connection(r)
    r.hset(keys.TASKS, "t2", _task("t2", "two"))  # no invalidation reaches the gateway now
    assert await _titles(store) == ["one", "two"]
    r.hset(keys.TASKS, "t3", _task("t3", "three"))
    assert await _titles(store) == ["one", "three", "two"]
    assert await tracked.wait_up()
    assert tracked.connections == 2
    hits = tracked.hits
    assert await _titles(store) == ["one", "three", "two"]
    assert await _titles(store) == ["one", "three", "two"]
    assert tracked.hits > hits
    r.hset(keys.TASKS, "t4", _task("t4", "four"))
    assert await _titles(store) == ["four", "one", "three", "two"]


async def test_a_restarted_redis_is_read_anew(redis_server: RedisServer, redis_url: str) -> None:
    """Redis restarted (its data gone): the cache does not answer what the old server held."""
    store = _store(redis_url)
    try:
        r = redis.Redis.from_url(redis_url, decode_responses=True)
        r.hset(keys.TASKS, "t1", _task("t1", "before the restart"))
        assert await _tracked(store).wait_up()
        assert await _titles(store) == ["before the restart"]
        assert await _titles(store) == ["before the restart"]
        redis_server.stop()
        redis_server.start()
        assert await _titles(store) == []
        r.hset(keys.TASKS, "t2", _task("t2", "after"))
        assert await _titles(store) == ["after"]
        assert await _tracked(store).wait_up()
        assert await _titles(store) == ["after"]
        r.hset(keys.TASKS, "t3", _task("t3", "later"))
        assert await _titles(store) == ["after", "later"]
    finally:
        if not redis_server.running:
            redis_server.start()
        await store.close()


async def test_with_cache_listings_off_there_is_no_tracking_connection(
    redis_url: str, r: redis.Redis
) -> None:
    """`legacy.cache_listings = false`: no tracking connection, every listing reads Redis."""
    store = LegacyStore.from_url(redis_url, Settings(legacy=LegacySettings(cache_listings=False)))
    try:
        assert store.records.client.tracked is None
        before = _hgetalls(r)
        assert await _titles(store) == []
        assert await _titles(store) == []
        assert _hgetalls(r) == before + 2
        assert not [cl for cl in r.client_list() if cl.get("name") == "agent-coord-tracking"]
    finally:
        await store.close()


async def test_the_task_listing_kept_across_writes_is_the_one_read_afresh(
    store: LegacyStore, r: redis.Redis
) -> None:
    """After each create, update or another client's write the tracked store lists the tasks in
    the order a store sorting the same hash afresh does (newest first, ties in the hash's order)."""
    listing = c.ListTasks.parse({"limit": "1000"}, 1000)

    async def listed(s: LegacyStore) -> list[tuple[str, str, str]]:
        return [(t.id, t.title, t.status) for t in await s.list_tasks(listing)]

    async def same_as_afresh() -> None:
        afresh = LegacyStore(store.records, LimitSettings(), clock=FakeClock(NOW))  # nothing kept
        assert await listed(store) == await listed(afresh)

    created = []
    for i in range(6):  # the same createdAt: ties keep the hash's order
        task = await store.create_task(c.CreateTask.parse({"title": f"t{i}", "createdBy": "ann"}, NOW, ids))
        created.append(task.id)
        await same_as_afresh()
    for i, created_at in enumerate(("2024-01-01T00:00:00.000Z", "2099-01-01T00:00:00.000Z")):
        r.hset(
            keys.TASKS, f"x{i}", _task(f"x{i}", f"other {i}").replace("2024-01-01T00:00:00.000Z", created_at)
        )
        await same_as_afresh()
    await store.create_task(c.CreateTask.parse({"title": "later", "createdBy": "ann"}, NOW + 5, ids))
    await same_as_afresh()
    await store.update_task(c.UpdateTask.parse({"id": created[2], "status": "done"}, NOW + 6))
    await same_as_afresh()
    r.hset(keys.TASKS, created[0], _task(created[0], "rewritten").replace("2024", "2098"))
    await same_as_afresh()
    r.hdel(keys.TASKS, created[1])
    await store.create_task(c.CreateTask.parse({"title": "after a delete", "createdBy": "ann"}, NOW, ids))
    await same_as_afresh()
    r.hset(keys.TASKS, "bad", "{not json")
    await same_as_afresh()
    r.hdel(keys.TASKS, "bad")
    await same_as_afresh()
    assert [t for _, t, _ in await listed(store)][:2] == ["other 1", "rewritten"]


async def test_task_listings_by_status_and_assignee_follow_every_writer(
    store: LegacyStore, r: redis.Redis
) -> None:
    """Seeded writes of every kind (creates and updates through the store, another client's
    writes with tied, older and newer `createdAt`, deletes, a corrupt value): after each, every
    filtered task listing and `/work`'s `todo` and `mine` are those of a store reading afresh."""
    rng = random.Random(13)
    people = ["ann", "bob", "cy"]
    queries = [
        {"limit": "1000"},
        {"status": "todo"},
        {"status": "done", "limit": "3"},
        {"assignee": "bob"},
        {"assignee": "cy", "limit": "2"},
        {"status": "todo", "assignee": "ann"},
        {"status": "review"},
    ]

    async def listed(s: LegacyStore) -> list[list[tuple[str, str, str, str | None]]]:
        out = []
        for q in queries:
            tasks = await s.list_tasks(c.ListTasks.parse(q, 1000))
            out.append([(t.id, t.title, t.status, t.assignee) for t in tasks])
        for who in people:
            work = await s.work_bundle(c.WorkQuery.parse({"agentId": who}, NOW, 1000))
            out.append([(t.id, t.title, t.status, t.assignee) for t in [*work.todo, *work.mine]])
        return out

    created: list[str] = []
    for step in range(60):
        kind = rng.choice(["create", "create", "create", "update", "other", "delete", "corrupt"])
        if kind == "create":
            body = {"title": f"c{step}", "createdBy": "ann", "status": rng.choice(["todo", "todo", "review"])}
            if rng.random() < 0.6:
                body["assignee"] = rng.choice(people)
            at = NOW + rng.choice([0, 0, 1, 5])  # ties with earlier tasks
            created.append((await store.create_task(c.CreateTask.parse(body, at, ids))).id)
        elif kind == "update" and created:
            change: dict[str, Any] = {"id": rng.choice(created)}
            if rng.random() < 0.5:
                change["status"] = rng.choice(["todo", "done", "review"])
            else:
                change["assignee"] = rng.choice([*people, None])
            await store.update_task(c.UpdateTask.parse(change, NOW + step))
        elif kind == "other":
            fld = rng.choice([*created, f"x{step}"]) if created else f"x{step}"
            stamp = rng.choice(
                ["2024-01-01T00:00:00.000Z", "2023-11-14T22:13:20.000Z", "2099-01-01T00:00:00.000Z"]
            )
            value = json.loads(_task(fld, f"other {step}"))
            value.update(createdAt=stamp, assignee=rng.choice([*people, "", None]))
            r.hset(keys.TASKS, fld, json.dumps(value))
        elif kind == "delete" and created:
            r.hdel(keys.TASKS, created.pop(rng.randrange(len(created))))
        elif kind == "corrupt":
            r.hset(keys.TASKS, "bad", "{not json")
            assert await listed(store) == await listed(_afresh(store))
            r.hdel(keys.TASKS, "bad")
        assert await listed(store) == await listed(_afresh(store)), f"step {step}: {kind}"


async def test_the_agent_listing_follows_every_writer(store: LegacyStore, r: redis.Redis) -> None:
    """Seeded heartbeats (many in the same millisecond), agents going offline, another client's
    rewrites, new agents, deletes and a corrupt value: after each, the agent listing (at several
    times and limits) and `/work`'s team are those of a store reading afresh."""
    rng = random.Random(7)
    agents = [f"a{i}" for i in range(12)]

    async def listed(s: LegacyStore) -> list[list[tuple[str, str | None, str]]]:
        # /work first: its heartbeat of a0 (the same value each time) is in both stores' listings
        work = await s.work_bundle(c.WorkQuery.parse({"agentId": "a0"}, NOW + 50, 1000))
        out = [[(a.agent_id, a.last_seen, a.status) for a in work.team]]
        for now, limit in ((NOW + 100, 1000), (NOW + 100, 3), (NOW + 1_800_010, 1000), (NOW, 0)):
            out.append([(a.agent_id, a.last_seen, a.status) for a in await s.list_agents(now, limit)])
        return out

    for step in range(80):
        kind = rng.choice(["beat", "beat", "beat", "offline", "other", "new", "delete", "corrupt"])
        who = rng.choice(agents)
        if kind == "beat":
            at = NOW + rng.choice([0, 10, 10, 20])  # ties in lastSeen
            await store.register_agent(c.RegisterAgent.parse({"agentId": who, "currentTask": f"s{step}"}, at))
        elif kind == "offline":
            await store.register_agent(c.RegisterAgent.parse({"agentId": who, "status": "offline"}, NOW + 30))
        elif kind == "other":
            seen = rng.choice(["2023-11-14T22:13:20.010Z", "2023-11-14T22:13:20.000Z", None])
            r.hset(keys.ACTIVE_AGENTS, who, json.dumps({"id": who, "status": "active", "lastSeen": seen}))
        elif kind == "new":
            name = f"n{step}"
            agents.append(name)
            r.hset(keys.ACTIVE_AGENTS, name, json.dumps({"id": name, "lastSeen": "2023-11-14T22:13:20.010Z"}))
        elif kind == "delete":
            r.hdel(keys.ACTIVE_AGENTS, who)
        else:
            r.hset(keys.ACTIVE_AGENTS, "bad", "{not json")
            assert await listed(store) == await listed(_afresh(store))
            r.hdel(keys.ACTIVE_AGENTS, "bad")
        assert await listed(store) == await listed(_afresh(store)), f"step {step}: {kind}"
        assert [a.agent_id for a in await store.list_agents(NOW + 100, 1000)] == await sorted_anew(store)


async def sorted_anew(store: LegacyStore) -> list[str]:
    """The agent listing's ids by its rule, from the hash as the store reads it: listable agents
    (not offline, with a `lastSeen`), newest first, ties in the hash's order (the mapping's
    reading of each value: no `status` is offline)."""
    raw = await store.records.hgetall_raw(keys.ACTIVE_AGENTS)
    rows: list[tuple[int, str]] = []
    for fld, text in raw.items():
        try:
            agent = mapping.agent_from_legacy(fld, json.loads(text))
        except ValueError:
            continue
        seen = parse_js_date(agent.last_seen) if isinstance(agent.last_seen, str) else None
        if agent.status != "offline" and seen is not None:
            rows.append((seen, fld))
    rows.sort(key=lambda row: row[0], reverse=True)
    return [fld for _, fld in rows]


def _calls(r: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_a_heartbeat_is_one_round_trip_and_merges_onto_another_clients_write(
    store: LegacyStore, r: redis.Redis
) -> None:
    """With the agents hash in memory a heartbeat is one transaction (the value compared and set
    by a script, presence beside it) and the next listing needs no read of the hash; a value
    another client wrote just before (not yet announced to the gateway) is merged onto, not
    overwritten; an unreadable one is the 409 and stays."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann", "currentTask": "t1"}, NOW))
    await store.list_agents(NOW, 100)  # the hash is in memory from here on
    before = _calls(r)
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann", "status": "idle"}, NOW + 1))
    after = _calls(r)
    sent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0) and k != "info"}
    assert sent == {"multi": 1, "evalsha": 1, "hget": 1, "hset": 2, "hlen": 1, "exec": 1}
    [ann] = await store.list_agents(NOW + 1, 100)
    assert (ann.status, ann.current_task) == ("idle", "t1")
    assert _calls(r).get("hgetall") == after.get("hgetall")
    assert r.hget(keys.AGENT_PRESENCE, "ann") == "online"

    value = json.loads(str(r.hget(keys.ACTIVE_AGENTS, "ann")))
    r.hset(keys.ACTIVE_AGENTS, "ann", json.dumps({**value, "currentTask": "theirs", "team": "blue"}))
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann", "status": "offline"}, NOW + 2))
    stored = json.loads(str(r.hget(keys.ACTIVE_AGENTS, "ann")))
    assert (stored["status"], stored["currentTask"], stored["team"]) == ("offline", "theirs", "blue")
    assert r.hget(keys.AGENT_PRESENCE, "ann") == "offline"
    assert [a.agent_id for a in await store.list_agents(NOW + 2, 100)] == []

    r.hset(keys.ACTIVE_AGENTS, "ann", "{nope")
    with pytest.raises(ApiError) as info:
        await store.register_agent(c.RegisterAgent.parse({"agentId": "ann"}, NOW + 3))
    assert info.value.status == 409
    assert r.hget(keys.ACTIVE_AGENTS, "ann") == "{nope"


async def test_work_is_one_round_trip_and_decides_again_on_another_clients_write(
    store: LegacyStore, r: redis.Redis
) -> None:
    """With the agents hash in memory `/work` sends its reads and its heartbeat together; an
    agent value another client wrote just before (not announced yet) is not overwritten: the
    heartbeat is decided again on it (its fields kept) and the mentions follow its cursor."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann"}, NOW))
    for i in range(3):
        await store.post_chat(c.PostChat.parse({"author": "bob", "message": f"@ann m{i}"}, NOW + i, ids))
    work = c.WorkQuery.parse({"agentId": "ann"}, NOW + 10, 1000)
    first = await store.work_bundle(work)
    assert [m.message for m in first.pending_mentions] == ["@ann m0", "@ann m1", "@ann m2"]
    before = _calls(r)
    again = await store.work_bundle(work)
    sent = {k: n - before.get(k, 0) for k, n in _calls(r).items() if n != before.get(k, 0) and k != "info"}
    # the heartbeat's compare-and-set, the hashes from memory, the chat list read once to keep it
    assert sent == {
        "evalsha": 1,
        "hget": 1,
        "lrange": 1,
        "multi": 1,
        "hset": 1,
        "hlen": 1,
        "exec": 1,
        "ping": 1,
    }
    assert [m.message for m in again.pending_mentions] == [m.message for m in first.pending_mentions]
    before = _calls(r)
    kept = await store.work_bundle(work)
    sent = {k: n - before.get(k, 0) for k, n in _calls(r).items() if n != before.get(k, 0) and k != "info"}
    assert sent == {"evalsha": 1, "hget": 1, "multi": 1, "hset": 1, "hlen": 1, "exec": 1, "ping": 1}
    assert [m.message for m in kept.pending_mentions] == [m.message for m in first.pending_mentions]

    # another client moves ann's cursor past m1 and adds a field of its own
    chat = await store.get_chat(c.ChatQuery.parse({"limit": "10"}, NOW + 20, 50, 1000))
    m1 = next(m for m in chat.messages if m.message == "@ann m1")
    value = json.loads(str(r.hget(keys.ACTIVE_AGENTS, "ann")))
    r.hset(keys.ACTIVE_AGENTS, "ann", json.dumps({**value, "lastChatCheckId": m1.id, "team": "blue"}))
    moved = await store.work_bundle(c.WorkQuery.parse({"agentId": "ann"}, NOW + 30, 1000))
    assert [m.message for m in moved.pending_mentions] == ["@ann m2"]
    stored = json.loads(str(r.hget(keys.ACTIVE_AGENTS, "ann")))
    assert (stored["team"], stored["lastChatCheckId"], stored["status"]) == ("blue", m1.id, "active")
    assert stored["lastSeen"] == "2023-11-14T22:13:20.030Z"
    [ann] = [a for a in moved.team if a.agent_id == "ann"]
    assert ann.last_seen == stored["lastSeen"]


async def test_heartbeat_and_work_after_redis_forgot_their_scripts(
    store: LegacyStore, r: redis.Redis
) -> None:
    """The scripts of a heartbeat and of `/work` go by their SHA1; after SCRIPT FLUSH (or a restart)
    each is sent whole once, the write is made once and the answers are those of a store reading
    afresh; the next requests go by SHA1 again."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann", "currentTask": "t1"}, NOW))
    await store.post_chat(c.PostChat.parse({"author": "bob", "message": "@ann hello"}, NOW + 1, ids))
    await store.list_agents(NOW, 100)  # the hash is in memory from here on
    r.script_flush()
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann", "status": "idle"}, NOW + 2))
    stored = json.loads(str(r.hget(keys.ACTIVE_AGENTS, "ann")))
    assert (stored["status"], stored["currentTask"]) == ("idle", "t1")

    r.script_flush()
    before = _calls(r)
    work = await store.work_bundle(c.WorkQuery.parse({"agentId": "ann"}, NOW + 10, 1000))
    sent = {k: n - before.get(k, 0) for k, n in _calls(r).items() if n != before.get(k, 0) and k != "info"}
    assert sent["eval"] == 1  # the heartbeat's script whole, once (the chat list is kept: no script)
    assert sent["hset"] == 1  # the heartbeat written once
    assert [m.message for m in work.pending_mentions] == ["@ann hello"]
    stored = json.loads(str(r.hget(keys.ACTIVE_AGENTS, "ann")))
    assert (stored["status"], stored["lastSeen"]) == ("active", "2023-11-14T22:13:20.010Z")
    afresh = await _afresh(store).work_bundle(c.WorkQuery.parse({"agentId": "ann"}, NOW + 10, 1000))
    assert [m.message for m in afresh.pending_mentions] == ["@ann hello"]

    before = _calls(r)
    await store.work_bundle(c.WorkQuery.parse({"agentId": "ann"}, NOW + 20, 1000))
    sent = {k: n - before.get(k, 0) for k, n in _calls(r).items() if n != before.get(k, 0) and k != "info"}
    assert (sent["evalsha"], sent.get("eval", 0)) == (1, 0)


def _afresh(store: LegacyStore) -> LegacyStore:
    """A store on the same records that keeps nothing from earlier listings."""
    return LegacyStore(store.records, LimitSettings(), clock=FakeClock(NOW))


# -- the chat list kept on the tracking connection ----------------------------------------------


def _chat(msg_id: str, text: str, author: str = "bob", at_ms: int = NOW) -> str:
    """A chat list element as the legacy API writes it."""
    return json.dumps({"id": msg_id, "author": author, "message": text, "timestamp": iso_from_ms(at_ms)})


async def _chat_read(store: LegacyStore, limit: int = 50) -> list[str]:
    """The chat page's messages, as ann reads them (her mention cursor moves to the head)."""
    page = await store.get_chat(
        c.ChatQuery.parse({"limit": str(limit), "agentId": "ann"}, NOW + 100, 50, 1000)
    )
    return [m.message for m in page.messages]


async def _work_mentions(store: LegacyStore, agent_id: str, at_ms: int) -> list[str]:
    bundle = await store.work_bundle(c.WorkQuery.parse({"agentId": agent_id}, at_ms, 1000))
    return [m.message for m in bundle.pending_mentions]


async def test_another_clients_chat_writes_are_seen_by_the_next_work_and_chat_read(
    store: LegacyStore, r: redis.Redis
) -> None:
    """The chat list kept in memory: another client's LPUSH, LTRIM and DEL of it are in the
    gateway's next chat read and the next /work's mentions, and kept reads send no LRANGE."""
    await store.register_agent(c.RegisterAgent.parse({"agentId": "ann"}, NOW))
    await store.list_agents(NOW, 100)  # the agents hash in memory: /work's one round trip
    await store.post_chat(c.PostChat.parse({"author": "bob", "message": "@ann one"}, NOW + 1, ids))
    assert await _work_mentions(store, "ann", NOW + 2) == ["@ann one"]
    assert await _chat_read(store) == ["@ann one"]
    before = _calls(r).get("lrange", 0)
    assert await _chat_read(store) == ["@ann one"]
    assert await _work_mentions(store, "ann", NOW + 3) == []
    assert _calls(r).get("lrange", 0) == before  # from memory

    r.lpush(keys.MESSAGES, _chat("x1", "@ann from the legacy API"))
    assert await _chat_read(store) == ["@ann one", "@ann from the legacy API"]
    r.lpush(keys.MESSAGES, _chat("x2", "@ann again"))
    assert await _work_mentions(store, "ann", NOW + 4) == ["@ann again"]
    r.lpush(keys.MESSAGES, _chat("x3", "@ann third"))
    r.ltrim(keys.MESSAGES, 0, 0)  # only the newest left (ann's cursor trimmed away)
    assert await _work_mentions(store, "ann", NOW + 5) == ["@ann third"]
    assert await _chat_read(store) == ["@ann third"]
    await store.post_chat(c.PostChat.parse({"author": "bob", "message": "@ann ours"}, NOW + 6, ids))
    assert await _chat_read(store) == ["@ann third", "@ann ours"]
    assert await store.records.chat_texts(0, -1) == r.lrange(keys.MESSAGES, 0, -1)  # to the end: Redis
    r.delete(keys.MESSAGES)
    assert await _chat_read(store) == []
    assert await _work_mentions(store, "ann", NOW + 7) == []
    r.lpush(keys.MESSAGES, _chat("x4", "@ann after a DEL"))
    assert await _work_mentions(store, "ann", NOW + 8) == ["@ann after a DEL"]
    assert await _chat_read(store) == ["@ann after a DEL"]


async def test_a_chat_page_of_the_unchanged_kept_list_is_answered_again_and_follows_every_change(
    store: LegacyStore, r: redis.Redis
) -> None:
    """GET /chat without an agent: while the kept chat list is unchanged the page is the same
    `RenderedList` (its answer rendered once), the same bytes as a page read afresh; any change
    (another client's LPUSH, our post, a corrupt element) gives the page read anew."""

    async def page(limit: int = 3) -> Any:
        return (await store.get_chat(c.ChatQuery.parse({"limit": str(limit)}, NOW + 100, 50, 1000))).messages

    async def fresh(limit: int = 3) -> bytes:
        """The answer of a store reading the same Redis without anything kept."""
        other = _store(store.records.client.url)
        try:
            assert await _tracked(other).wait_up()
            got = await other.get_chat(c.ChatQuery.parse({"limit": str(limit)}, NOW + 100, 50, 1000))
            return got.answer()
        finally:
            await other.close()

    for i in range(4):
        await store.post_chat(c.PostChat.parse({"author": "bob", "message": f"m{i}"}, NOW + i, ids))
    first = await page()
    again = await page()
    assert again is first
    assert [m.message for m in await store.records.chat_window(1)] == ["m3"]  # the head (a cursor)
    assert (await page()) is first  # kept beside the head's window
    assert [m.message for m in again] == ["m1", "m2", "m3"]
    answer = ChatPage(messages=again).answer()
    assert answer == await fresh()
    assert (await page(2)) is not first  # another limit: its own page
    assert [m.message for m in await page(2)] == ["m2", "m3"]

    r.lpush(keys.MESSAGES, _chat("x1", "from the legacy API", at_ms=NOW + 10))
    after = await page()
    assert after is not first
    assert [m.message for m in after] == ["m2", "m3", "from the legacy API"]
    assert ChatPage(messages=after).answer() == await fresh()

    await store.post_chat(c.PostChat.parse({"author": "bob", "message": "ours"}, NOW + 11, ids))
    assert [m.message for m in await page()] == ["m3", "from the legacy API", "ours"]

    r.lpush(keys.MESSAGES, "{not json")  # skipped, and reported on every read (never kept)
    reported = store.records.corruption.total
    assert [m.message for m in await page()] == ["m3", "from the legacy API", "ours"]
    assert [m.message for m in await page()] == ["m3", "from the legacy API", "ours"]
    assert store.records.corruption.total == reported + 2


async def test_a_lost_tracking_connection_or_restart_sends_chat_reads_to_redis(
    redis_server: RedisServer, redis_url: str
) -> None:
    """The tracking connection killed, then Redis restarted (its data gone): chat reads and
    /work answer what Redis holds, never the kept list, until tracking is on again."""
    store = _store(redis_url)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await _tracked(store).wait_up()
        await store.register_agent(c.RegisterAgent.parse({"agentId": "ann"}, NOW))
        await store.list_agents(NOW, 100)
        await store.post_chat(c.PostChat.parse({"author": "bob", "message": "@ann one"}, NOW + 1, ids))
        assert await _chat_read(store) == ["@ann one"]
        assert await _chat_read(store) == ["@ann one"]
        await _kill_tracking_connection(r)
        r.lpush(keys.MESSAGES, _chat("x1", "@ann unannounced"))  # no invalidation reaches the gateway
        assert await _work_mentions(store, "ann", NOW + 2) == ["@ann unannounced"]
        assert await _chat_read(store) == ["@ann one", "@ann unannounced"]
        assert await _tracked(store).wait_up()
        assert await _chat_read(store) == ["@ann one", "@ann unannounced"]
        assert await _chat_read(store) == ["@ann one", "@ann unannounced"]

        redis_server.stop()
        redis_server.start()
        assert await _chat_read(store) == []
        r.lpush(keys.MESSAGES, _chat("x2", "after the restart"))
        assert await _chat_read(store) == ["after the restart"]
        assert await _tracked(store).wait_up()
        assert await _chat_read(store) == ["after the restart"]
        r.lpush(keys.MESSAGES, _chat("x3", "later"))
        assert await _chat_read(store) == ["after the restart", "later"]
    finally:
        r.close()
        if not redis_server.running:
            redis_server.start()
        await store.close()


async def test_the_kept_chat_list_equals_redis_after_concurrent_posts(
    store: LegacyStore, redis_url: str
) -> None:
    """Bursts of gateway posts and another client's pushes and trims at once: after each, the
    chat elements the gateway reads from memory are exactly Redis's LRANGE, in order."""
    other = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    rng = random.Random(11)
    try:

        async def ours(i: int) -> None:
            await store.post_chat(c.PostChat.parse({"author": "gw", "message": f"ours {i}"}, NOW + i, ids))

        async def theirs(i: int) -> None:
            if rng.random() < 0.2:  # several at once, untrimmed: the list grows past the kept window
                await other.lpush(keys.MESSAGES, *(_chat(f"t{i}.{j}", f"theirs {i}.{j}") for j in range(3)))
                return
            async with other.pipeline(transaction=True) as pipe:
                _ = pipe.lpush(keys.MESSAGES, _chat(f"t{i}", f"theirs {i}"))
                _ = pipe.ltrim(keys.MESSAGES, 0, keys.CHAT_MAX - 1)
                await pipe.execute()

        reads, longest = 0, 0
        for batch in range(50):
            steps: list[Awaitable[Any]] = [
                ours(batch * 40 + i) if rng.random() < 0.6 else theirs(batch * 40 + i) for i in range(40)
            ]
            if batch == 5:
                steps.append(other.ltrim(keys.MESSAGES, 0, 40))
            await asyncio.gather(*steps, store.records.chat_texts(0, 10))
            kept = await store.records.chat_texts(0, CHAT_SCAN - 1)
            assert kept == await other.lrange(keys.MESSAGES, 0, CHAT_SCAN - 1)
            reads += 1
            longest = max(longest, await other.llen(keys.MESSAGES))
        assert longest >= keys.CHAT_MAX  # the list went round the window
        assert _tracked(store).hits >= reads // 2
    finally:
        await other.aclose()


async def test_work_mentions_from_the_kept_list_are_those_of_the_script(
    store: LegacyStore, redis_url: str, r: redis.Redis
) -> None:
    """Mentions (and the recent messages) of /work answered from the kept chat list are those of
    a gateway reading with the script, for cursors near the head, deep, trimmed away and absent,
    with unreadable and '@'-less elements in between."""
    scripted = LegacyStore(
        LegacyRecords(LegacyClient.connect(redis_url, SETTINGS, track=(keys.TASKS, keys.ACTIVE_AGENTS))),
        LimitSettings(),
        clock=FakeClock(NOW),
    )
    rng = random.Random(5)
    names, found = ["ann", "bob", "cy"], 0
    try:
        for name in names:
            await store.register_agent(c.RegisterAgent.parse({"agentId": name}, NOW))
        await store.list_agents(NOW, 100)
        await scripted.list_agents(NOW, 100)
        at = NOW + 10
        for round_ in range(30):
            for _ in range(rng.choice([1, 5, 40, 300])):
                at += 1
                who = rng.choice(names)
                text = rng.choice(["hello", f"@{rng.choice(names)} look", "mail a@b.c", f"@{who}"])
                if rng.random() < 0.02:
                    r.lpush(keys.MESSAGES, "{not json")
                else:
                    await store.post_chat(c.PostChat.parse({"author": who, "message": text}, at, ids))
            name = rng.choice(names)
            at += 1
            if rng.random() < 0.5:  # the agent reads chat: its mention cursor moves to the head
                await store.get_chat(c.ChatQuery.parse({"limit": "5", "agentId": name}, at, 50, 1000))
            if rng.random() < 0.1:  # a cursor id no longer in the list (trimmed away)
                value = json.loads(str(r.hget(keys.ACTIVE_AGENTS, name)))
                r.hset(keys.ACTIVE_AGENTS, name, json.dumps({**value, "lastChatCheckId": "gone"}))
            # the same question to both (the first asked moves the cursor: ask the scripted one on
            # a copy of the agent's value first, then put the value back for the kept one)
            value = r.hget(keys.ACTIVE_AGENTS, name)
            theirs = await scripted.work_bundle(c.WorkQuery.parse({"agentId": name}, at, 1000))
            r.hset(keys.ACTIVE_AGENTS, name, str(value))
            ours = await store.work_bundle(c.WorkQuery.parse({"agentId": name}, at, 1000))
            assert [m.id for m in ours.pending_mentions] == [m.id for m in theirs.pending_mentions], round_
            assert [m.id for m in ours.recent_chat] == [m.id for m in theirs.recent_chat]
            found += len(ours.pending_mentions)
        assert found > 30
        assert _tracked(scripted).lists == {}  # the other one read with the script
    finally:
        await scripted.close()


async def test_another_command_of_a_tracked_hash_in_a_write_drops_the_kept_copy(
    store: LegacyStore, r: redis.Redis
) -> None:
    """A command `write` does not apply itself (a DEL) on a tracked hash leaves no stale copy:
    the next listing is what Redis holds."""
    r.hset(keys.TASKS, "t1", _task("t1", "one"))
    assert await _titles(store) == ["one"]
    assert await _tracked(store).write([("DEL", keys.TASKS)]) == [1]
    assert r.hlen(keys.TASKS) == 0
    assert await _titles(store) == []


# -- the fields the gateway's own writes added ----------------------------------------------------


async def _tasks_hash(store: LegacyStore) -> dict[str, str]:
    return await store.records.hgetall_raw(keys.TASKS)


async def test_appended_names_the_fields_own_creates_added_and_nothing_else(
    store: LegacyStore, r: redis.Redis
) -> None:
    """`appended` names the fields the gateway's own creates added between two tracked dicts, in
    order, and answers None across an update, another client's write, or a hash it did not make."""
    tracked = _tracked(store)
    await store.create_task(c.CreateTask.parse({"title": "first", "createdBy": "ann"}, NOW, ids))
    d0 = await _tasks_hash(store)
    one = await store.create_task(c.CreateTask.parse({"title": "a", "createdBy": "ann"}, NOW, ids))
    d1 = await _tasks_hash(store)
    two = await store.create_task(c.CreateTask.parse({"title": "b", "createdBy": "ann"}, NOW, ids))
    d2 = await _tasks_hash(store)
    assert tracked.appended(keys.TASKS, d0, d2) == [one.id, two.id]
    assert tracked.appended(keys.TASKS, d1, d2) == [two.id]
    assert list(d2) == [*d0, one.id, two.id]
    assert tracked.appended(keys.TASKS, d2, d0) is None  # not newer
    await store.update_task(c.UpdateTask.parse({"id": one.id, "status": "done"}, NOW + 1))
    d3 = await _tasks_hash(store)
    three = await store.create_task(c.CreateTask.parse({"title": "c", "createdBy": "ann"}, NOW, ids))
    d4 = await _tasks_hash(store)
    assert tracked.appended(keys.TASKS, d2, d4) is None  # the update changed a field between them
    assert tracked.appended(keys.TASKS, d3, d4) == [three.id]
    r.hset(keys.TASKS, "x1", _task("x1", "other"))  # another client: the kept copy is dropped
    d5 = await _tasks_hash(store)
    four = await store.create_task(c.CreateTask.parse({"title": "d", "createdBy": "ann"}, NOW, ids))
    d6 = await _tasks_hash(store)
    assert tracked.appended(keys.TASKS, d4, d6) is None
    assert tracked.appended(keys.TASKS, d5, d6) == [four.id]
    assert tracked.appended(keys.TASKS, dict(d5), d6) is None  # an equal dict it did not hand out


async def test_task_listings_left_behind_by_many_writes_are_the_ones_read_afresh(
    store: LegacyStore, r: redis.Redis
) -> None:
    """Listings that last looked many own creates ago (more than the cache remembers), or before
    an update or another client's write followed by creates, are those of a store reading afresh."""
    queries = [{"limit": "1000"}, {"status": "todo"}, {"assignee": "bob"}]

    async def listed(s: LegacyStore) -> list[list[str]]:
        return [[t.id for t in await s.list_tasks(c.ListTasks.parse(q, 1000))] for q in queries]

    async def create(n: int, at: int = NOW) -> None:
        for i in range(n):
            body = {"title": f"t{i}", "createdBy": "ann", "assignee": ["bob", "cy"][i % 2]}
            await store.create_task(c.CreateTask.parse(body, at + i % 3, ids))

    await create(3)
    assert await listed(store) == await listed(_afresh(store))
    await create(APPENDS_KEPT + 3)  # more than the cache remembers: compared instead
    assert await listed(store) == await listed(_afresh(store))
    await create(2)
    first = (await store.list_tasks(c.ListTasks.parse({"limit": "1"}, 1000)))[0]
    await store.update_task(c.UpdateTask.parse({"id": first.id, "status": "done"}, NOW + 9))
    await create(2)
    assert await listed(store) == await listed(_afresh(store))
    await create(2)
    r.hset(keys.TASKS, "x9", _task("x9", "other").replace("2024", "2099"))
    await create(2, NOW - 5)
    assert await listed(store) == await listed(_afresh(store))
