"""The legacy scan in a second process (`consistency.legacy_proc`): the same report as the scan
in the checking process, and a failure in the child makes the check incomplete."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consistency.check import CheckAborted, Checker, CheckOptions
from consistency.legacy_proc import Child, LegacyScanFailed, ProcessScan, pipelined
from consistency.stores import LegacyExpectations
from gateway.bulk.items import Item, Selection
from gateway.bulk.legacy_side import Deferred
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.clock import SystemClock
from tests.checker.test_check_stores import plant, seed_and_import, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]


async def report_of(
    url: str, data_dir: Path, *, process: bool, scan_url: str | None = None, early: bool = False
) -> dict[str, Any]:
    settings = settings_for(url, data_dir)
    clock = SystemClock()
    async with (
        open_legacy_side(settings, url, clock=clock) as legacy,
        open_actor_side(settings, ActorEndpoint(data_dir=data_dir), clock=clock, fire_alarms=False) as actors,
    ):
        started = Child.start() if early else None
        scan = ProcessScan(legacy, settings, scan_url or url, started) if process else None
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


def test_a_process_started_early_scans_once_told_and_an_untold_one_ends(
    redis_url: str, tmp_path: Path
) -> None:
    """`check --jobs 2` starts the scan's process before it opens the stores: it scans when told
    to (the same report), and one never told (the stores could not be opened) ends by itself."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    here = asyncio.run(report_of(redis_url, tmp_path, process=False))
    assert asyncio.run(report_of(redis_url, tmp_path, process=True, early=True)) == here
    untold = Child.start()
    untold.discard()
    assert untold.proc.returncode == 0


def test_a_failing_scan_process_leaves_the_check_incomplete(redis_url: str, tmp_path: Path) -> None:
    """The child cannot reach its Redis (the parent can): the check ends, incomplete, naming it."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    with pytest.raises(CheckAborted) as aborted:
        asyncio.run(report_of(redis_url, tmp_path, process=True, scan_url="redis://127.0.0.1:1/0"))
    report = aborted.value.report
    assert report.complete is False
    assert report.incomplete_reason is not None
    assert report.incomplete_reason.startswith(LegacyScanFailed.__name__)


async def _items(batches: AsyncIterator[list[Item]], into: list[Item] | None = None) -> list[Item]:
    out = [] if into is None else into
    async for b in batches:
        out.extend(b)
    return out


async def _pipelined_and_scanned(url: str, data_dir: Path, start_after: str | None) -> None:
    settings = settings_for(url, data_dir)
    async with open_legacy_side(settings, url) as legacy:
        legacy.defer = True
        selection = Selection.of()
        scanned = await _items(legacy.scan(selection, start_after=start_after, batch=50))
        conflicts = len(legacy.conflicts)
        legacy.conflicts.clear()
        piped = await _items(pipelined(legacy, selection, start_after=start_after, batch=50))
        assert scanned
        assert [k for k, _ in piped] == [k for k, _ in scanned]
        assert [_raw(v) for _, v in piped] == [_raw(v) for _, v in scanned]
        assert len(legacy.conflicts) == conflicts


def _raw(value: object) -> object:
    return value.raw if isinstance(value, Deferred) else value


@pytest.mark.parametrize("start_after", [None, '["checkpoint", "agent-1", ""]'])
def test_the_pipelined_scan_yields_what_the_scan_yields(
    redis_url: str, tmp_path: Path, start_after: str | None
) -> None:
    """Every domain read ahead by a task of its own: the same items in the same order, from the
    start or from a resume cursor, and the same claim conflicts learned."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    asyncio.run(plant(redis_url, tmp_path))
    asyncio.run(_pipelined_and_scanned(redis_url, tmp_path, start_after))


def test_a_failing_domain_ends_the_pipelined_scan_after_the_domains_before_it(
    redis_url: str, tmp_path: Path
) -> None:
    """A read that fails in a domain read ahead is raised when that domain's turn comes, after
    every batch of the domains before it, and the tasks reading ahead are stopped."""

    async def go() -> None:
        settings = settings_for(redis_url, tmp_path)
        async with open_legacy_side(settings, redis_url) as legacy:
            legacy.defer = True
            selection = Selection.of()
            before = await _items(legacy.scan(Selection.of(["agent", "chat", "task"])))
            assert before
            failing = legacy._domain

            def domain(name: str, *args: Any) -> Any:
                if name == "zone":
                    raise ConnectionError("Redis went away")
                return failing(name, *args)

            legacy._domain = domain  # type: ignore[method-assign,assignment]
            got: list[Item] = []
            with pytest.raises(ConnectionError, match="went away"):
                await _items(pipelined(legacy, selection, batch=50), got)
            assert [k for k, _ in got] == [k for k, _ in before]
            await asyncio.sleep(0)
            leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert leftover == []

    asyncio.run(seed_and_import(redis_url, tmp_path))
    asyncio.run(go())
