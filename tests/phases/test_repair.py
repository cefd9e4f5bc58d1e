"""The durable repair queue and its worker."""

from __future__ import annotations

import random
from pathlib import Path

from gateway.clock import FakeClock
from gateway.domain.entities import EntityKey
from gateway.errors import StoreUnavailable
from gateway.phases.repair import RepairQueue, RepairWorker

K1 = EntityKey("task", "", "task-1")
K2 = EntityKey("dm", "bob", "msg-1")


async def test_entries_survive_reopening(tmp_path: Path) -> None:
    """What was enqueued is still there after the queue (the process) is reopened."""
    clock = FakeClock()
    q = RepairQueue(tmp_path, clock)
    await q.enqueue(K1, "actors", "boom")
    await q.enqueue(K2, "actors", "boom")
    q.close()
    again = RepairQueue(tmp_path, clock)
    assert [e.key for e in again.all()] == [K1, K2]
    assert again.stats().depth == 2
    again.close()


async def test_repeated_failures_of_one_entity_collapse(tmp_path: Path) -> None:
    """Three failed writes of one entity make one entry (the repair re-reads the source)."""
    q = RepairQueue(tmp_path, FakeClock())
    for _ in range(3):
        await q.enqueue(K1, "legacy", "down")
    entries = q.all()
    assert len(entries) == 1
    assert entries[0].gen == 3
    q.close()


async def test_newer_failure_during_a_repair_keeps_the_entry(tmp_path: Path) -> None:
    """A repair that read an older value does not remove an entry re-enqueued meanwhile."""
    q = RepairQueue(tmp_path, FakeClock())
    await q.enqueue(K1, "actors", "down")
    taken = q.due()[0]
    await q.enqueue(K1, "actors", "down again")  # a newer write failed while the repair ran
    assert (await q.done(taken)) is False
    assert q.stats().depth == 1
    assert (await q.done(q.due()[0])) is True
    assert q.stats().depth == 0
    q.close()


async def test_worker_copies_in_order_and_empties_the_queue(tmp_path: Path) -> None:
    """The worker copies each due entry, oldest first, and removes it."""
    clock = FakeClock()
    q = RepairQueue(tmp_path, clock)
    copied: list[tuple[EntityKey, str]] = []

    async def copy(key: EntityKey, target: str) -> None:
        copied.append((key, target))

    await q.enqueue(K1, "actors", "x")
    await q.enqueue(K2, "actors", "x")
    worker = RepairWorker(q, copy, clock)
    assert await worker.run_once() == 2
    assert copied == [(K1, "actors"), (K2, "actors")]
    assert q.stats().depth == 0
    q.close()


async def test_failing_target_backs_off_and_recovers(tmp_path: Path) -> None:
    """While the target is down entries wait with growing backoff; when it returns they drain."""
    clock = FakeClock()
    q = RepairQueue(tmp_path, clock)
    up = False

    async def copy(key: EntityKey, target: str) -> None:
        if not up:
            raise StoreUnavailable("legacy store unavailable")

    await q.enqueue(K1, "legacy", "x")
    await q.enqueue(K2, "legacy", "x")
    worker = RepairWorker(q, copy, clock, rng=random.Random(1))
    assert await worker.run_once() == 0
    first = q.all()
    assert all(e.next_ms > clock.now_ms() for e in first)  # both postponed, not hammered
    assert first[0].attempts == 1
    assert await worker.run_once() == 0  # nothing due yet
    await clock.advance(60_000)
    assert await worker.run_once() == 0
    assert q.all()[0].attempts == 2
    up = True
    await clock.advance(120_000)
    assert await worker.run_once() == 2
    assert q.stats().depth == 0
    q.close()


async def test_stats_report_depth_and_oldest(tmp_path: Path) -> None:
    """Depth and the oldest entry's enqueue time are visible for the admin status."""
    clock = FakeClock(5_000)
    q = RepairQueue(tmp_path, clock)
    assert q.stats().depth == 0
    assert q.stats().oldest_ms is None
    await q.enqueue(K1, "actors", "x")
    clock._now_ms = 9_000
    await q.enqueue(K2, "actors", "x")
    stats = q.stats()
    assert (stats.depth, stats.oldest_ms) == (2, 5_000)
    q.close()


