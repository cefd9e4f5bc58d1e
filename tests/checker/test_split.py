"""A check of a data directory split by domain over two processes (`consistency.split`): the same
report as one process on seeded differences of every domain; an interrupted split check
resumed; the directory held by the check for its whole length; the shard reader's refusal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from consistency.check import CheckAborted, Checker, CheckOptions, Part, Snapshot
from consistency.rules import Expectations
from consistency.split import SECOND_DOMAINS, SplitPartFailed, SplitWalk
from consistency.stores import LegacyExpectations
from gateway.actors.shard_reader import ShardReader, directory_held
from gateway.bulk.items import Item, Selection
from gateway.bulk.sides import ActorEndpoint, open_actor_side, open_legacy_side
from gateway.clock import SystemClock
from gateway.do.actor_store import SHARDED_TABLES, build_actor_host
from gateway.domain.entities import EntityKey
from gateway.domain.progress_records import ProgressRecord
from gateway.errors import ActorOwnedElsewhere, DataDirError
from gateway.settings import load_settings
from tests.checker.test_check_stores import (
    check,
    differences,
    plant,
    same_part,
    seed_and_import,
    settings_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]


class _Counted(SplitWalk):
    """A `SplitWalk` that counts its walks and runs `during` at each message of its part."""

    walks = 0
    during: Callable[[SplitWalk, Snapshot], None] | None = None
    child_proc: Any = None

    async def walk(
        self,
        part: Part,
        opts: CheckOptions,
        exp: Expectations,
        start: Snapshot,
        progress: Callable[[Snapshot], None],
    ) -> Snapshot:
        type(self).walks += 1

        def told(snap: Snapshot) -> None:
            if type(self).during is not None:
                type(self).during(self, snap)  # type: ignore[misc]
            progress(snap)

        return await super().walk(part, opts, exp, start, told)


async def _plant_soul(url: str, data_dir: Path) -> None:
    """An actor-only entity (a soul) in the actors: an expected difference of the first part."""
    settings = settings_for(url, data_dir)
    row = {"soul_id": "s-1", "name": "planted", "created_at": "2026-12-06T00:00:00.000Z"}
    async with open_actor_side(settings, ActorEndpoint(data_dir=data_dir)) as actors:
        await actors.write_batch(
            [(EntityKey("soul", "agent-1", ""), ProgressRecord({"soul_progression": [row]}))]
        )


def test_the_split_check_gives_the_same_report_as_one_process(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Differences seeded in every domain (and the generator's expected ones): `--jobs 2` on the
    data directory walks the DMs and memories in the second process, and writes the
    report `--jobs 1` writes (but for the run's id, times and files), with the same exit status."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    planted = asyncio.run(plant(redis_url, tmp_path))
    asyncio.run(_plant_soul(redis_url, tmp_path))
    monkeypatch.setattr("consistency.run.SplitWalk", _Counted)
    _Counted.walks = 0
    common = ("--rounds", "0", "--samples", "100")
    one_status, one = check(redis_url, tmp_path, "--jobs", "1", *common)
    assert _Counted.walks == 0
    two_status, two = check(redis_url, tmp_path, "--jobs", "2", *common)
    assert _Counted.walks == 1
    assert (one_status, two_status) == (1, 1)
    assert same_part(two) == same_part(one)
    assert differences(two) == {**planted, "soul": differences(two)["soul"]}
    assert {d for d in SECOND_DOMAINS if two["domains"][d]["differences"]} == SECOND_DOMAINS
    assert two["domains"]["soul"]["expected"] == {"actor-only": 1}
    # and with re-check rounds (the second part's differences read again by the checking process)
    _, one = check(redis_url, tmp_path, "--jobs", "1", "--rounds", "1", "--recheck-delay", "0")
    _, two = check(redis_url, tmp_path, "--jobs", "2", "--rounds", "1", "--recheck-delay", "0")
    assert same_part(two) == same_part(one)
    # a sampled check too
    sampled = ("--rounds", "0", "--sample", "0.5", "--seed", "3")
    _, one = check(redis_url, tmp_path, "--jobs", "1", *sampled)
    _, two = check(redis_url, tmp_path, "--jobs", "2", *sampled)
    assert _Counted.walks == 3
    assert same_part(two) == same_part(one)
    # and an agent filter (their agents, checkpoints and actor-only data here, DMs and memories there)
    agents = ("--rounds", "0", "--agent", "claude-code", "--agent", "phil", "--agent", "tyler")
    _, one = check(redis_url, tmp_path, "--jobs", "1", *agents)
    _, two = check(redis_url, tmp_path, "--jobs", "2", *agents)
    assert _Counted.walks == 4
    assert same_part(two) == same_part(one)
    assert two["domains"]["dm"]["compared"] > 0


class _FailingActors:
    """The actor side, failing at the `fail_at`th batch of the first part's walk."""

    def __init__(self, actors: Any, fail_at: int) -> None:
        self.actors = actors
        self.fail_at = fail_at

    def __getattr__(self, name: str) -> Any:
        return getattr(self.actors, name)

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        n = 0
        async for items in self.actors.scan(selection, start_after=start_after, batch=batch):
            n += 1
            if n == self.fail_at:
                raise OSError("planted failure of the actor side")
            yield items


