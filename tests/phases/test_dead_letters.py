"""Legacy values of the wrong type, and repairs that keep failing (issue 15, finding 6).

In write-through a task value `{"id":5,"title":["x"],"status":null}` made `PATCH
/coordinator/tasks` answer `500 ProgrammingError` (the array reached the actors' SQL) and left a
repair entry failing forever, which would have blocked read-switch; `GET` handed the array to
clients. Now the value is unreadable through the mapping: skipped on reads, a 409 naming the key
on writes, counted; and a repair that keeps failing moves to the dead-letter list after
`migration.repair_max_attempts`, where the guards see it and an operator retries or drops it.
"""

from __future__ import annotations

from gateway.legacy import keys

from .conftest import Gw, GwFactory
from .helpers import poll

WRONG_TYPES = '{"id":5,"title":["x"],"status":null}'


async def metrics(gw: Gw) -> str:
    status, _ = await gw.client.admin("GET", "/admin/status")  # the token check, as a scrape
    assert status == 200
    async with gw.session.get(
        gw.client.url("/admin/metrics"), headers={"Authorization": f"Bearer {gw.client.admin_token}"}
    ) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_write_through_a_task_of_the_wrong_types_is_unreadable(start_gw: GwFactory) -> None:
    """The issue's example: PATCH answers 409 naming the key (not a 500), nothing is written or
    queued, GET skips the value, and the metrics count it as corrupt."""
    gw = await start_gw("write-through")
    gw.legacy.r.hset(keys.TASKS, "5", WRONG_TYPES)
    await gw.client.ok("POST", "/coordinator/tasks", {"id": "ok", "title": "fine"})

    status, body = await gw.client.call("PATCH", "/coordinator/tasks", {"id": "5", "status": "done"})
    assert status == 409, body
    assert body["key"] == keys.TASKS
    assert body["field"] == "5"
    assert "unreadable" in body["error"]
    assert gw.legacy.r.hget(keys.TASKS, "5") == WRONG_TYPES  # left as it was
    assert (await gw.client.status())["repairQueue"]["depth"] == 0
    assert gw.runtime.queue.all() == []

    listed = await gw.client.ok("GET", "/coordinator/tasks")
    assert [t["id"] for t in listed["tasks"]] == ["ok"]
    assert 'agent_coord_legacy_corrupt_values_total{key="agent-coord:tasks"}' in await metrics(gw)


async def dead_lettered(gw: Gw) -> None:
    async def buried() -> bool:
        await gw.clock.advance(61_000)
        return int((await gw.client.status())["repairQueue"]["deadLetters"]) == 1

    await poll(buried, what="the failing repair to be dead-lettered")


async def test_a_repair_that_keeps_failing_is_dead_lettered_and_blocks_until_retried(
    start_gw: GwFactory,
) -> None:
    """read-switch: the actors take a task whose Redis copy holds wrong types; its repair fails
    `repair_max_attempts` times, then leaves the queue for the dead-letter list (status, metrics),
    which blocks cutover. Fixed in Redis and retried, it is repaired and cutover is allowed."""
    gw = await start_gw("read-switch", repair_max_attempts=3)
    gw.legacy.r.hset(keys.TASKS, "t-bad", WRONG_TYPES)
    await gw.client.ok("POST", "/coordinator/tasks", {"id": "t-bad", "title": "mine"})
    assert [e.key.id for e in gw.runtime.queue.all()] == ["t-bad"]

    await dead_lettered(gw)
    status = await gw.client.status()
    assert status["repairQueue"]["depth"] == 0
    (letter,) = status["deadLetters"]
    assert (letter["domain"], letter["id"], letter["target"]) == ("task", "t-bad", "legacy")
    assert letter["attempts"] == 3
    assert "unreadable" in letter["reason"]
    assert "agent_coord_repair_dead_letters 1.0" in await metrics(gw)

    code, refused = await gw.client.set_phase("cutover")
    assert code == 409
    assert any("dead-letter" in r for r in refused["reasons"]), refused

    gw.legacy.r.hdel(keys.TASKS, "t-bad")  # the operator removes the bad value
    code, listed = await gw.client.admin("GET", "/admin/repair/dead-letters")
    assert code == 200
    assert [d["seq"] for d in listed["deadLetters"]] == [letter["seq"]]
    code, done = await gw.client.admin(
        "POST", "/admin/repair/dead-letters", {"action": "retry", "seqs": [letter["seq"]]}
    )
    assert (code, done["count"]) == (200, 1)

    async def repaired() -> bool:
        await gw.clock.advance(1_000)
        return int((await gw.client.status())["repairQueue"]["depth"]) == 0

    await poll(repaired, what="the retried entry to be repaired")
    assert gw.legacy.hash(keys.TASKS)["t-bad"]["title"] == "mine"
    code, change = await gw.client.set_phase("cutover")
    assert code == 200, change


async def test_a_dropped_dead_letter_unblocks_and_bad_requests_are_400(start_gw: GwFactory) -> None:
    """Dropping accepts the difference: the list empties and the guard no longer refuses on it;
    an action without a selection, or with a bad one, is a 400."""
    gw = await start_gw("read-switch", repair_max_attempts=2)
    gw.legacy.r.hset(keys.TASKS, "t-bad", WRONG_TYPES)
    await gw.client.ok("POST", "/coordinator/tasks", {"id": "t-bad", "title": "mine"})
    await dead_lettered(gw)

    for bad in (
        {"action": "retry"},
        {"action": "explode", "all": True},
        {"action": "drop", "seqs": ["1"]},
        {"action": "drop", "seqs": [1], "all": True},
        {"action": "drop", "seqs": []},
    ):
        code, body = await gw.client.admin("POST", "/admin/repair/dead-letters", bad)
        assert code == 400, (bad, body)
    code, done = await gw.client.admin("POST", "/admin/repair/dead-letters", {"action": "drop", "all": True})
    assert (code, done["count"]) == (200, 1)
    status = await gw.client.status()
    assert status["repairQueue"]["deadLetters"] == 0
    assert status["deadLetters"] == []
    assert gw.legacy.r.hget(keys.TASKS, "t-bad") == WRONG_TYPES  # dropping changes no store
    code, change = await gw.client.set_phase("cutover")
    assert code == 200, change
