"""Repair on in-memory stores: from the authoritative store, dry runs, live writes left alone."""

from __future__ import annotations

from consistency.check import Checker, CheckOptions
from consistency.repair import authoritative, repair
from consistency.rules import Expectations
from gateway.clock import FakeClock
from gateway.domain.entities import EntityKey, Unreadable

from .memory import MemorySource
from .test_engine import NOW, dataset, task


async def probe(now_ms: int) -> Expectations:
    return Expectations(now_ms)


def planted() -> tuple[MemorySource, MemorySource]:
    legacy, actors = MemorySource("legacy", dataset()), MemorySource("actors", dataset())
    del actors.values[EntityKey("task", "", "t0")]  # create in the actors
    actors.values[EntityKey("task", "", "t1")] = task("t1", status="done")  # update
    actors.values[EntityKey("memory", "bob", "extra")] = actors.values[EntityKey("memory", "bob", "mem-bob")]
    legacy.values[EntityKey("dm", "bob", "dm-bob")] = Unreadable(EntityKey("dm", "bob", "dm-bob"), "{", "bad")
    return legacy, actors


async def test_the_phase_names_the_source() -> None:
    assert [authoritative(p) for p in ("parallel", "write-through", "read-switch", "cutover")] == [
        "legacy",
        "legacy",
        "actors",
        "actors",
    ]


async def test_a_dry_run_lists_each_change_and_changes_nothing() -> None:
    legacy, actors = planted()
    before = dict(actors.values)
    checker = Checker(legacy, actors, FakeClock(NOW), probe)
    await checker.run(CheckOptions(rounds=0))
    result = await repair(checker.findings, legacy, actors, dry_run=True)
    assert actors.values == before
    lines = sorted(c.line("actors", "legacy") for c in result.changes)
    assert lines == [
        "create in actors: task:t0  [from legacy]",
        "delete from actors: memory:bob:extra  [from legacy]",
        "update in actors: task:t1 (status)  [from legacy]",
    ]
    assert [str(k) for k, _ in result.unrepairable] == ["dm:bob:dm-bob"]
    assert result.written == 3  # would be written


async def test_after_a_repair_the_check_is_clean_but_for_what_cannot_be_read() -> None:
    legacy, actors = planted()
    checker = Checker(legacy, actors, FakeClock(NOW), probe)
    await checker.run(CheckOptions(rounds=0))
    result = await repair(checker.findings, legacy, actors, dry_run=False)
    assert (result.written, result.unchanged, result.skipped) == (3, 0, [])
    after = await checker.run(CheckOptions(rounds=0))
    assert after.totals().differences == 1
    assert after.totals().unreadable == 1


async def test_an_entity_changed_by_a_live_write_since_the_check_is_not_overwritten() -> None:
    """The check saw t1 differ; then the gateway updated t1 in the actors: the repair re-reads
    Redis, finds the actors' copy newer and leaves it (skipped)."""
    legacy, actors = planted()
    checker = Checker(legacy, actors, FakeClock(NOW), probe)
    await checker.run(CheckOptions(rounds=0))
    live = task("t1", status="review", updated_at="2099-01-01T00:00:00.000Z")
    actors.values[EntityKey("task", "", "t1")] = live
    result = await repair(checker.findings, legacy, actors, dry_run=False)
    assert [str(k) for k in result.skipped] == ["task:t1"]
    assert actors.values[EntityKey("task", "", "t1")] == live
