"""Phase control: persisted, audited, surviving restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.phases.control import PhaseControl
from gateway.phases.gate import PhaseGate, SwitchTimeoutError


def test_initial_phase_comes_from_config_and_is_audited(tmp_path: Path) -> None:
    """A fresh data directory starts in the configured phase, with an audit row saying so."""
    ctl = PhaseControl(tmp_path, FakeClock(1_000), "write-through")
    assert ctl.phase == "write-through"
    history = ctl.history()
    assert [(c.actor, c.from_phase, c.to_phase) for c in history] == [("config", None, "write-through")]
    ctl.close()


def test_change_is_persisted_and_wins_over_config_after_restart(tmp_path: Path) -> None:
    """A run-time change survives a restart even when the config file names another phase."""
    clock = FakeClock(1_000)
    ctl = PhaseControl(tmp_path, clock, "parallel")
    clock._now_ms = 5_000
    change = ctl.set("write-through", actor="ops@host", reason="rollout step 2")
    assert (change.from_phase, change.to_phase, change.at_ms) == ("parallel", "write-through", 5_000)
    ctl.close()
    again = PhaseControl(tmp_path, clock, "parallel")
    assert again.phase == "write-through"
    assert again.since_ms == 5_000
    rows = again.history()
    assert [r.to_phase for r in rows] == ["parallel", "write-through"]
    assert rows[-1].reason == "rollout step 2"
    assert rows[-1].actor == "ops@host"
    again.close()


def test_forced_change_is_recorded_as_forced(tmp_path: Path) -> None:
    """The audit log says when guards were overridden."""
    ctl = PhaseControl(tmp_path, FakeClock(), "parallel")
    ctl.set("read-switch", actor="ops", reason="drill", forced=True)
    assert ctl.history()[-1].forced is True
    assert ctl.history()[-1].to_json()["forced"] is True
    ctl.close()


def test_unknown_phase_is_rejected_and_nothing_changes(tmp_path: Path) -> None:
    """Setting a phase that does not exist raises and leaves phase and log untouched."""
    ctl = PhaseControl(tmp_path, FakeClock(), "parallel")
    with pytest.raises(ValueError, match="unknown phase"):
        ctl.set("sideways", actor="ops", reason="typo")
    assert ctl.phase == "parallel"
    assert len(ctl.history()) == 1
    ctl.close()


async def test_gate_switch_waits_for_in_flight_and_holds_new_operations() -> None:
    """A switch runs only after in-flight operations leave; operations arriving meanwhile wait."""
    gate = PhaseGate()
    order: list[str] = []
    await gate.enter()  # an operation in flight

    async def switch() -> None:
        await gate.switch(lambda: order.append("switched"))

    async def late_op() -> None:
        await gate.enter()
        order.append("late op")
        gate.leave()

    s = asyncio.create_task(switch())
    for _ in range(5):
        await asyncio.sleep(0)
    late = asyncio.create_task(late_op())
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == []  # the switch waits for the in-flight op; the late op waits for the switch
    order.append("in-flight op done")
    gate.leave()
    await asyncio.wait_for(asyncio.gather(s, late), 5)
    assert order == ["in-flight op done", "switched", "late op"]


async def test_gate_switch_times_out_without_changing() -> None:
    """A stuck operation makes the switch fail with nothing changed, and the gate reopens."""
    gate = PhaseGate()
    await gate.enter()
    changed: list[int] = []
    with pytest.raises(SwitchTimeoutError):
        await gate.switch(lambda: changed.append(1), timeout_s=0.01)
    assert changed == []
    await gate.enter()  # not blocked
    gate.leave()
    gate.leave()
