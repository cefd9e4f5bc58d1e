"""S8 alarm storage (one alarm, transactional, index <= stored) and S9 alarm firing (at least once,
one handler at a time, retries with jittered backoff, stale index entries, past-due on start-up)."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.actors import ActorHost, ActorRef, AlarmInfo, HostLimits
from gateway.clock import FakeClock, settle
from gateway.testing.actors import (
    CountingActor,
    FaultyCommitter,
    ManualCommitter,
    host_for,
    query_actor_db,
)

REF = ActorRef("c", "a")


def setter(ms: int | None) -> Any:
    async def turn(actor: CountingActor) -> None:
        if ms is None:
            actor.ctx.delete_alarm()
        else:
            actor.ctx.set_alarm(ms)

    return turn


async def get_alarm(actor: CountingActor) -> int | None:
    return actor.ctx.get_alarm()


def stored_alarm(data_dir: Path, ref: ActorRef = REF) -> int | None:
    rows = query_actor_db(data_dir, ref, "SELECT value FROM _actor_meta WHERE key = 'alarm'")
    return None if not rows else int(rows[0][0])


# -- S8 storage --------------------------------------------------------------------------------------


async def test_set_then_get_in_the_turn_later_and_after_restart(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """set_alarm is visible to get_alarm in the same turn, in later turns, and after a restart."""
    at = clock.now_ms() + 60_000

    async def set_and_get(actor: CountingActor) -> int | None:
        actor.ctx.set_alarm(at)
        return actor.ctx.get_alarm()

    async with host_for(data_dir, {"c": kind}, clock=clock) as host:
        assert await host.call(REF, get_alarm) is None
        assert await host.call(REF, set_and_get) == at
        assert await host.call(REF, get_alarm) == at
        assert host.next_alarm_ms() == at
    assert stored_alarm(data_dir) == at
    async with host_for(data_dir, {"c": kind}, clock=clock) as host:
        assert host.next_alarm_ms() == at
        assert await host.call(REF, get_alarm) == at


async def test_setting_twice_keeps_only_the_second(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """A second set_alarm replaces the first: nothing fires at the first time, once at the second."""
    t0 = clock.now_ms()
    await host.call(REF, setter(t0 + 1_000))
    await host.call(REF, setter(t0 + 5_000))
    assert await host.call(REF, get_alarm) == t0 + 5_000
    await clock.advance(1_000)
    await host.wait_idle()
    assert kind.counters.alarms == []
    await clock.advance(4_000)
    await host.wait_idle()
    assert len(kind.counters.alarms) == 1


async def test_setting_the_same_time_twice_fires_once(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """A duplicate set_alarm is a no-op: the alarm fires once."""
    at = clock.now_ms() + 1_000
    await host.call(REF, setter(at))
    await host.call(REF, setter(at))
    await clock.advance(1_000)
    await host.wait_idle()
    await clock.advance(10_000)
    await host.wait_idle()
    assert len(kind.counters.alarms) == 1


async def test_rollback_leaves_the_alarm_unchanged(host: ActorHost, clock: FakeClock, data_dir: Path) -> None:
    """A turn that sets or deletes the alarm and then raises leaves the old alarm stored and indexed."""
    old = clock.now_ms() + 10_000

    async def set_then_raise(actor: CountingActor) -> None:
        actor.ctx.set_alarm(old - 5_000)
        raise RuntimeError("rolled back")

    async def delete_then_raise(actor: CountingActor) -> None:
        actor.ctx.delete_alarm()
        raise RuntimeError("rolled back")

    await host.call(REF, setter(old))
    for turn in (set_then_raise, delete_then_raise):
        with pytest.raises(RuntimeError):
            await host.call(REF, turn)
        assert await host.call(REF, get_alarm) == old
        assert stored_alarm(data_dir) == old
        assert host.next_alarm_ms() == old


async def test_alarm_commits_in_the_same_transaction_as_the_data(data_dir: Path, clock: FakeClock) -> None:
    """While the commit is blocked neither the row nor the alarm is stored; after it both are."""
    committer = ManualCommitter()
    at = clock.now_ms() + 60_000

    async def turn(actor: CountingActor) -> None:
        actor.put("k", 1)
        actor.ctx.set_alarm(at)

    async with host_for(data_dir, {"c": CountingActor}, clock=clock, committer=committer) as host:
        task = asyncio.ensure_future(host.call(REF, turn))
        await committer.wait_for_commit()
        assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(0,)]
        assert stored_alarm(data_dir) is None
        committer.resolve()
        await asyncio.wait_for(task, 5)
        assert query_actor_db(data_dir, REF, "SELECT v FROM kv") == [(1,)]
        assert stored_alarm(data_dir) == at


async def test_delete_clears_stored_and_indexed_alarm(
    host: ActorHost, clock: FakeClock, data_dir: Path, kind: type[CountingActor]
) -> None:
    """delete_alarm clears get_alarm, the stored row and the index, and nothing fires."""
    await host.call(REF, setter(clock.now_ms() + 1_000))
    await host.call(REF, setter(None))
    assert await host.call(REF, get_alarm) is None
    assert stored_alarm(data_dir) is None
    assert host.pending_alarms == 0
    await clock.advance(5_000)
    await host.wait_idle()
    assert kind.counters.alarms == []


async def test_index_moves_earlier_before_the_commit_and_later_after_it(
    data_dir: Path, clock: FakeClock
) -> None:
    """Moving the alarm earlier updates the index before the commit, moving it later only after it."""
    committer = ManualCommitter()
    t0 = clock.now_ms()
    async with host_for(data_dir, {"c": CountingActor}, clock=clock, committer=committer) as host:

        async def set_with_commit_blocked(ms: int) -> int | None:
            task = asyncio.ensure_future(host.call(REF, setter(ms)))
            await committer.wait_for_commit()
            during = host.next_alarm_ms()
            committer.resolve()
            await asyncio.wait_for(task, 5)
            return during

        assert await set_with_commit_blocked(t0 + 20_000) == t0 + 20_000  # none -> set: index first
        assert await set_with_commit_blocked(t0 + 10_000) == t0 + 10_000  # earlier: index first
        assert host.next_alarm_ms() == t0 + 10_000
        assert await set_with_commit_blocked(t0 + 30_000) == t0 + 10_000  # later: index after commit
        assert host.next_alarm_ms() == t0 + 30_000


# -- S9 firing ------------------------------------------------------------------------------------------


async def test_alarm_fires_exactly_once_at_its_time(
    host: ActorHost, clock: FakeClock, data_dir: Path, kind: type[CountingActor]
) -> None:
    """A successful alarm fires once, not before its time, is not a retry, and is then cleared."""
    await host.call(REF, setter(clock.now_ms() + 5_000))
    await clock.advance(4_999)
    await host.wait_idle()
    assert kind.counters.alarms == []
    await clock.advance(1)
    await host.wait_idle()
    assert kind.counters.alarms == [AlarmInfo(retry_count=0, is_retry=False)]
    await clock.advance(120_000)
    await host.wait_idle()
    assert len(kind.counters.alarms) == 1
    assert await host.call(REF, get_alarm) is None
    assert stored_alarm(data_dir) is None
    assert host.pending_alarms == 0


async def test_alarms_set_in_any_order_fire_each_at_its_time(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """Alarms of several actors set later, earlier and between each other fire each at its own
    time. One due after the scheduler's next wake-up does not wake it (a lock acquire sets one
    each time, issue 13); one due before does."""
    t0 = clock.now_ms()
    refs = [ActorRef("c", name) for name in ("late", "early", "middle", "latest")]
    await host.call(refs[0], setter(t0 + 5_000))
    await settle()  # the scheduler now sleeps until t0 + 5,000
    await host.call(refs[1], setter(t0 + 1_000))  # earlier: wakes it
    await settle()
    for ref, at in ((refs[2], t0 + 3_000), (refs[3], t0 + 9_000)):  # later than its next wake-up
        await host.call(ref, setter(at))
        assert not host._wake.is_set()
    fired: list[int] = []
    for step in (999, 1, 1_999, 1, 1_999, 1, 3_999, 1):
        await clock.advance(step)
        await host.wait_idle()
        fired.append(len(kind.counters.alarms))
    assert fired == [0, 1, 1, 2, 2, 3, 3, 4]
    assert host.pending_alarms == 0


async def test_past_alarm_fires_without_moving_the_clock(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """An alarm set in the past fires on the scheduler's next tick."""
    await host.call(REF, setter(clock.now_ms() - 1_000))
    await settle()
    await host.wait_idle()
    assert len(kind.counters.alarms) == 1


