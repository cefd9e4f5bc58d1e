"""gateway.do.replica.ActorReplica: entity upserts into the actor tables, as replication does them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost
from gateway.clock import FakeClock
from gateway.do.actor_store import ActorStore, build_actor_host
from gateway.do.replica import ActorReplica
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
from gateway.settings import LimitSettings

NOW = 1_795_627_727_041
MIN = 60_000
T = iso_from_ms(NOW)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[ActorHost]:
    h = build_actor_host(tmp_path, LimitSettings(), clock=FakeClock(NOW))
    await h.start()
    yield h
    await h.close()


ENTITIES: list[tuple[EntityKey, Any]] = [
    (EntityKey("agent", "", "phil"), Agent("phil", "active", "t", None, T, ["py"], None, ["help"])),
    (EntityKey("chat", "", "1-x"), GroupMessage("1-x", "a", "agent", "hello @phil", T, [])),
    (EntityKey("task", "", "task-9"),
     Task("task-9", "t", "d", "review", None, "c", "critical", ["x"], ["f.py"], T, T,
          extra={"pickedUpAt": T})),
    (EntityKey("zone", "", "web"), Zone("web", "web/", "phil", None, T)),
    (EntityKey("claim", "", "api/a.ts"), Claim("api/a.ts", "phil", "edit", T, stale=False)),
    (EntityKey("handoff", "", "h9"),
     Handoff("h9", "a", "b", "t", "", None, "f", ["n"], "low", "claimed", "b", T, T, None)),
    (EntityKey("checkpoint", "phil", ""), Checkpoint("phil", "s", ["done"], [], None, ["a.py"], T)),
    (EntityKey("dm", "b", "msg-9"),
     DirectMessage("msg-9", "a", "status", "hi", T, True, extra={"readAt": T})),
    (EntityKey("memory", "phil", "mem-9"), Memory("mem-9", "pattern", "c", ["X"], T)),
    (EntityKey("lock", "", "src/a.ts"),
     Lock("src/a.ts", "branch", "phil", "r", T, iso_from_ms(NOW + 5 * MIN), NOW + 5 * MIN)),
]  # fmt: skip


@pytest.mark.parametrize(("key", "entity"), ENTITIES, ids=[k.domain for k, _ in ENTITIES])
async def test_replica_writes_reads_and_deletes(host: ActorHost, key: EntityKey, entity: Any) -> None:
    """An entity written by key reads back equal (its extra fields too), a second write changes
    nothing, and None removes it."""
    replica = ActorReplica(host)
    assert await replica.read_entity(key) is None
    await replica.write_entity(key, entity)
    await replica.write_entity(key, entity)
    assert await replica.read_entity(key) == entity
    await replica.write_entity(key, None)
    assert await replica.read_entity(key) is None


async def test_replicated_entities_are_served_by_the_actor_store(host: ActorHost) -> None:
    """What replication writes is what the actors serve: the DM in the recipient's inbox, the
    memory under its owner, the checkpoint of its agent, the lock with its expiry."""
    replica, store = ActorReplica(host), ActorStore(host)
    for key, entity in ENTITIES:
        await replica.write_entity(key, entity)
    assert [d.id for d in (await store.agent_state("b")).unread_messages] == []  # it was read
    assert (await store.get_checkpoint("phil")) == ENTITIES[6][1]
    state = await store.agent_state("phil")
    assert [m.id for m in state.recent_memories] == ["mem-9"]
    check = await store.check_lock("src/a.ts", NOW)
    assert check.lock is not None
    assert (check.lock.locked_by, check.lock.expires_ms) == ("phil", NOW + 5 * MIN)


async def test_a_replicated_relock_updates_the_open_history_row(host: ActorHost) -> None:
    """A lock upserted again by the same holding (a re-lock) gives its open history row the new
    reason, as the lock actor's own re-lock does; one row, still open."""
    replica = ActorReplica(host)
    key = EntityKey("lock", "", "p")
    first = Lock("p", "file-lock", "alice", "editing", T, iso_from_ms(NOW + MIN), NOW + MIN)
    await replica.write_entity(key, first)
    longer = Lock(
        "p", "file-lock", "alice", "longer", first.locked_at, iso_from_ms(NOW + 9 * MIN), NOW + 9 * MIN
    )
    await replica.write_entity(key, longer)
    hist = await ActorStore(host).lock_history("p", 50)
    assert hist.current == longer
    assert [(h.locked_by, h.reason, h.released_at) for h in hist.history] == [("alice", "longer", None)]


async def test_a_replicated_takeover_and_delete_close_the_history(host: ActorHost) -> None:
    """Another holder's lock replicated over a live one ends the first holding (`stolen`); a
    replicated delete of a live lock ends it (`manual`) and drops its alarm."""
    replica = ActorReplica(host)
    key = EntityKey("lock", "", "p")
    await replica.write_entity(
        key, Lock("p", "file-lock", "alice", None, T, iso_from_ms(NOW + MIN), NOW + MIN)
    )
    later = iso_from_ms(NOW + 1)
    await replica.write_entity(
        key, Lock("p", "file-lock", "bob", None, later, iso_from_ms(NOW + MIN), NOW + MIN)
    )
    await replica.write_entity(key, None)
    hist = await ActorStore(host).lock_history("p", 50)
    assert hist.current is None
    assert sorted((h.locked_by, h.release_reason) for h in hist.history) == [
        ("alice", "stolen"),
        ("bob", "manual"),
    ]
    assert host.pending_alarms == 0
