"""Each phase puts every kind of write where migration.md "The four phases" says, and reads from there.

The stores are read behind the gateway's back: Redis with redis-py (the legacy keys) and the
actor SQLite files with sqlite3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.legacy import keys
from gateway.phases.router import in_rollout
from gateway.settings import MigrationSettings
from gateway.testing.gateway_process import GatewayProcess
from gateway.testing.snapshots import Snapshot, empty_snapshot

from .conftest import GwFactory
from .helpers import (
    LOCK_GONE,
    LOCK_KEPT,
    ActorView,
    Client,
    LegacyView,
    Written,
    new_session,
    poll,
    write_everything,
)


def expected(w: Written, snap: Snapshot) -> None:
    """`snap` holds exactly what `write_everything` left, whole, with the DO outcomes."""
    assert set(snap["agent"]) == {"alice", "bob"}
    alice = snap["agent"]["alice"]
    assert (alice["status"], alice["currentTask"], alice["capabilities"]) == ("active", "migrate", ["python"])
    assert list(snap["chat"]) == [w.chat_id]
    assert snap["chat"][w.chat_id]["message"] == "hi @bob"
    task = snap["task"][w.task_id]
    assert (task["title"], task["status"], task["assignee"]) == ("Port the router", "in-progress", "bob")
    assert (task["priority"], task["tags"], task["files"], task["description"]) == ("medium", [], [], None)
    assert list(snap["zone"]) == ["z-kept"]
    assert snap["zone"]["z-kept"]["path"] == "z-kept/"
    assert list(snap["claim"]) == ["w-kept"]
    assert snap["claim"]["w-kept"]["by"] == "alice"
    done, open_ = snap["handoff"][w.handoff_done], snap["handoff"][w.handoff_open]
    assert (done["status"], done["claimedBy"], done["context"]) == ("completed", "bob", "half done")
    assert done["completedAt"] is not None
    assert (open_["status"], open_["toAgent"], open_["claimedBy"]) == ("pending", None, None)
    checkpoint = snap["checkpoint"]["alice"]
    assert (checkpoint["conversationSummary"], checkpoint["pendingWork"]) == ("ported half", ["tests"])
    assert checkpoint["filesEdited"] == ["router.py"]
    assert {i: d["read"] for i, d in snap["dm"].items()} == {w.dm_read: True, w.dm_unread: False}
    assert {d["agent"] for d in snap["dm"].values()} == {"bob"}
    assert list(snap["memory"]) == [w.memory_id]
    memory = snap["memory"][w.memory_id]
    assert (memory["agent"], memory["content"], memory["tags"]) == ("alice", "WAL", ["sqlite"])
    assert snap["lock"] == {
        LOCK_KEPT: {
            "resourcePath": LOCK_KEPT,
            "resourceType": "file-lock",
            "lockedBy": "alice",
            "reason": "edit",
            "lockedAt": w.lock["lockedAt"],
            "expiresAt": w.lock["expiresAt"],
        }
    }


@pytest.mark.parametrize("phase", ["write-through", "read-switch"])
async def test_both_stores_hold_every_write_before_the_reply(start_gw: GwFactory, phase: str) -> None:
    """write-through and read-switch: after each reply both stores hold the same entities, with
    equal ids and timestamps (one execution, then replication)."""
    gw = await start_gw(phase)
    w = await write_everything(gw.client)
    legacy, actors = gw.legacy.snapshot(), gw.actors.snapshot()
    expected(w, legacy)
    assert actors == legacy
    assert gw.router.counters["queued"] == 0
    # the legacy layout itself, as the legacy API writes it
    assert gw.legacy.hash(keys.HANDOFFS)[w.handoff_done]["status"] == "integrated"
    assert gw.legacy.hash(keys.HANDOFFS)[w.handoff_open]["toAgent"] == "any"
    assert gw.legacy.r.hget(keys.AGENT_PRESENCE, "alice") == "online"
    assert gw.legacy.r.smembers(keys.memory_tag("sqlite")) == {w.memory_id}
    # the released lock is in the actor's history on the actor side only
    assert [(r[0], r[3]) for r in gw.actors.lock_history(LOCK_GONE)] == [("bob", "manual")]


async def test_cutover_writes_nothing_to_redis(start_gw: GwFactory) -> None:
    """cutover: the actors hold everything; Redis is not written at all."""
    gw = await start_gw("cutover")
    w = await write_everything(gw.client)
    expected(w, gw.actors.snapshot())
    assert gw.legacy.keys() == []


async def test_parallel_mirrors_to_the_actors_in_the_background(start_gw: GwFactory) -> None:
    """parallel: Redis holds every write at the reply; the actors get the same entities once the
    background mirrors finish."""
    gw = await start_gw("parallel")
    w = await write_everything(gw.client)
    expected(w, gw.legacy.snapshot())
    await gw.router.drain()
    assert gw.actors.snapshot() == gw.legacy.snapshot()
    assert gw.router.counters["mirror_failed"] == 0


@pytest.mark.parametrize(
    ("rollout", "mirrored"),
    [
        ({"rollout_agents": ("alice",)}, {"alice"}),
        ({"rollout_agents": ("bob",)}, {"bob"}),
        ({"rollout_percent": 0.0}, set()),
    ],
)
async def test_parallel_rollout_limits_per_agent_data(
    start_gw: GwFactory, rollout: dict[str, object], mirrored: set[str]
) -> None:
    """parallel with a rollout: per-agent data (checkpoints, DMs, memory) of agents outside the
    rollout set stays in Redis only; the coordinator's data is mirrored for everyone."""
    gw = await start_gw("parallel", **rollout)
    w = await write_everything(gw.client)
    await gw.router.drain()
    legacy, actors = gw.legacy.snapshot(), gw.actors.snapshot()
    expected(w, legacy)
    for domain in ("agent", "chat", "task", "zone", "claim", "handoff", "lock"):
        assert actors[domain] == legacy[domain], domain
    assert set(actors["checkpoint"]) == {"alice"} & mirrored
    assert {d["agent"] for d in actors["dm"].values()} == {"bob"} & mirrored
    assert {m["agent"] for m in actors["memory"].values()} == {"alice"} & mirrored
    for domain in ("checkpoint", "dm", "memory"):
        assert {k: v for k, v in legacy[domain].items() if k in actors[domain]} == actors[domain]


