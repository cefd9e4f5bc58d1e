"""The turn gate (`gateway/actors/gate.py`) and the host's uncontended turn (issue 13): an actor
whose gate and shard are free starts its turn without an await, and a turn that left nothing to
commit, send or wait for ends without the commit machinery. Strict turns stay strict: a second
event of a busy actor, or of another actor of a busy shard, waits its turn, first come first
served, except that an event arriving while the gate is free takes it past a woken waiter
(once per waiter), so queues drain; a turn that queued a frame or set an alarm still goes
through the commit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.actors import ActorRef
from gateway.actors.gate import TurnGate
from gateway.clock import FakeClock
from gateway.testing.actors import KV_TABLES as KV
from gateway.testing.actors import FakeSocket, KvActor, host_for


async def test_waiters_are_served_first_come_and_try_acquire_passes_a_woken_one_once() -> None:
    """`acquire` is first come, first served; a `try_acquire` between a release and the run of
    the waiter it woke takes the gate past that waiter (its turn ends in the same step, and the
    waiter then finds the gate free)."""
    gate = TurnGate()
    assert gate.try_acquire()
    assert gate.locked()
    assert not gate.try_acquire()
    order: list[object] = []

    async def waiter(i: int) -> None:
        await gate.acquire()
        order.append(i)
        gate.release()

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    gate.release()  # wakes waiter 0, which has not run yet
    assert gate.try_acquire(), "a free gate is taken past the woken waiter"
    order.append("passer")
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["passer", 0, 1, 2]
    assert gate.try_acquire()
    gate.release()
    with pytest.raises(RuntimeError):
        gate.release()


async def test_a_waiter_is_passed_over_at_most_once_and_keeps_its_place() -> None:
    """A turn that passed a woken waiter and still holds the gate when the waiter runs (it
    awaited): the waiter waits again at the head of the queue, and no `try_acquire` passes it
    a second time; the waiter queued behind it still comes after it."""
    gate = TurnGate()
    assert gate.try_acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await gate.acquire()
        order.append(i)
        gate.release()

    first = asyncio.ensure_future(waiter(0))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(waiter(1))
    await asyncio.sleep(0)
    gate.release()  # wakes waiter 0
    assert gate.try_acquire()  # passes it, and keeps the gate over the next steps
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == []
    gate.release()  # wakes waiter 0 again
    assert not gate.try_acquire(), "passed over once: no one passes it again"
    await asyncio.gather(first, second)
    assert order == [0, 1]
    assert gate.try_acquire(), "the queue is empty: a free gate is taken again"
    gate.release()


async def test_new_events_of_a_busy_actor_do_not_queue_behind_a_woken_queue(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Once a turn that held an actor's gate over several steps ends, its queue drains one
    waiter per step of the event loop; an event that arrives meanwhile runs at once (its turn
    has no await) instead of joining the end of the queue, so a queue that formed once does
    not last as long as events keep coming."""
    async with host_for(tmp_path, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as host:
        ref = ActorRef("kv", "a")
        release = asyncio.Event()
        order: list[str] = []

        async def slow(actor: KvActor) -> None:
            await release.wait()
            order.append("slow")

        def read(tag: str):  # type: ignore[no-untyped-def]
            async def turn(actor: KvActor) -> int | None:
                order.append(tag)
                return actor.get("k")

            return turn

        await host.call(ref, read("warm"))
        holder = asyncio.ensure_future(host.call(ref, slow))
        await asyncio.sleep(0)
        queued = [asyncio.ensure_future(host.call(ref, read(f"q{i}"))) for i in range(20)]
        await asyncio.sleep(0.01)
        assert order == ["warm"]
        release.set()
        await holder
        late = await asyncio.wait_for(host.call(ref, read("late")), 1)
        assert late is None
        await asyncio.gather(*queued)
        assert order.index("late") < order.index("q5"), order  # first come, first served: after q19
        assert [tag for tag in order if tag.startswith("q")] == [f"q{i}" for i in range(20)]


async def test_a_waiter_cancelled_after_it_was_woken_passes_the_gate_on() -> None:
    gate = TurnGate()
    await gate.acquire()
    first = asyncio.ensure_future(gate.acquire())
    second = asyncio.ensure_future(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1)
    assert gate.locked()
    gate.release()
    async with gate:
        assert gate.locked()
    assert not gate.locked()


async def test_a_free_actor_runs_its_turn_without_suspending(tmp_path: Path, clock: FakeClock) -> None:
    async with host_for(tmp_path, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as host:
        ref = ActorRef("kv", "a")

        async def put(actor: KvActor) -> None:
            actor.put("k", 1)

        await host.call(ref, put)  # activated, written and committed

        async def get(actor: KvActor) -> int | None:
            return actor.get("k")

        coro = host.call(ref, get)
        with pytest.raises(StopIteration) as done:
            coro.send(None)  # one step: no await suspended the read turn
        assert done.value.value == 1


async def test_turns_of_a_busy_actor_and_of_a_busy_shard_wait_their_turn(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with host_for(tmp_path, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as host:
        a, b = ActorRef("kv", "a"), ActorRef("kv", "b")
        release = asyncio.Event()
        order: list[str] = []

        async def slow(actor: KvActor) -> None:
            actor.put("k", 1)
            await release.wait()
            order.append(f"{actor.name}:slow")

        def read(tag: str):  # type: ignore[no-untyped-def]
            async def turn(actor: KvActor) -> int | None:
                order.append(f"{actor.name}:{tag}")
                return actor.get("k")

            return turn

        await host.call(b, read("warm"))  # b is open: its own gate is free below
        holder = asyncio.ensure_future(host.call(a, slow))
        await asyncio.sleep(0)
        same_actor = asyncio.ensure_future(host.call(a, read("after")))
        same_shard = asyncio.ensure_future(host.call(b, read("after")))
        await asyncio.sleep(0.01)
        assert order == ["b:warm"], "both wait: one for the actor's gate, one for the shard"
        release.set()
        assert await asyncio.wait_for(same_actor, 1) == 1
        assert await asyncio.wait_for(same_shard, 1) is None
        await holder
        # b queued on the shard first; a's second event then queues behind it for the shard
        assert order == ["b:warm", "a:slow", "b:after", "a:after"]


async def test_a_turn_that_only_queued_a_frame_still_sends_it(tmp_path: Path, clock: FakeClock) -> None:
    async with host_for(tmp_path, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as host:
        ref = ActorRef("kv", "a")
        sock = FakeSocket()

        async def accept(actor: KvActor) -> None:
            actor.ctx.accept_websocket(sock)

        await host.call(ref, accept)

        async def say(actor: KvActor) -> None:
            (hs,) = actor.ctx.get_websockets()
            actor.ctx.send(hs, "hello")

        await host.call(ref, say)
        (hs,) = host.get_websockets(ref)
        await hs.flush(1.0)
        assert sock.sent == ["hello"]
