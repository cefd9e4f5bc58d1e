"""gateway.do.replica.ActorReplica: entity upserts into the actor tables, as replication does them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.actors import ActorHost
from gateway.clock import FakeClock
from gateway.do.actor_store import ActorStore, build_actor_host
from gateway.do.replica import ActorReplica
from gateway.domain.entities import EntityKey
from gateway.domain.jscompat import iso_from_ms
from gateway.domain.model import Lock
from gateway.settings import LimitSettings

NOW = 1_795_627_727_041
MIN = 60_000


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[ActorHost]:
    h = build_actor_host(tmp_path, LimitSettings(), clock=FakeClock(NOW))
    await h.start()
    yield h
    await h.close()


async def test_a_replicated_relock_updates_the_open_history_row(host: ActorHost) -> None:
    """A lock upserted again by the same holding (a re-lock) gives its open history row the new
    reason, as the lock actor's own re-lock does; one row, still open."""
    replica = ActorReplica(host)
    key = EntityKey("lock", "", "p")
    first = Lock("p", "file-lock", "alice", "editing", iso_from_ms(NOW), iso_from_ms(NOW + MIN), NOW + MIN)
    await replica.write_entity(key, first)
    longer = Lock(
        "p", "file-lock", "alice", "longer", first.locked_at, iso_from_ms(NOW + 9 * MIN), NOW + 9 * MIN
    )
    await replica.write_entity(key, longer)
    hist = await ActorStore(host).lock_history("p", 50)
    assert hist.current == longer
    assert [(h.locked_by, h.reason, h.released_at) for h in hist.history] == [("alice", "longer", None)]