async def test_failing_handler_is_retried_with_backoff_then_given_up(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """A raising handler is re-run at ~2, 4, 8, 16, 32, 64 s (+-25 %) with retry_count 1..6, then dropped."""
    runs: list[tuple[int, AlarmInfo]] = []

    def fail(actor: CountingActor, info: AlarmInfo) -> None:
        runs.append((clock.now_ms(), info))
        actor.put("attempt", info.retry_count)  # rolled back with the failed turn
        raise RuntimeError("alarm handler failed")

    kind.alarm_behaviour = fail
    step_ms = 250
    with capture_logs() as logs:
        async with host_for(data_dir, {"c": kind}, clock=clock, rng=random.Random(1234)) as host:
            await host.call(REF, setter(clock.now_ms() + 1_000))
            for _ in range(200_000 // step_ms):
                await clock.advance(step_ms)
            await host.wait_idle()
            assert host.pending_alarms == 0
            assert await host.call(REF, get_alarm) is None, "a given-up alarm must not stay stored"
            assert await host.call(REF, lambda actor: _get(actor, "attempt")) is None
    assert [info.retry_count for _, info in runs] == [0, 1, 2, 3, 4, 5, 6]
    assert [info.is_retry for _, info in runs] == [False] + [True] * 6
    deltas = [b - a for (a, _), (b, _) in itertools.pairwise(runs)]
    for k, delta in enumerate(deltas):
        nominal = 2_000 * 2**k
        assert 0.75 * nominal <= delta <= 1.25 * nominal + step_ms, (k, delta)
    assert deltas != [2_000 * 2**k for k in range(6)], "no jitter"
    events = [entry["event"] for entry in logs]
    assert events.count("alarm.retry") == 6
    assert events.count("alarm.gave_up") == 1


async def _get(actor: CountingActor, key: str) -> int | None:
    return actor.get(key)


async def test_handler_that_sets_a_new_alarm_ends_with_it(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor], data_dir: Path
) -> None:
    """A handler that calls set_alarm(t2) and succeeds leaves the alarm at t2, which then fires too."""
    t0 = clock.now_ms()
    kind.alarm_behaviour = lambda actor, info: (
        actor.ctx.set_alarm(t0 + 10_000) if len(kind.counters.alarms) == 1 else None
    )
    await host.call(REF, setter(t0 + 1_000))
    await clock.advance(1_000)
    await host.wait_idle()
    assert await host.call(REF, get_alarm) == t0 + 10_000
    assert stored_alarm(data_dir) == t0 + 10_000
    assert host.next_alarm_ms() == t0 + 10_000
    await clock.advance(9_000)
    await host.wait_idle()
    assert len(kind.counters.alarms) == 2
    assert await host.call(REF, get_alarm) is None


async def test_handler_that_sets_an_alarm_then_raises_is_retried_for_the_old_one(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """A handler that sets an alarm then raises is rolled back: the new alarm is dropped, the old retried."""
    t0 = clock.now_ms()

    def behaviour(actor: CountingActor, info: AlarmInfo) -> None:
        if info.retry_count == 0:
            actor.ctx.set_alarm(t0 + 3_600_000)
            raise RuntimeError("first run fails")

    kind.alarm_behaviour = behaviour
    await host.call(REF, setter(t0 + 1_000))
    await clock.advance(1_000)
    await host.wait_idle()
    assert await host.call(REF, get_alarm) == t0 + 1_000  # the new alarm was rolled back
    await clock.advance(2_600)  # the first retry is due within 2 s +- 25 %
    await host.wait_idle()
    assert [info.retry_count for info in kind.counters.alarms] == [0, 1]
    assert await host.call(REF, get_alarm) is None


async def test_get_alarm_is_none_inside_the_handler(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """Inside the alarm handler get_alarm() returns None (unless the handler sets a new one)."""
    seen: list[int | None] = []
    kind.alarm_behaviour = lambda actor, info: seen.append(actor.ctx.get_alarm())
    await host.call(REF, setter(clock.now_ms() + 1_000))
    await clock.advance(1_000)
    await host.wait_idle()
    assert seen == [None]


async def test_request_arriving_mid_alarm_waits_for_the_handler(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """A request that arrives while the alarm handler awaits runs only after the handler finished."""
    events: list[str] = []
    release = asyncio.Event()

    async def slow_alarm(actor: CountingActor, info: AlarmInfo) -> None:
        events.append("alarm-enter")
        await release.wait()
        events.append("alarm-exit")

    kind.alarm_behaviour = slow_alarm

    async def request(actor: CountingActor) -> None:
        events.append("request")

    await host.call(REF, setter(clock.now_ms() + 1_000))
    await clock.advance(1_000)
    assert events == ["alarm-enter"]
    task = asyncio.ensure_future(host.call(REF, request))
    await settle()
    assert events == ["alarm-enter"]
    release.set()
    await asyncio.wait_for(task, 5)
    await host.wait_idle()
    assert events == ["alarm-enter", "alarm-exit", "request"]


async def test_index_entry_older_than_the_stored_alarm_is_skipped_and_rescheduled(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """An index entry at t1 older than the stored alarm t2 (failed commit) fires nothing at t1, once at t2."""
    t0 = clock.now_ms()
    committer = FaultyCommitter(fail_on=2)
    async with host_for(data_dir, {"c": kind}, clock=clock, committer=committer) as host:
        await host.call(REF, setter(t0 + 20_000))  # commit 1: stored and indexed at t2
        with pytest.raises(Exception, match="could not commit"):
            await host.call(REF, setter(t0 + 5_000))  # commit 2 fails after the index moved to t1
        assert host.next_alarm_ms() == t0 + 5_000
        assert stored_alarm(data_dir) == t0 + 20_000
        await clock.advance(5_000)
        await host.wait_idle()
        assert kind.counters.alarms == []
        assert host.next_alarm_ms() == t0 + 20_000
        await clock.advance(15_000)
        await host.wait_idle()
        assert len(kind.counters.alarms) == 1


async def test_stale_index_after_restart_follows_the_stored_alarm(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """After a crash between a commit and its later index update, a new host fires at the stored time."""
    t0 = clock.now_ms()
    async with host_for(data_dir, {"c": kind}, clock=clock) as host:
        await host.call(REF, setter(t0 + 10_000))
    # what a crash right after the commit of "move to t0 + 60 s" leaves behind: the index is older
    conn = sqlite3.connect(data_dir / "c" / _relative(data_dir), isolation_level=None)
    conn.execute("UPDATE _actor_meta SET value = ? WHERE key = 'alarm'", (t0 + 60_000,))
    conn.close()
    async with host_for(data_dir, {"c": kind}, clock=clock) as host:
        assert host.next_alarm_ms() == t0 + 10_000
        await clock.advance(10_000)
        await host.wait_idle()
        assert kind.counters.alarms == []
        assert host.next_alarm_ms() == t0 + 60_000
        await clock.advance(50_000)
        await host.wait_idle()
        assert len(kind.counters.alarms) == 1


def _relative(data_dir: Path) -> Path:
    from gateway.actors import actor_path  # noqa: PLC0415

    return actor_path(data_dir, REF).relative_to(data_dir / "c")


async def test_past_due_alarm_fires_after_a_restart(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """An alarm that came due while no host ran fires as soon as a new host starts on the directory."""
    async with host_for(data_dir, {"c": kind}, clock=clock) as host:
        await host.call(REF, setter(clock.now_ms() + 10_000))
    await clock.advance(60_000)  # no host is running
    assert kind.counters.alarms == []
    async with host_for(data_dir, {"c": kind}, clock=clock) as host:
        await settle()
        await host.wait_idle()
        assert len(kind.counters.alarms) == 1
        assert host.pending_alarms == 0
    assert stored_alarm(data_dir) is None


async def test_alarm_re_set_earlier_runs_one_retry_chain(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """Setting t1, then t2 > t1, then t1 again leaves one schedule: a failing handler runs 0..6 once each."""
    t0 = clock.now_ms()

    def fail(actor: CountingActor, info: AlarmInfo) -> None:
        raise RuntimeError("always fails")

    kind.alarm_behaviour = fail
    for ms in (t0 + 1_000, t0 + 5_000, t0 + 1_000):
        await host.call(REF, setter(ms))
    for _ in range(200):
        await clock.advance(1_000)
    await host.wait_idle()
    assert [info.retry_count for info in kind.counters.alarms] == [0, 1, 2, 3, 4, 5, 6]


async def test_run_alarm_runs_a_set_alarm_now(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """run_alarm (DO's runDurableObjectAlarm) runs a set alarm early and reports when none is set."""
    assert await host.run_alarm(REF) is False
    await host.call(REF, setter(clock.now_ms() + 3_600_000))
    assert await host.run_alarm(REF) is True
    assert len(kind.counters.alarms) == 1
    assert await host.call(REF, get_alarm) is None
    assert host.pending_alarms == 0


async def test_ten_thousand_alarms_live_in_the_heap_not_in_tasks(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """10,000 reloaded alarms and 60 set by turns cost no task each; the due ones fire once each."""
    t0 = clock.now_ms()
    async with host_for(data_dir, {"c": kind}, clock=clock):
        pass
    index = sqlite3.connect(data_dir / "host.sqlite", isolation_level=None)
    index.executemany(
        "INSERT INTO alarms (kind, name, ts) VALUES ('c', ?, ?)",
        [(f"far-{i}", t0 + 86_400_000 + i) for i in range(10_000)],
    )
    index.close()
    baseline = len(asyncio.all_tasks())
    # scheduler, sweeper, checkpointer and the scheduler's two waits: a constant, not one per actor
    host_tasks = 5
    limits = HostLimits(max_open=16)
    async with host_for(data_dir, {"c": kind}, clock=clock, limits=limits) as host:
        assert host.pending_alarms == 10_000
        assert len(asyncio.all_tasks()) <= baseline + host_tasks
        near = [ActorRef("c", f"near-{i}") for i in range(60)]
        for i, ref in enumerate(near):
            await host.call(ref, setter(t0 + 1_000 + i))
        assert host.pending_alarms == 10_060
        assert len(asyncio.all_tasks()) <= baseline + host_tasks
        assert host.open_count <= 16
        await clock.advance(2_000)
        await host.wait_idle()
        assert len(kind.counters.alarms) == 60
        assert host.pending_alarms == 10_000
        assert host.peak_open <= 16
        assert len(asyncio.all_tasks()) <= baseline + host_tasks


async def test_alarm_handler_failing_after_an_interleave_is_still_retried(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor], data_dir: Path
) -> None:
    """An alarm handler that interleaves then raises keeps its alarm: retried, cleared only on success."""
    t0 = clock.now_ms()
    seen: list[int | None] = []

    async def behaviour(actor: CountingActor, info: AlarmInfo) -> None:
        actor.put(f"run{info.retry_count}", 1)
        await actor.ctx.interleave(asyncio.sleep(0))
        seen.append(actor.ctx.get_alarm())
        if info.retry_count == 0:
            raise RuntimeError("fails after the interleave")

    kind.alarm_behaviour = behaviour
    await host.call(REF, setter(t0 + 1_000))
    await clock.advance(1_000)
    await host.wait_idle()
    assert stored_alarm(data_dir) == t0 + 1_000, "the alarm was cleared by the interleave's commit"
    assert host.next_alarm_ms() == t0 + 1_000
    await clock.advance(2_600)
    await host.wait_idle()
    assert [info.retry_count for info in kind.counters.alarms] == [0, 1]
    assert seen == [None, None]
    assert stored_alarm(data_dir) is None
    assert host.pending_alarms == 0
