"""The actor side's batched write path on real stores: agents' checkpoints, DMs and memories
shard by shard without activating any agent, the coordinator's domains in one turn, and the
import's rules kept: the newer copy wins, `extra` is carried and removed, a row the target cannot
read is left alone, and every agent written is listed."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorRef
from gateway.actors.layout import shard_of, shard_path
from gateway.bulk.actor_side import ActorSide
from gateway.bulk.items import Selection
from gateway.bulk.legacy_side import LegacySource
from gateway.bulk.sides import ActorEndpoint, open_actor_side
from gateway.domain.entities import Entity, EntityKey, Unreadable
from gateway.domain.model import Checkpoint, DirectMessage, Memory, Task
from tests.bulk.conftest import settings_for

pytestmark = pytest.mark.integration


async def items_of(legacy: LegacySource) -> list[tuple[EntityKey, Entity]]:
    out: list[tuple[EntityKey, Entity]] = []
    async for batch in legacy.scan(Selection.of()):
        out += [(k, v) for k, v in batch if not isinstance(v, Unreadable) and k.domain != "lock"]
    return out


def first(items: list[tuple[EntityKey, Entity]], kind: type[Any]) -> tuple[EntityKey, Any]:
    return next((k, v) for k, v in items if isinstance(v, kind))


async def test_agents_rows_are_written_without_activations_and_listed(
    legacy: LegacySource, tmp_path: Path
) -> None:
    items = await items_of(legacy)
    per_agent = [(k, v) for k, v in items if k.domain in ("checkpoint", "dm", "memory")]
    async with open_actor_side(settings_for(tmp_path / "d"), ActorEndpoint(data_dir=tmp_path / "d")) as side:
        assert isinstance(side, ActorSide)
        host = side.replica.host
        result = await side.write_batch(per_agent)
        assert sum(result.written.values()) == len(per_agent)
        assert host.activations == 0  # no agent was activated to write its rows
        assert set(side.replica.names("agent")) >= {k.scope for k, _ in per_agent}
        held = await side.read_many([k for k, _ in per_agent])  # through the agents' own turns
        for key, value in per_agent:
            assert held[key] == value, key  # every field, `extra` included


async def test_the_newer_copy_wins_in_both_paths(legacy: LegacySource, tmp_path: Path) -> None:
    """The target's copy is kept when strictly newer (a checkpoint's `checkpointAt`, a task's
    `updatedAt`, a DM's `read`), and overwritten when older or equally old."""
    items = await items_of(legacy)
    cp_key, cp = first(items, Checkpoint)
    task_key, task = first(items, Task)
    dm_key, dm = next((k, v) for k, v in items if isinstance(v, DirectMessage) and not v.read)
    async with open_actor_side(settings_for(tmp_path / "d"), ActorEndpoint(data_dir=tmp_path / "d")) as side:
        newer_cp = dataclasses.replace(cp, checkpoint_at="2999-01-01T00:00:00.000Z", recent_context="live")
        newer_task = dataclasses.replace(task, updated_at="2999-01-01T00:00:00.000Z", title="live")
        read_dm = dataclasses.replace(dm, read=True)
        await side.write_batch([(cp_key, newer_cp), (task_key, newer_task), (dm_key, read_dm)])
        result = await side.write_batch([(cp_key, cp), (task_key, task), (dm_key, dm)])
        assert result.skipped == {"checkpoint": 1, "task": 1, "dm": 1}
        assert set(result.skipped_keys) == {cp_key, task_key, dm_key}
        held = await side.read_many([cp_key, task_key, dm_key])
        assert held == {cp_key: newer_cp, task_key: newer_task, dm_key: read_dm}
        # an equally old copy with other content is overwritten (as recent as the target's)
        same_age = dataclasses.replace(newer_cp, recent_context="the import's")
        result = await side.write_batch([(cp_key, same_age)])
        assert result.written == {"checkpoint": 1}
        assert (await side.read_many([cp_key]))[cp_key] == same_age


async def test_extra_fields_are_carried_and_removed(legacy: LegacySource, tmp_path: Path) -> None:
    items = await items_of(legacy)
    mem_key, mem = first(items, Memory)
    task_key, task = first(items, Task)
    async with open_actor_side(settings_for(tmp_path / "d"), ActorEndpoint(data_dir=tmp_path / "d")) as side:
        with_extra = [
            (mem_key, dataclasses.replace(mem, extra={"legacyOnly": 1})),
            (task_key, dataclasses.replace(task, extra={"pickedUpAt": "x"})),
        ]
        await side.write_batch(with_extra)
        assert await side.read_many([mem_key, task_key]) == dict(with_extra)
        without = [
            (mem_key, dataclasses.replace(mem, extra={})),
            (task_key, dataclasses.replace(task, extra={})),
        ]
        result = await side.write_batch(without)
        assert result.written == {"memory": 1, "task": 1}
        assert await side.read_many([mem_key, task_key]) == dict(without)


async def test_a_row_the_target_cannot_read_is_left_alone(legacy: LegacySource, tmp_path: Path) -> None:
    items = await items_of(legacy)
    mem_key, mem = first(items, Memory)
    other_key, other = next((k, v) for k, v in items if isinstance(v, Memory) and k.scope != mem_key.scope)
    data_dir = tmp_path / "d"
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as side:
        await side.write_batch([(mem_key, mem)])
    shard = shard_of(ActorRef("agent", mem_key.scope), settings_for(data_dir).storage.shards)
    with sqlite3.connect(shard_path(data_dir, shard)) as db:  # its extra fields: not JSON
        db.execute(
            "INSERT OR REPLACE INTO agent___extra VALUES (?, 'memory', ?, '{]')", (mem_key.scope, mem_key.id)
        )
    async with open_actor_side(settings_for(data_dir), ActorEndpoint(data_dir=data_dir)) as side:
        changed = dataclasses.replace(mem, content="other content")
        result = await side.write_batch([(mem_key, changed), (other_key, other)])
        assert result.skipped == {"memory": 1}  # never overwritten
        assert result.written == {"memory": 1}  # the agent beside it is written all the same