async def _split_check(
    url: str,
    data_dir: Path,
    opts: CheckOptions,
    *,
    split: bool = True,
    fail_at: int | None = None,
) -> dict[str, Any]:
    """One check with the checker's own parts (as `agent-coord check` builds it); the report."""
    settings = settings_for(url, data_dir)
    clock = SystemClock()
    async with (
        open_legacy_side(settings, url, clock=clock) as legacy,
        open_actor_side(settings, ActorEndpoint(data_dir=data_dir), clock=clock, fire_alarms=False) as actors,
    ):
        second = _Counted(settings, url, data_dir, actors.replica.host.shard_count) if split else None  # type: ignore[union-attr]
        side: Any = actors if fail_at is None else _FailingActors(actors, fail_at)
        checker = Checker(legacy, side, clock, LegacyExpectations(legacy), data_dir=data_dir, second=second)
        report = await checker.run(opts)
        return report.to_json()


def _states(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in (data_dir / "consistency").glob("run-*.state.json")]


@pytest.mark.parametrize("where", ["first", "second"])
def test_an_interrupted_split_check_is_resumed_to_the_same_report(
    redis_url: str, tmp_path: Path, where: str
) -> None:
    """The check stops half-way (the checking process's actor side fails, or the second process
    dies right after its first saved position): the saved state holds each part's position, and
    `--resume` (split again, or in one process) ends with the report of an uninterrupted check."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    asyncio.run(plant(redis_url, tmp_path))
    opts = CheckOptions(rounds=0, batch=50, max_samples=100, checkpoint_every=100)
    whole = asyncio.run(_split_check(redis_url, tmp_path, opts, split=False))

    with pytest.MonkeyPatch.context() as mp:
        if where == "second":
            # the second process (a fresh interpreter, started by the check) ends itself at its
            # first saved position, so it cannot finish its part first however slow this one is
            # (a kill sent from here at that position can come after the part has ended)
            mp.setenv("AGENT_COORD_CRASH_AT", "split.part_progress")
        with pytest.raises(CheckAborted) as aborted:
            asyncio.run(_split_check(redis_url, tmp_path, opts, fail_at=3 if where == "first" else None))
    reason = aborted.value.report.incomplete_reason or ""
    assert reason.startswith("OSError" if where == "first" else SplitPartFailed.__name__)
    (state,) = _states(tmp_path)
    _first, second = state["parts"]
    assert set(second["domains"]) == SECOND_DOMAINS
    assert 0 < state["walked"] < whole["totals"]["compared"]
    if where == "second":
        assert second["cursor"] is not None
        assert second["walked"] > 0

    resumed = asyncio.run(_split_check(redis_url, tmp_path, CheckOptions(**{**_kw(opts), "resume": True})))
    assert resumed["runId"] == state["runId"]
    assert same_part(resumed) == same_part(whole)
    assert _states(tmp_path) == []


def test_a_split_state_resumed_in_one_process(redis_url: str, tmp_path: Path) -> None:
    """A split check stopped by its first part, resumed without a second process (`--jobs 1`):
    the parts are walked one after the other, to the same report."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    asyncio.run(plant(redis_url, tmp_path))
    opts = CheckOptions(rounds=0, batch=50, max_samples=100, checkpoint_every=100)
    whole = asyncio.run(_split_check(redis_url, tmp_path, opts, split=False))
    with pytest.raises(CheckAborted):
        asyncio.run(_split_check(redis_url, tmp_path, opts, fail_at=4))
    again = CheckOptions(**{**_kw(opts), "resume": True})
    resumed = asyncio.run(_split_check(redis_url, tmp_path, again, split=False))
    assert same_part(resumed) == same_part(whole)


