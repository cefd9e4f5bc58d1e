"""write-through sends Redis only what a command needs: no entity is read back to be replicated
(the replica takes what the command wrote), and /work is one round trip.

Counted with Redis's own `INFO commandstats` on the test's private server, around one request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis

from gateway.legacy import keys

from .conftest import GwFactory
from .helpers import Client


def _calls(r: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


async def _commands(r: redis.Redis, request: Callable[[], Awaitable[Any]]) -> dict[str, int]:
    """The Redis commands (name -> calls) that `request` caused."""
    return (await _answer_and_commands(r, request))[1]


async def _answer_and_commands(
    r: redis.Redis, request: Callable[[], Awaitable[Any]]
) -> tuple[Any, dict[str, int]]:
    before = _calls(r)
    answer = await request()
    after = _calls(r)
    grown = {name: n - before.get(name, 0) for name, n in after.items()}
    return answer, {name: n for name, n in grown.items() if n and name != "info"}


async def test_work_is_one_round_trip_and_replicates_what_it_wrote(start_gw: GwFactory) -> None:
    gw = await start_gw("write-through")
    c: Client = gw.client
    await c.ok("POST", "/coordinator/agents", {"agentId": "alice", "status": "idle"})
    await gw.legacy_cache_up()
    await c.ok("POST", "/coordinator/chat", {"author": "bob", "message": "hi @alice"})
    await c.ok("POST", "/coordinator/tasks", {"title": "Port it", "createdBy": "bob", "assignee": "alice"})

    for _ in range(2):  # Redis learns the heartbeat script; the chat list is kept
        await c.ok("GET", "/coordinator/work?agentId=alice")
    work, sent = await _answer_and_commands(
        gw.legacy.r, lambda: c.ok("GET", "/coordinator/work?agentId=alice")
    )

    # sent together on the tracking connection: the heartbeat decided on the agent held in
    # memory [MULTI, EVALSHA (its HGET and HSET), HLEN, EXEC] and a PING: both hashes and the
    # chat list are held in memory since the first /work (gateway.legacy.tracking); no chat
    # script, nothing read back
    assert sent == {"evalsha": 1, "hget": 1, "multi": 1, "hset": 1, "hlen": 1, "exec": 1, "ping": 1}
    assert [m["message"] for m in work["inbox"]["pendingMentions"]] == ["hi @alice"]
    assert [t["title"] for t in work["tasks"]["mine"]] == ["Port it"]
    assert [a["agentId"] for a in work["team"]] == ["alice"]  # listed as the heartbeat left it
    assert work["team"][0]["status"] == "active"
    assert [m["message"] for m in work["recentChat"]] == ["hi @alice"]
    # the heartbeat /work wrote reached the actors as Redis holds it
    assert gw.actors.snapshot()["agent"] == gw.legacy.snapshot()["agent"]
    assert gw.legacy.hash(keys.ACTIVE_AGENTS)["alice"]["status"] == "active"

    # another client's change of the tasks hash: that hash, and only it, is read again
    raw = str(gw.legacy.r.hget(keys.TASKS, work["tasks"]["mine"][0]["id"]))
    gw.legacy.r.hset(keys.TASKS, work["tasks"]["mine"][0]["id"], raw.replace("Port it", "Port it all"))
    work, sent = await _answer_and_commands(
        gw.legacy.r, lambda: c.ok("GET", "/coordinator/work?agentId=alice")
    )
    assert sent["hgetall"] == 1
    assert [t["title"] for t in work["tasks"]["mine"]] == ["Port it all"]


async def test_writes_replicate_without_reading_redis_again(start_gw: GwFactory) -> None:
    gw = await start_gw("write-through")
    c: Client = gw.client
    r = gw.legacy.r
    await c.ok("POST", "/coordinator/agents", {"agentId": "alice", "status": "idle"})
    await gw.legacy_cache_up()

    post = {"author": "alice", "message": "x"}
    # on the tracking connection, with the LLEN that keeps Redis tracking the chat list for it
    assert await _commands(r, lambda: c.ok("POST", "/coordinator/chat", post)) == {
        "multi": 1,
        "lpush": 1,
        "ltrim": 1,
        "llen": 1,
        "exec": 1,
    }
    create = {"title": "T", "createdBy": "alice"}
    # on the tracking connection, with the HLEN that keeps Redis tracking the hash for it
    assert await _commands(r, lambda: c.ok("POST", "/coordinator/tasks", create)) == {
        "multi": 1,
        "hsetnx": 1,
        "hlen": 1,
        "exec": 1,
    }
    checkpoint = {"conversationSummary": "s", "pendingWork": ["p"]}
    await c.ok("POST", "/agent/alice/checkpoint", checkpoint)  # loads the compare-and-set script
    # one round trip: decided on the value this process last saw (its own write), written by
    # the compare-and-set script (its own HGET and HSET count too)
    assert await _commands(r, lambda: c.ok("POST", "/agent/alice/checkpoint", checkpoint)) == {
        "evalsha": 1,
        "hget": 1,
        "hset": 1,
    }
    lock = "/lock/src%2Fb.ts/lock"
    # a lock never seen: taken as missing, the script alone (its own HGET); no read before it
    # and none after it
    assert await _commands(r, lambda: c.ok("POST", lock, {"agentId": "alice"})) == {
        "hget": 1,
        "evalsha": 1,
        "hset": 1,
    }
    # a lock seen before (a check read it): the script alone
    await c.ok("GET", "/lock/src%2Fc.ts/check")
    assert await _commands(r, lambda: c.ok("POST", "/lock/src%2Fc.ts/lock", {"agentId": "alice"})) == {
        "hget": 1,
        "evalsha": 1,
        "hset": 1,
    }
    # a DM in one round trip: decided on the values this process last saw (alice's list, as
    # the DM to carol left it), the fields it never saw (the conversation, bob's list) taken as
    # missing, and written by the compare-and-set script (its HGETs of the four fields, then
    # the four HSETs); the replica takes the message from the conversation written, no inbox read
    await c.ok("POST", "/agent/carol/messages", {"from": "alice", "message": "loads the script"})
    dm = {"from": "alice", "message": "hello"}
    assert await _commands(r, lambda: c.ok("POST", "/agent/bob/messages", dm)) == {
        "hget": 4,
        "evalsha": 1,
        "hset": 4,
    }
    # the next DM of the conversation: the script alone again (alice's and bob's lists hold it)
    assert await _commands(r, lambda: c.ok("POST", "/agent/bob/messages", dm)) == {
        "hget": 4,
        "evalsha": 1,
        "hset": 2,
    }
    # /state in one round trip: a script reads the conversation list, the memories, the
    # checkpoint and the conversations (HGET, HGETALL, HGET, HMGET)
    await c.ok("GET", "/agent/bob/state")  # loads the script
    assert await _commands(r, lambda: c.ok("GET", "/agent/bob/state")) == {
        "evalsha": 1,
        "hget": 2,
        "hgetall": 1,
        "hmget": 1,
    }
    # every entity reached the actors as Redis holds it
    legacy, actors = gw.legacy.snapshot(), gw.actors.snapshot()
    assert actors == legacy


async def test_a_lock_check_that_changes_nothing_is_a_read(start_gw: GwFactory) -> None:
    """In write-through a check of a held lock answers it with one HGET and replicates nothing;
    a check that finds the lock expired still removes it from Redis and from the actors."""
    gw = await start_gw("write-through")
    c: Client = gw.client
    r = gw.legacy.r
    await c.ok("POST", "/lock/src%2Fa.ts/lock", {"agentId": "alice", "ttlMs": 1000})
    replicated = (await c.status())["replication"]["replicated"]

    check, sent = await _answer_and_commands(r, lambda: c.ok("GET", "/lock/src%2Fa.ts/check"))
    assert sent == {"hget": 1}
    assert check["locked"] is True
    assert check["lock"]["remainingMs"] == 1000
    free, sent = await _answer_and_commands(r, lambda: c.ok("GET", "/lock/src%2Fb.ts/check"))
    assert sent == {"hget": 1}
    assert free["locked"] is False
    assert (await c.status())["replication"]["replicated"] == replicated

    await gw.clock.advance(1_001)
    # the lock this process saw has expired: the compare-and-set script alone removes it (its
    # own HGET and HDEL)
    expired, sent = await _answer_and_commands(r, lambda: c.ok("GET", "/lock/src%2Fa.ts/check"))
    assert sent == {"hget": 1, "evalsha": 1, "hdel": 1}
    assert expired == {"locked": False, "resourcePath": "src/a.ts", "note": "Previous lock expired"}
    assert r.hget(keys.LOCKS, "src/a.ts") is None
    assert (await c.status())["replication"]["replicated"] == replicated + 1
    legacy, actors = gw.legacy.snapshot(), gw.actors.snapshot()
    assert actors["lock"] == legacy["lock"] == {}


async def test_a_lock_check_does_not_wait_for_the_locks_replication(start_gw: GwFactory) -> None:
    """A check answers what Redis holds at once, even while an acquire of the same lock is still
    being copied into the actors (the acquire answers when its copy is done)."""
    gw = await start_gw("write-through")
    c: Client = gw.client
    replica = gw.router.replicas["actors"]
    write_entity = replica.write_entity
    release = asyncio.Event()

    async def slow_write(key: Any, value: Any) -> None:
        await release.wait()
        await write_entity(key, value)

    replica.write_entity = slow_write  # type: ignore[method-assign]
    acquire = asyncio.create_task(c.ok("POST", "/lock/src%2Fa.ts/lock", {"agentId": "alice"}))
    for _ in range(200):  # bounded: until Redis holds the lock
        if gw.legacy.r.hget(keys.LOCKS, "src/a.ts") is not None:
            break
        await asyncio.sleep(0.005)
    check = await asyncio.wait_for(c.ok("GET", "/lock/src%2Fa.ts/check"), 5)
    assert check["locked"] is True
    assert not acquire.done()
    release.set()
    assert (await asyncio.wait_for(acquire, 5))["success"] is True
    assert gw.actors.snapshot()["lock"] == gw.legacy.snapshot()["lock"]


async def test_a_lock_never_seen_is_decided_on_what_redis_holds(start_gw: GwFactory) -> None:
    """An acquire of a lock this process never saw, held in Redis by another writer, is refused
    with that holder (the compare-and-set that guessed it free answers it), and one whose
    holder's lock has expired is taken over; a lock nobody holds is taken by the script alone."""
    gw = await start_gw("write-through")
    c: Client = gw.client
    r = gw.legacy.r
    await c.ok("POST", "/lock/src%2Fa.ts/lock", {"agentId": "bob", "ttlMs": 60_000})
    await c.ok("POST", "/lock/src%2Fb.ts/lock", {"agentId": "bob", "ttlMs": 1_000})
    # another writer's locks, on paths this process never saw
    held = str(r.hget(keys.LOCKS, "src/a.ts")).replace("src/a.ts", "src/held.ts")
    old = str(r.hget(keys.LOCKS, "src/b.ts")).replace("src/b.ts", "src/old.ts")
    r.hset(keys.LOCKS, mapping={"src/held.ts": held, "src/old.ts": old})
    await gw.clock.advance(1_001)

    refused, sent = await _answer_and_commands(
        r, lambda: c.call("POST", "/lock/src%2Fheld.ts/lock", {"agentId": "alice"})
    )
    assert refused[0] == 409
    assert refused[1]["lockedBy"] == "bob"
    assert sent == {"evalsha": 1, "hget": 1}  # the guess failed: nothing written, no read either
    assert r.hget(keys.LOCKS, "src/held.ts") == held
    taken = await c.ok("POST", "/lock/src%2Fold.ts/lock", {"agentId": "alice"})
    assert taken["success"] is True
    assert orjson.loads(str(r.hget(keys.LOCKS, "src/old.ts")))["lockedBy"] == "alice"
    free, sent = await _answer_and_commands(
        r, lambda: c.ok("POST", "/lock/src%2Fnew.ts/lock", {"agentId": "alice"})
    )
    assert free["success"] is True
    assert sent == {"evalsha": 1, "hget": 1, "hset": 1}
    actors, legacy = gw.actors.snapshot()["lock"], gw.legacy.snapshot()["lock"]
    mine = ("src/old.ts", "src/new.ts")  # what this process wrote (the others' it never copies)
    assert [actors[p] for p in mine] == [legacy[p] for p in mine]
