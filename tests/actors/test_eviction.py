"""S12 idle eviction and the bound on open databases (and so on threads), whatever the number of actors."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.actors import ActorHost, ActorRef, HostLimits
from gateway.clock import FakeClock, settle
from gateway.testing.actors import CountingActor, host_for

REF = ActorRef("c", "a")


def put_own_name(ref: ActorRef) -> Callable[[CountingActor], Awaitable[None]]:
    async def turn(actor: CountingActor) -> None:
        actor.put("name", len(ref.name))
        actor.ctx.sql.exec("CREATE TABLE IF NOT EXISTS me (name TEXT)")
        actor.ctx.sql.exec("INSERT INTO me (name) VALUES (?)", ref.name)

    return turn


async def read_own_name(actor: CountingActor) -> list[str]:
    return [str(row[0]) for row in actor.ctx.sql.exec("SELECT name FROM me").all()]


async def test_touching_200_actors_keeps_at_most_8_open_and_loses_no_data(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """With max_open=8, 200 actors never hold more than 8 databases open and keep their data."""
    refs = [ActorRef("c", f"agent-{i}") for i in range(200)]
    async with host_for(data_dir, {"c": kind}, clock=clock, limits=HostLimits(max_open=8)) as host:
        for ref in refs:
            await host.call(ref, put_own_name(ref))
            assert host.open_count <= 8
        for ref in refs:
            assert await host.call(ref, read_own_name) == [ref.name]
            assert host.open_count <= 8
        assert host.peak_open <= 8
        assert host.evictions >= 200 * 2 - 8
        assert kind.counters.constructed == 400  # every reactivation constructs again


async def test_concurrent_busy_actors_wait_for_a_free_slot(data_dir: Path, clock: FakeClock) -> None:
    """40 concurrent turns on 40 actors with max_open=8: at most 8 run (and are open) at once, all finish."""
    release = asyncio.Event()
    running: list[int] = []
    peak = 0

    async with host_for(data_dir, {"c": CountingActor}, clock=clock, limits=HostLimits(max_open=8)) as host:

        async def turn(actor: CountingActor) -> None:
            nonlocal peak
            running.append(1)
            peak = max(peak, len(running))
            await release.wait()
            running.pop()

        tasks = [asyncio.ensure_future(host.call(ActorRef("c", f"x{i}"), turn)) for i in range(40)]
        await settle()
        assert len(running) == 8
        assert host.open_count == 8
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert peak == 8
        assert host.peak_open <= 8


async def test_idle_timeout_evicts_only_idle_actors(data_dir: Path, clock: FakeClock) -> None:
    """After idle_timeout an idle actor is closed, a busy one stays open, and the closed one reactivates."""
    limits = HostLimits(idle_timeout_s=10.0)
    busy_ref = ActorRef("c", "busy")
    release = asyncio.Event()

    async def hold(actor: CountingActor) -> None:
        await release.wait()

    async def put(actor: CountingActor) -> None:
        actor.put("k", 5)

    async def get(actor: CountingActor) -> int | None:
        return actor.get("k")

    async with host_for(data_dir, {"c": CountingActor}, clock=clock, limits=limits) as host:
        await host.call(REF, put)
        busy = asyncio.ensure_future(host.call(busy_ref, hold))
        await settle()
        await clock.advance(6_000)
        assert host.is_active(REF), "evicted before idle_timeout"
        await clock.advance(6_000)
        assert not host.is_active(REF), "not evicted after idle_timeout"
        assert host.is_active(busy_ref), "a busy actor was evicted"
        assert await host.call(REF, get) == 5
        release.set()
        await asyncio.wait_for(busy, 5)


async def test_evict_refuses_a_busy_actor(host: ActorHost) -> None:
    """host.evict closes an idle actor but leaves one that is in a turn."""
    release = asyncio.Event()

    async def hold(actor: CountingActor) -> None:
        await release.wait()

    task = asyncio.ensure_future(host.call(REF, hold))
    await settle()
    assert await host.evict(REF) is False
    assert host.is_active(REF)
    release.set()
    await asyncio.wait_for(task, 5)
    assert await host.evict(REF) is True
    assert host.open_count == 0


async def test_threads_do_not_grow_with_the_number_of_actors(data_dir: Path, clock: FakeClock) -> None:
    """Under synchronous=NORMAL, touching 100 actors starts no thread: statements and commits run inline."""
    before = threading.active_count()
    async with host_for(data_dir, {"c": CountingActor}, clock=clock, limits=HostLimits(max_open=16)) as host:
        for i in range(100):
            await host.call(ActorRef("c", f"t{i}"), put_own_name(ActorRef("c", f"t{i}")))
            assert threading.active_count() == before
        assert host.open_count <= 16


async def test_threads_stay_bounded_under_full_synchronous(data_dir: Path) -> None:
    """Under synchronous=FULL commits hop to a bounded worker pool: 50 more actors add no thread."""
    async with host_for(
        data_dir, {"c": CountingActor}, synchronous="FULL", limits=HostLimits(max_open=16)
    ) as host:
        for i in range(20):
            await host.call(ActorRef("c", f"f{i}"), put_own_name(ActorRef("c", f"f{i}")))
        after_20 = threading.active_count()
        for i in range(20, 70):
            await host.call(ActorRef("c", f"f{i}"), put_own_name(ActorRef("c", f"f{i}")))
        assert threading.active_count() == after_20
        assert host.peak_open <= 16