def _kw(opts: CheckOptions) -> dict[str, Any]:
    return {f: getattr(opts, f) for f in CheckOptions.__dataclass_fields__}


def test_no_gateway_can_start_while_the_split_check_reads(redis_url: str, tmp_path: Path) -> None:
    """While the second process walks its part, the directory is held (by the checking
    process's host): a gateway's host refuses to start on it."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    refused: list[str] = []

    def try_a_gateway(walk: SplitWalk, snap: Snapshot) -> None:
        del walk, snap
        if refused:
            return
        assert directory_held(tmp_path)

        async def start() -> None:
            host = build_actor_host(tmp_path, load_settings().limits)
            await host.start()
            await host.close()

        with ThreadPoolExecutor(1) as pool:  # this thread runs the check's event loop
            try:
                pool.submit(asyncio.run, start()).result(timeout=30)
            except ActorOwnedElsewhere as e:
                refused.append(str(e))

    _Counted.during = try_a_gateway
    try:
        asyncio.run(_split_check(redis_url, tmp_path, CheckOptions(rounds=0, batch=50, checkpoint_every=100)))
    finally:
        _Counted.during = None
    assert refused
    assert "owns the data directory" in refused[0]
    assert not directory_held(tmp_path)  # let go once the check ended


def test_the_shard_reader_refuses_a_directory_no_host_holds(redis_url: str, tmp_path: Path) -> None:
    asyncio.run(seed_and_import(redis_url, tmp_path))
    reader = ShardReader(tmp_path, SHARDED_TABLES, 8)
    with pytest.raises(DataDirError, match="no host holds"):
        reader.open()


def test_a_check_beside_a_gateway_that_does_not_answer_is_refused(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gateway's host holds the directory and nothing answers at the URL: exit status 3, no
    report, no second process left."""
    asyncio.run(seed_and_import(redis_url, tmp_path))

    async def beside_a_host() -> int:
        host = build_actor_host(tmp_path, load_settings().limits)
        await host.start()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: _main_status(redis_url, tmp_path)
            )
        finally:
            await host.close()

    assert asyncio.run(beside_a_host()) == 3
    assert "another agent-coord process owns the data directory" in capsys.readouterr().err
    assert not list((tmp_path / "consistency").glob("report-*.json"))


def _main_status(url: str, data_dir: Path) -> int:
    from gateway.cli import main  # noqa: PLC0415

    return main(["check", "--redis-url", url, "--data-dir", str(data_dir), "--no-progress", "--jobs", "2"])


def test_the_shard_reader_stops_once_the_host_lets_the_directory_go(redis_url: str, tmp_path: Path) -> None:
    """The reader reads while a host holds the directory; once the host is gone (a checking
    process killed: its lock goes with it) the next read is refused, so a gateway starting on
    the directory never has a reader beside it."""
    asyncio.run(seed_and_import(redis_url, tmp_path))

    async def beside_a_host() -> None:
        host = build_actor_host(tmp_path, load_settings().limits)
        await host.start()
        reader = ShardReader(tmp_path, SHARDED_TABLES, 8)
        reader.open()
        try:
            rows = [r for i in range(8) for r in await reader.read_rows("agent", i, "memory", "id")]
            assert rows  # the imported memories are read
            await host.close()
            with pytest.raises(DataDirError, match="let it go"):
                await reader.read_rows("agent", 0, "memory", "id")
        finally:
            reader.close()

    asyncio.run(beside_a_host())


def test_the_shard_reader_stops_once_the_process_holding_for_it_is_gone(
    redis_url: str, tmp_path: Path
) -> None:
    """The directory still held (here by this process's host, as by a gateway that took the lock
    at once), but the process the reader read for is gone: the next read is refused."""
    asyncio.run(seed_and_import(redis_url, tmp_path))
    holder = {"alive": True}

    async def beside_a_host() -> None:
        host = build_actor_host(tmp_path, load_settings().limits)
        await host.start()
        reader = ShardReader(tmp_path, SHARDED_TABLES, 8, holder_alive=lambda: holder["alive"])
        reader.open()
        try:
            assert [r for i in range(8) for r in await reader.read_rows("agent", i, "memory", "id")]
            holder["alive"] = False
            with pytest.raises(DataDirError, match="is gone"):
                await reader.read_rows("agent", 0, "memory", "id")
        finally:
            reader.close()
            await host.close()

    asyncio.run(beside_a_host())
