"""The guards of phase changes (migration.md: Guards)."""

from __future__ import annotations

from gateway.phases.guards import ConsistencyReportInfo, GuardContext, refusals

NOW = 10_000_000


def ctx(depth: int = 0, report: ConsistencyReportInfo | None = None, **kw: object) -> GuardContext:
    return GuardContext(
        repair_depth=depth,
        last_report=report,
        now_ms=NOW,
        report_max_age_s=3600,
        **kw,  # type: ignore[arg-type]
    )


def test_moving_back_one_phase_is_always_allowed() -> None:
    """write-through -> parallel and read-switch -> write-through pass even with a queue."""
    assert refusals("write-through", "parallel", ctx(depth=5)) == []
    assert refusals("read-switch", "write-through", ctx(depth=5)) == []


def test_forward_jumps_are_refused() -> None:
    """parallel -> read-switch skips write-through and is refused with the next step named."""
    reasons = refusals("parallel", "read-switch", ctx(report=ConsistencyReportInfo(NOW, True, "r.json")))
    assert any("write-through first" in r for r in reasons)


def test_read_switch_needs_empty_queue_and_recent_clean_report() -> None:
    """Each missing precondition of read-switch is named."""
    fresh = ConsistencyReportInfo(NOW - 1000, True, "r.json")
    assert refusals("write-through", "read-switch", ctx(report=fresh)) == []
    assert any("repair queue holds 3" in r for r in refusals("write-through", "read-switch", ctx(3, fresh)))
    stale = ConsistencyReportInfo(NOW - 7_200_000, True, "old.json")
    assert any("7200 s old" in r for r in refusals("write-through", "read-switch", ctx(report=stale)))
    dirty = ConsistencyReportInfo(NOW, False, "dirty.json")
    assert any(
        "not clean (dirty.json)" in r for r in refusals("write-through", "read-switch", ctx(report=dirty))
    )


def test_read_switch_without_report_says_how_to_get_one() -> None:
    """No report yet: the guard names the command that makes one."""
    reasons = refusals("write-through", "read-switch", ctx())
    assert reasons == ["read-switch needs a clean consistency report: run `agent-coord check` first"]


def test_read_switch_refuses_incomplete_and_partial_reports() -> None:
    """A report of a check that stopped early, or of a sampled or filtered check, is no basis."""
    incomplete = ConsistencyReportInfo(NOW, False, "cut.json", complete=False)
    reasons = refusals("write-through", "read-switch", ctx(report=incomplete))
    assert any("incomplete (cut.json)" in r for r in reasons)
    partial = ConsistencyReportInfo(NOW, True, "part.json", full=False)
    assert any("only part" in r for r in refusals("write-through", "read-switch", ctx(report=partial)))


def test_cutover_needs_empty_queue_only() -> None:
    """read-switch -> cutover needs an empty repair queue, no report."""
    assert refusals("read-switch", "cutover", ctx()) == []
    assert refusals("read-switch", "cutover", ctx(depth=1)) != []


def test_back_from_cutover_needs_reverse_sync() -> None:
    """cutover -> read-switch is refused until Redis was refilled from the actors."""
    reasons = refusals("cutover", "read-switch", ctx())
    assert any("refilled from the actors" in r for r in reasons)
    assert refusals("cutover", "read-switch", ctx(reverse_synced=True)) == []


def test_same_and_unknown_phase_are_refused() -> None:
    """A no-op change or an unknown name is refused with a message."""
    assert refusals("cutover", "cutover", ctx()) == ["the gateway is already in phase 'cutover'"]
    assert "unknown phase" in refusals("cutover", "later", ctx())[0]


def test_dead_letters_block_read_switch_and_cutover_but_not_going_back() -> None:
    """A dead-letter list that is not empty refuses the forward moves that need every copy made,
    with the commands that clear it; moving back is not refused for it."""
    ctx = GuardContext(repair_depth=0, last_report=None, now_ms=0, report_max_age_s=1.0, dead_letters=2)
    (reason,) = [r for r in refusals("read-switch", "cutover", ctx) if "dead-letter" in r]
    assert reason.startswith("2 repairs failed their last retry")
    assert "retry-dead" in reason
    assert any("dead-letter" in r for r in refusals("write-through", "read-switch", ctx))
    assert refusals("read-switch", "write-through", ctx) == []
