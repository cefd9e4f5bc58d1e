"""What tools need of the host: reading shard rows without activating actors, a host that never
fires alarms, and a start with many due alarms that does not hold the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.actors import ActorHost, ActorRef, AlarmInfo
from gateway.actors.host import ALARM_CONCURRENCY
from gateway.clock import FakeClock
from gateway.errors import StorageApiError
from gateway.testing.actors import KV_TABLES as KV
from gateway.testing.actors import CountingActor, KvActor, counting_kind, host_for


def kv(name: str) -> ActorRef:
    return ActorRef("kv", name)


async def put(host: ActorHost, name: str, k: str, v: int) -> None:
    async def run(a: KvActor) -> None:
        a.put(k, v)

    await host.call(kv(name), run)


async def test_rows_of_every_actor_are_read_without_activating_any(data_dir: Path, clock: FakeClock) -> None:
    """`read_rows` returns the rows of all actors of a shard, in the asked order, with a keyset
    condition on the actor column, and activates no actor."""
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:
        for name, k, v in [("b", "y", 3), ("a", "x", 1), ("b", "x", 2), ("c", "z", 4)]:
            await put(h, name, k, v)
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:
        rows = await h.read_rows("kv", 0, "kv", "actor, k, v", order="actor, k")
        assert rows == [("a", "x", 1), ("b", "x", 2), ("b", "y", 3), ("c", "z", 4)]
        after = await h.read_rows(
            "kv", 0, "kv", "actor, k", "(actor, k) > (?, ?)", "b", "x", order="actor, k", limit=2
        )
        assert after == [("b", "y"), ("c", "z")]
        assert h.activations == 0


async def test_a_read_sees_whole_turns_only(data_dir: Path, clock: FakeClock) -> None:
    """A turn that wrote one row and is still running is not seen half-way: the read waits for
    the turn to end, then sees both of its rows."""
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:
        inside = asyncio.Event()
        go_on = asyncio.Event()

        async def two_rows(a: KvActor) -> None:
            a.put("first", 1)
            inside.set()
            await asyncio.wait_for(go_on.wait(), 5)
            a.put("second", 2)

        turn = asyncio.ensure_future(h.call(kv("a"), two_rows))
        await asyncio.wait_for(inside.wait(), 5)
        read = asyncio.ensure_future(h.read_rows("kv", 0, "kv", "k", order="k"))
        await asyncio.sleep(0.01)
        assert not read.done()
        go_on.set()
        await asyncio.wait_for(turn, 5)
        assert await asyncio.wait_for(read, 5) == [("first",), ("second",)]


@pytest.mark.parametrize(
    ("table", "cols", "where"),
    [
        ("kv", "k", "1) OR (1 = 1"),
        ("kv", "(SELECT count(*) FROM kv__log)", ""),
        ("kv", "k; DELETE FROM kv__kv", ""),
        ("nope", "k", ""),
    ],
)
async def test_bad_reads_are_refused(
    data_dir: Path, clock: FakeClock, table: str, cols: str, where: str
) -> None:
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:
        with pytest.raises(StorageApiError):
            await h.read_rows("kv", 0, table, cols, where)


async def arm_many(data_dir: Path, clock: FakeClock, names: list[str]) -> None:
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=2) as h:
        for name in names:

            async def arm(a: KvActor) -> None:
                a.ctx.set_alarm(clock.now_ms() + 1_000)

            await h.call(kv(name), arm)


async def test_a_host_that_does_not_fire_alarms_keeps_them(data_dir: Path, clock: FakeClock) -> None:
    """`fire_alarms=False` (a tool's host): due alarms stay stored and fire at the next start."""
    KvActor.fired = []
    await arm_many(data_dir, clock, ["a", "b"])
    await clock.advance(5_000)
    async with host_for(
        data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=2, fire_alarms=False
    ) as h:
        await asyncio.sleep(0.05)
        await h.wait_idle()
        assert KvActor.fired == []
        assert h.pending_alarms == 2
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=2) as h:
        for _ in range(100):
            if len(KvActor.fired) == 2:
                break
            await asyncio.sleep(0.01)
        await h.wait_idle()
        assert sorted(KvActor.fired) == ["a", "b"]


async def test_many_due_alarms_run_a_few_at_a_time(data_dir: Path, clock: FakeClock) -> None:
    """A start that finds more due alarms than ALARM_CONCURRENCY runs at most that many handlers
    at a time (of actors that could all run at once), and fires them all."""
    kind = counting_kind()
    names = [f"r{i:03d}" for i in range(2 * ALARM_CONCURRENCY + 5)]
    async with host_for(data_dir, {"c": kind}, clock=clock) as h:
        for name in names:

            async def arm(a: CountingActor) -> None:
                a.ctx.set_alarm(clock.now_ms() + 1_000)

            await h.call(ActorRef("c", name), arm)
    await clock.advance(5_000)
    running = 0
    peak = 0

    async def slow(_a: CountingActor, _info: AlarmInfo) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1

    kind.alarm_behaviour = slow
    async with host_for(data_dir, {"c": kind}, clock=clock) as h:
        for _ in range(1000):
            if len(kind.counters.alarms) == len(names):
                break
            await asyncio.sleep(0.01)
        await h.wait_idle()
    assert len(kind.counters.alarms) == len(names)
    assert peak == ALARM_CONCURRENCY
