"""The legacy scan in a second process (`consistency.legacy_proc`): the same report as the scan
in the checking process, and a failure in the child makes the check incomplete."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from consistency.check import CheckAborted, Checker, CheckOptions
from consistency.legacy_proc import LegacyScanFailed, ProcessScan
from consistency.stores import LegacyExpectations
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.clock import SystemClock
from tests.checker.test_check_stores import plant, seed_and_import, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]


async def report_of(
    url: str, data_dir: Path, *, process: bool, scan_url: str | None = None
) -> dict[str, Any]:
    settings = settings_for(url, data_dir)
    clock = SystemClock()
    async with (
        open_legacy_side(settings, url, clock=clock) as legacy,
        open_actor_side(settings, ActorEndpoint(data_dir=data_dir), clock=clock, fire_alarms=False) as actors,
    ):
        scan = ProcessScan(legacy, settings, scan_url or url) if process else None
        checker = Checker(legacy, actors, clock, LegacyExpectations(legacy), legacy_scan=scan)
        report = await checker.run(CheckOptions(rounds=0, batch=200, max_samples=100))
        doc = report.to_json()
        conflicts = sorted((c.what, c.winner, tuple(c.others)) for c in legacy.conflicts)
        return {
            "domains": doc["domains"],
            "totals": doc["totals"],
            "samples": doc["samples"],
            "conflicts": conflicts,
        }


def test_the_scan_in_a_second_process_gives_the_same_report(redis_url: str, tmp_path: Path) -> None:
    asyncio.run(seed_and_import(redis_url, tmp_path))
    asyncio.run(plant(redis_url, tmp_path))
    here = asyncio.run(report_of(redis_url, tmp_path, process=False))
    there = asyncio.run(report_of(redis_url, tmp_path, process=True))
    assert there == here
    assert here["totals"]["differences"] > 0
    assert here["conflicts"]  # what the child's scan learned reached the parent's source


def test_a_failing_scan_process_leaves_the_check_incomplete(redis_url: str, tmp_path: Path) -> None:
    """The child cannot reach its Redis (the parent can): the check ends, incomplete, naming it."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    with pytest.raises(CheckAborted) as aborted:
        asyncio.run(report_of(redis_url, tmp_path, process=True, scan_url="redis://127.0.0.1:1/0"))
    report = aborted.value.report
    assert report.complete is False
    assert report.incomplete_reason is not None
    assert report.incomplete_reason.startswith(LegacyScanFailed.__name__)