@pytest.mark.parametrize(
    ("phase", "served_from"),
    [("parallel", "legacy"), ("write-through", "legacy"), ("read-switch", "actors"), ("cutover", "actors")],
)
async def test_reads_come_from_the_authoritative_store(
    start_gw: GwFactory, phase: str, served_from: str
) -> None:
    """A task changed in Redis behind the gateway's back is served only where Redis is authoritative."""
    gw = await start_gw(phase)
    task = (await gw.client.ok("POST", "/coordinator/tasks", {"title": "original"}))["task"]
    await gw.router.drain()
    raw = gw.legacy.r.hget(keys.TASKS, task["id"])
    if raw is not None:
        gw.legacy.r.hset(keys.TASKS, task["id"], str(raw).replace('"original"', '"changed in redis"'))
    listed = (await gw.client.ok("GET", "/coordinator/tasks"))["tasks"]
    title = "changed in redis" if served_from == "legacy" else "original"
    assert [t["title"] for t in listed] == [title]


async def test_snapshot_helpers_see_an_empty_world(start_gw: GwFactory) -> None:
    """The direct readers find nothing before any write (so the tests above can fail)."""
    gw = await start_gw("write-through")
    assert gw.legacy.snapshot() == empty_snapshot()
    assert gw.actors.snapshot() == empty_snapshot()


async def test_parallel_sticky_percentage_mirrors_the_chosen_agents(start_gw: GwFactory) -> None:
    """parallel with `rollout_percent`: an agent the sticky hash puts in the rollout gets its
    checkpoint mirrored, one it leaves out does not."""
    settings = MigrationSettings(rollout_percent=50.0)
    candidates = [f"agent-{i}" for i in range(100)]
    inside = next(a for a in candidates if in_rollout(a, settings))
    outside = next(a for a in candidates if not in_rollout(a, settings))
    gw = await start_gw("parallel", rollout_percent=50.0)
    for agent in (inside, outside):
        await gw.client.ok("POST", f"/agent/{agent}/checkpoint", {"conversationSummary": agent})
    await gw.router.drain()
    assert set(gw.legacy.snapshot()["checkpoint"]) == {inside, outside}
    actors = gw.actors.snapshot()
    assert set(actors["checkpoint"]) == {inside}
    counted = (await gw.client.status())["replication"]
    assert (counted["mirror_skipped_rollout"], counted["replicated"], counted["mirror_failed"]) == (1, 1, 0)


@pytest.mark.integration
async def test_parallel_gateway_process_mirrors_in_the_background(
    gateway_proc: Callable[..., GatewayProcess], redis_url: str, data_dir: Path
) -> None:
    """A real gateway in parallel with an allow-list (AGENT_COORD_MIGRATION_ROLLOUT_AGENTS): Redis
    has each write at the reply; the actor files get the coordinator's data and the listed agent's
    data a little later (polled), the unlisted agent's never."""
    proc = gateway_proc(
        data_dir, redis_url, "parallel", env={"AGENT_COORD_MIGRATION_ROLLOUT_AGENTS": "alice"}
    ).start()
    legacy, actors = LegacyView(redis_url), ActorView(data_dir)
    try:
        async with new_session() as session:
            c = Client(proc.url, session)
            task = (await c.ok("POST", "/coordinator/tasks", {"title": "mirrored"}))["task"]
            for agent in ("alice", "bob"):
                await c.ok("POST", f"/agent/{agent}/memory", {"content": f"{agent}'s"})
            assert set(legacy.snapshot()["task"]) == {task["id"]}
            assert {m["agent"] for m in legacy.snapshot()["memory"].values()} == {"alice", "bob"}

            async def mirrored() -> bool:
                snap = actors.snapshot()
                return task["id"] in snap["task"] and len(snap["memory"]) == 1

            await poll(mirrored, what="the background mirror")
            snap = actors.snapshot()
            assert snap["task"] == legacy.snapshot()["task"]
            assert {m["agent"] for m in snap["memory"].values()} == {"alice"}
    finally:
        legacy.close()
    assert proc.stop() == 0
