"""The bulk layer's read side on real stores: every entity of the legacy Redis and of the actors,
in one deterministic order, resumable from any cursor, and by key."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.bulk.actor_side import ActorSide
from gateway.bulk.items import Item, Selection, cursor_of, order_key
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.remote import AdminRejected, RemoteActorSide
from gateway.bulk.sides import ActorEndpoint, open_actor_side
from gateway.domain.entities import PER_AGENT, Entity, EntityKey, Unreadable
from gateway.domain.model import Claim
from gateway.errors import ActorOwnedElsewhere
from gateway.legacy import keys
from gateway.legacy import mapping as m
from gateway.legacy.generator import SeedSummary
from gateway.testing.gateway_process import GatewayProcess
from gateway.testing.snapshots import Snapshot, empty_snapshot, legacy_snapshot
from tests.bulk.conftest import settings_for

pytestmark = pytest.mark.integration


async def scan_all(side: Any, selection: Selection | None = None, **kw: Any) -> list[Item]:
    out: list[Item] = []
    async for batch in side.scan(selection or Selection.of(), **kw):
        assert len(batch) <= kw.get("batch", 500)
        out.extend(batch)
    return out


def snapshot_of(items: list[Item]) -> Snapshot:
    snap = empty_snapshot()
    for key, value in items:
        if isinstance(value, Unreadable):
            continue
        form = m.canonical(value)
        if key.domain in PER_AGENT:
            form["agent"] = key.scope
        snap[key.domain][key.scope if key.domain == "checkpoint" else key.id] = form
    return snap


def plain(value: Any) -> Any:
    return dataclasses.replace(value, stale=False) if isinstance(value, Claim) else value


def assert_in_scan_order(items: list[Item]) -> None:
    order = [order_key(k) for k, _ in items]
    assert order == sorted(order)
    assert len(set(order)) == len(order), "a key came twice"


async def test_legacy_scan_reads_every_entity_in_order(
    legacy: LegacySource, redis_url: str, seeded: SeedSummary
) -> None:
    items = await scan_all(legacy, batch=7)
    assert_in_scan_order(items)
    # field by field, the entities the legacy store serves (as read behind its back)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert snapshot_of(items) == legacy_snapshot(r)
    finally:
        r.close()
    # the unreadable ones are exactly the corrupt values the generator planted (presence is no entity)
    planted = {(k, f) for k, f in seeded.corrupt if k != keys.AGENT_PRESENCE}
    bad = [v for _, v in items if isinstance(v, Unreadable)]
    assert len(bad) == len(planted)
    for hash_key, fld in planted:
        assert any(b.reason.startswith(f"{hash_key} {fld or ''}".strip()) for b in bad), (hash_key, fld)
    assert all(b.raw for b in bad)
    # several claims for one `what` are known conflicts, not errors
    assert legacy.conflicts
    assert all(c.others and c.winner not in c.others for c in legacy.conflicts)


async def test_legacy_scan_resumes_after_any_cursor(legacy: LegacySource) -> None:
    items = await scan_all(legacy, batch=50)
    memories = [i for i, (k, _) in enumerate(items) if k.domain == "memory"]
    assert len(memories) > 3
    inside = (memories[0], memories[len(memories) // 2], memories[-1])  # the memory domain's own resume
    for cut in (0, 1, len(items) // 3, len(items) // 2, len(items) - 2, *inside):
        tail = await scan_all(legacy, start_after=cursor_of(items[cut][0]), batch=13)
        assert [k for k, _ in tail] == [k for k, _ in items[cut + 1 :]], cut


async def test_legacy_scan_filters_by_domain_and_agent(legacy: LegacySource) -> None:
    items = await scan_all(legacy)
    tasks = await scan_all(legacy, Selection.of(["task", "lock"]))
    assert tasks == [it for it in items if it[0].domain in ("task", "lock")]
    agent = next(k.scope for k, _ in items if k.domain == "dm")
    mine = await scan_all(legacy, Selection.of(None, [agent]))
    assert mine
    assert {k.domain for k, _ in mine} <= {"agent", "checkpoint", "dm", "memory"}
    assert all((k.id if k.domain == "agent" else k.scope) == agent for k, _ in mine)
    with pytest.raises(ValueError, match="unknown domain 'tasks'"):
        Selection.of(["tasks"])


async def test_legacy_read_many_reads_what_the_scan_read(legacy: LegacySource) -> None:
    items = await scan_all(legacy)
    wanted = [(k, v) for k, v in items if not isinstance(v, Unreadable)][::5]
    found = await legacy.read_many([k for k, _ in wanted] + [EntityKey("task", "", "no-such-task")])
    for key, value in wanted:
        assert plain(found[key]) == plain(value), key
    assert found[EntityKey("task", "", "no-such-task")] is None
    counts = await legacy.count(Selection.of())
    assert counts is not None
    assert counts["task"] == sum(1 for k, _ in items if k.domain == "task")


async def fill_actors(data_dir: Path, items: list[Item]) -> list[tuple[EntityKey, Entity]]:
    """Every readable legacy entity written to the actors one by one (the replicas' own path)."""
    # an expired lock is no lock: its alarm expires it as soon as the host's loop runs it
    written = [(k, v) for k, v in items if not isinstance(v, Unreadable) and k.domain != "lock"]
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as side:
        assert isinstance(side, ActorSide)
        for key, value in written:
            await side.replica.write_entity(key, value)
    return written


async def test_actor_scan_reads_every_entity_in_order(legacy: LegacySource, tmp_path: Path) -> None:
    data_dir = tmp_path / "actors"
    written = await fill_actors(data_dir, await scan_all(legacy))
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as side:
        items = await scan_all(side, batch=9)
        assert_in_scan_order(items)
        assert [k for k, _ in items] == sorted((k for k, _ in written), key=order_key)
        held = dict(items)
        for key, value in written:
            assert plain(held[key]) == plain(value), key  # every field, `extra` included
        for cut in (0, len(items) // 2, len(items) - 2):
            tail = await scan_all(side, start_after=cursor_of(items[cut][0]), batch=11)
            assert [k for k, _ in tail] == [k for k, _ in items[cut + 1 :]]
        sample = [*[k for k, _ in written][::7], EntityKey("dm", "nobody-at-all", "x")]
        found = await side.read_many(sample)
        assert all(plain(found[k]) == plain(held[k]) for k in sample[:-1])
        assert found[sample[-1]] is None
        assert isinstance(side, ActorSide)
        assert "nobody-at-all" not in side.replica.names("agent")  # reading created no actor


async def test_actor_batch_writes_are_idempotent(legacy: LegacySource, tmp_path: Path) -> None:
    data_dir = tmp_path / "actors"
    items = [(k, v) for k, v in await scan_all(legacy) if not isinstance(v, Unreadable)]
    # the generated locks expired long ago: an expired lock is no lock, and is not carried
    assert all(k.domain == "lock" for k, _ in items[-8:])
    items = [(k, v) for k, v in items if k.domain != "lock"]
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as side:
        dry = await side.write_batch(items, dry_run=True)
        assert sum(dry.written.values()) == len(items)
        assert await scan_all(side) == []  # a dry run wrote nothing
        first = await side.write_batch(items)
        assert sum(first.written.values()) == len(items)
        again = await side.write_batch(items)
        assert again.written == {}
        assert sum(again.unchanged.values()) == len(items)
        assert [k for k, _ in await scan_all(side)] == sorted((k for k, _ in items), key=order_key)


async def test_a_running_gateway_serves_the_scan_through_its_admin_api(
    legacy: LegacySource, tmp_path: Path
) -> None:
    data_dir = tmp_path / "actors"
    written = await fill_actors(data_dir, await scan_all(legacy))
    # the generated locks expired long ago: the running gateway's alarms remove them at start
    written = [(k, v) for k, v in written if k.domain != "lock"]
    with GatewayProcess(data_dir) as gw:
        token = (data_dir / "admin-token").read_text().strip()
        settings = settings_for(data_dir)
        # the directory is the gateway's: the tool may not open it
        with pytest.raises(ActorOwnedElsewhere):
            async with open_actor_side(settings, ActorEndpoint(data_dir=data_dir)):
                pass
        async with open_actor_side(settings, ActorEndpoint(gw.url, token, data_dir)) as side:
            assert isinstance(side, RemoteActorSide)
            items = await scan_all(side, batch=10)
            assert [k for k, _ in items] == sorted((k for k, _ in written), key=order_key)
            held = dict(items)
            assert all(plain(held[k]) == plain(v) for k, v in written)
            tail = await scan_all(side, start_after=cursor_of(items[20][0]), batch=10)
            assert tail == items[21:]
            found = await side.read_many([k for k, _ in written][:30])
            assert all(plain(found[k]) == plain(v) for k, v in written[:30])
            counts = await side.count(Selection.of())
            assert counts is not None
            assert counts["checkpoint"] == len({k.scope for k, _ in written if k.domain in PER_AGENT})
            again = await side.write_batch(written)
            assert sum(again.unchanged.values()) == len(written)
        wrong = RemoteActorSide(gw.url, "not-the-token")
        try:
            with pytest.raises(AdminRejected, match="401"):
                await scan_all(wrong)
        finally:
            await wrong.close()
        await asyncio.sleep(0)