async def test_an_unreachable_store_never_dead_letters(tmp_path: Path) -> None:
    """Twenty failed attempts because the target is down (503) leave the entry queued: only an
    entity's own failures count toward `max_strikes`."""
    clock = FakeClock()
    q = RepairQueue(tmp_path, clock)

    async def copy(key: EntityKey, target: str) -> None:
        raise StoreUnavailable("legacy store unavailable")

    await q.enqueue(K1, "legacy", "x")
    worker = RepairWorker(q, copy, clock, rng=random.Random(1), max_strikes=3)
    for _ in range(20):
        await worker.run_once()
        await clock.advance(61_000)
    (entry,) = q.all()
    assert (entry.attempts, entry.strikes) == (20, 0)
    assert q.dead_letters() == []
    q.close()


async def test_an_entity_that_keeps_failing_is_dead_lettered_once(tmp_path: Path) -> None:
    """After `max_strikes` failures of its own the entry leaves the queue for the dead-letter list
    with the last error; the other entries are repaired meanwhile; the list survives a restart,
    and a retry puts it back with a fresh count of attempts."""
    clock = FakeClock()
    q = RepairQueue(tmp_path, clock)

    async def copy(key: EntityKey, target: str) -> None:
        if key == K1:
            raise ValueError("expected text, found an array")

    await q.enqueue(K1, "legacy", "x")
    await q.enqueue(K2, "legacy", "x")
    worker = RepairWorker(q, copy, clock, rng=random.Random(1), max_strikes=3)
    for _ in range(5):
        await worker.run_once()
        await clock.advance(61_000)
    assert q.all() == []
    (dead,) = q.dead_letters()
    assert (dead.key, dead.target, dead.attempts) == (K1, "legacy", 3)
    assert dead.reason == "expected text, found an array"
    assert (q.stats().depth, q.stats().dead_letters, worker.dead_lettered) == (0, 1, 1)
    q.close()

    again = RepairQueue(tmp_path, clock)
    assert [d.key for d in again.dead_letters()] == [K1]
    assert await again.retry_dead([dead.seq]) == 1
    (entry,) = again.all()
    assert (entry.key, entry.attempts, entry.strikes, entry.next_ms) == (K1, 0, 0, clock.now_ms())
    assert again.dead_letters() == []
    assert await again.drop_dead(None) == 0
    again.close()


async def test_a_newer_failure_during_the_last_retry_keeps_the_entry_queued(tmp_path: Path) -> None:
    """A write of the entity that failed while its last retry ran re-enqueued it (a new `gen`):
    that one is not buried with the old one."""
    clock = FakeClock()
    q = RepairQueue(tmp_path, clock)

    async def copy(key: EntityKey, target: str) -> None:
        await q.enqueue(K1, "legacy", "newer write failed")
        raise ValueError("unreadable")

    await q.enqueue(K1, "legacy", "x")
    worker = RepairWorker(q, copy, clock, max_strikes=1)
    await worker.run_once()
    assert [e.key for e in q.all()] == [K1]
    assert q.dead_letters() == []
    q.close()


async def test_a_queue_of_an_older_version_opens(tmp_path: Path) -> None:
    """A repair.sqlite written before dead letters existed (no `strikes` column) is upgraded."""
    import sqlite3  # noqa: PLC0415

    db = sqlite3.connect(tmp_path / "repair.sqlite")
    db.executescript(
        "CREATE TABLE repair (seq INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL, "
        "scope TEXT NOT NULL, id TEXT NOT NULL, target TEXT NOT NULL, enqueued_ms INTEGER NOT NULL, "
        "gen INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, "
        "last_error TEXT, UNIQUE (domain, scope, id, target));"
        "INSERT INTO repair (domain, scope, id, target, enqueued_ms, next_ms) "
        "VALUES ('task', '', 'task-1', 'legacy', 1, 1);"
    )
    db.commit()
    db.close()
    q = RepairQueue(tmp_path, FakeClock())
    assert [(e.key, e.strikes) for e in q.all()] == [(K1, 0)]
    q.close()
