"""The clock behind an interface: FakeClock moves only when told and wakes sleepers in deadline
order, and the host, run on a FakeClock, never waits on real time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.actors import ActorRef, AlarmInfo, HostLimits
from gateway.clock import Clock, FakeClock, SystemClock, settle
from gateway.testing.actors import CountingActor, FakeSocket, host_for


async def test_advance_wakes_due_sleepers_in_deadline_order(clock: FakeClock) -> None:
    """Sleepers wake in deadline order (not start order), and only those whose deadline has passed."""
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.ensure_future(sleeper(n, s)) for n, s in (("3s", 3), ("1s", 1), ("2s", 2), ("9s", 9))]
    await settle()
    assert clock.sleepers == 4
    await clock.advance(999)
    assert woke == []
    await clock.advance(2_001)
    assert woke == ["1s", "2s", "3s"]
    assert clock.sleepers == 1
    await clock.advance(6_000)
    assert woke == ["1s", "2s", "3s", "9s"]
    await asyncio.gather(*tasks)


async def test_fake_time_does_not_move_by_itself(clock: FakeClock) -> None:
    """now_ms changes only through advance/set, never backwards."""
    start = clock.now_ms()
    await asyncio.sleep(0.01)
    assert clock.now_ms() == start
    await clock.advance(1_500)
    assert clock.now_ms() == start + 1_500
    await clock.set(start)
    assert clock.now_ms() == start + 1_500


async def test_cancelled_sleeper_is_not_counted(clock: FakeClock) -> None:
    """A cancelled sleep is no longer pending and advancing past it is harmless."""
    task = asyncio.ensure_future(clock.sleep(5))
    await settle()
    task.cancel()
    await settle()
    assert clock.sleepers == 0
    await clock.advance(10_000)
    assert task.cancelled()


async def test_system_clock_is_wall_time() -> None:
    """SystemClock.now_ms is epoch milliseconds and both clocks satisfy the Clock protocol."""
    clocks: list[Clock] = [SystemClock(), FakeClock()]
    assert abs(clocks[0].now_ms() - time.time() * 1000) < 1_000
    await clocks[0].sleep(0)


def real_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """Timers scheduled on the loop's real clock (call_later/call_at, asyncio.sleep, wait_for)."""
    scheduled: list[asyncio.TimerHandle] = getattr(loop, "_scheduled", [])
    return [handle for handle in scheduled if not handle.cancelled()]


async def test_host_on_a_fake_clock_never_waits_on_real_time(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """On a FakeClock, alarms, retries, idle eviction and sockets schedule no real-time timer."""
    loop = asyncio.get_running_loop()
    probe = loop.call_later(3600, lambda: None)
    assert real_timers(loop) == [probe], "the probe cannot see real-time timers on this loop"
    probe.cancel()
    ref = ActorRef("c", "timers")

    def fail_first(actor: CountingActor, info: AlarmInfo) -> None:
        if info.retry_count == 0:
            raise RuntimeError("first run fails")

    kind.alarm_behaviour = fail_first

    async def arm(actor: CountingActor) -> None:
        actor.ctx.set_alarm(clock.now_ms() + 1_000)
        actor.ctx.accept_websocket(FakeSocket())

    async with host_for(data_dir, {"c": kind}, clock=clock, limits=HostLimits(idle_timeout_s=5.0)) as host:
        await host.call(ref, arm)
        await settle()
        assert real_timers(loop) == []
        await clock.advance(1_000)  # fires and fails: the retry waits on the fake clock
        assert real_timers(loop) == []
        await clock.advance(3_000)  # the retry succeeds
        await clock.advance(10_000)  # idle eviction
        await host.wait_idle()
        assert [info.retry_count for info in kind.counters.alarms] == [0, 1]
        assert not host.is_active(ref)
        assert real_timers(loop) == []
