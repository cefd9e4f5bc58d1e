"""The migration runtime: phase changes through the gate, and the status operators read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.clock import FakeClock, settle
from gateway.domain.entities import EntityKey
from gateway.phases.control import record_reverse_sync
from gateway.phases.guards import PhaseChangeRefusedError
from gateway.phases.runtime import MigrationRuntime
from gateway.settings import MigrationSettings


async def test_a_repair_queued_while_the_switch_waits_refuses_cutover(tmp_path: Path) -> None:
    """The guards are checked again once the operations in flight have left: one of them queued
    a repair meanwhile, so cutover is refused and the phase stays."""
    runtime = MigrationRuntime(
        tmp_path, FakeClock(), MigrationSettings(phase="read-switch"), legacy_configured=True
    )
    try:
        await runtime.gate.enter()  # a write in flight
        change = asyncio.create_task(runtime.change_phase("cutover", actor="ops", reason="r", force=False))
        await settle()
        assert not change.done()  # waiting for the write
        await runtime.queue.enqueue(EntityKey("task", "", "t-1"), "legacy", "legacy store unavailable")
        runtime.gate.leave()
        with pytest.raises(PhaseChangeRefusedError, match="repair queue holds 1 entries"):
            await asyncio.wait_for(change, 5)
        assert runtime.phase == "read-switch"
        assert [c.to_phase for c in runtime.history(10)] == ["read-switch"]
    finally:
        await runtime.close()


async def test_concurrent_switches_check_the_phase_they_find(tmp_path: Path) -> None:
    """Two switches to the same phase at once: the second finds the first done and is refused
    as a no-op instead of auditing a change from a phase that is gone."""
    runtime = MigrationRuntime(
        tmp_path, FakeClock(), MigrationSettings(phase="parallel"), legacy_configured=True
    )
    try:
        await runtime.gate.enter()  # a write in flight: both switches pass the first check and wait
        changes = [
            asyncio.create_task(runtime.change_phase("write-through", actor=who, reason="r", force=False))
            for who in ("a", "b")
        ]
        await settle()
        runtime.gate.leave()
        first, second = await asyncio.wait_for(asyncio.gather(*changes, return_exceptions=True), 5)
        assert not isinstance(first, BaseException)
        assert isinstance(second, PhaseChangeRefusedError)
        assert "already in phase 'write-through'" in str(second)
        assert [(c.from_phase, c.to_phase) for c in runtime.history(10)] == [
            (None, "parallel"),
            ("parallel", "write-through"),
        ]
    finally:
        await runtime.close()


async def test_leaving_cutover_needs_a_reverse_sync_that_started_after_cutover(tmp_path: Path) -> None:
    """`agent-coord migrate copy --from actors --to legacy` records the refill in control.sqlite;
    only one that started after cutover began satisfies the guard."""
    clock = FakeClock()
    record_reverse_sync(tmp_path, started_ms=clock.now_ms() - 1, finished_ms=clock.now_ms(), entities=3)
    await clock.advance(1000)
    runtime = MigrationRuntime(tmp_path, clock, MigrationSettings(phase="cutover"), legacy_configured=True)
    try:
        with pytest.raises(PhaseChangeRefusedError, match="Redis refilled from the actors"):
            await runtime.change_phase("read-switch", actor="ops", reason="r", force=False)
        record_reverse_sync(
            tmp_path, started_ms=clock.now_ms() + 1, finished_ms=clock.now_ms() + 9, entities=3
        )
        change = await runtime.change_phase("read-switch", actor="ops", reason="roll back", force=False)
        assert change.to_phase == "read-switch"
        assert not change.forced
    finally:
        await runtime.close()
