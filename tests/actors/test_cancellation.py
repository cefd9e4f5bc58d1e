"""S15 cancellation safety: a caller cancelled at any await point of a turn leaves no open
transaction, no held gate, no queued output and no half-applied write."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost, ActorRef, HostedSocket, HostLimits, ThreadCommitter
from gateway.clock import FakeClock, settle
from gateway.testing.actors import (
    CountingActor,
    FakeSocket,
    GatedExecutor,
    ManualCommitter,
    has_write_lock,
    host_for,
    query_actor_db,
)

REF = ActorRef("c", "a")


def keys(data_dir: Path) -> list[str]:
    return [str(row[0]) for row in query_actor_db(data_dir, REF, "SELECT k FROM kv ORDER BY k")]


async def assert_actor_usable(host: ActorHost, data_dir: Path) -> None:
    """No transaction is open, no write lock is held, and the next event gets the gate at once."""
    assert not host.in_transaction(REF), "a transaction was left open"
    assert not has_write_lock(data_dir, REF), "a write lock was left held"

    async def probe(actor: CountingActor) -> str:
        return "ok"

    assert await asyncio.wait_for(host.call(REF, probe), 1) == "ok"


async def cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def write_rows_then_wait(actor: CountingActor, event: asyncio.Event) -> None:
    actor.put("r1", 1)
    await asyncio.sleep(0)
    actor.put("r2", 2)
    await event.wait()
    actor.put("r3", 3)


async def test_cancel_while_waiting_for_the_gate(host: ActorHost, data_dir: Path) -> None:
    """A caller cancelled while queued behind another turn never runs its handler nor clogs the gate."""
    release, never = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    async def holder(actor: CountingActor) -> None:
        await release.wait()

    async def queued(actor: CountingActor) -> None:
        ran.append("queued")
        await write_rows_then_wait(actor, never)

    first = asyncio.ensure_future(host.call(REF, holder))
    await settle()
    second = asyncio.ensure_future(host.call(REF, queued))
    await settle()
    await cancel(second)
    release.set()
    await asyncio.wait_for(first, 5)
    assert ran == []
    await assert_actor_usable(host, data_dir)
    assert keys(data_dir) == []


async def test_cancel_inside_the_handler_rolls_the_turn_back(host: ActorHost, data_dir: Path) -> None:
    """A caller cancelled while its handler awaits gets CancelledError; none of the turn's writes remain."""
    never = asyncio.Event()
    task = asyncio.ensure_future(host.call(REF, lambda actor: write_rows_then_wait(actor, never)))
    await settle()
    assert host.in_transaction(REF)
    await cancel(task)
    await assert_actor_usable(host, data_dir)
    assert keys(data_dir) == []


async def test_cancel_inside_a_nested_transaction(host: ActorHost, data_dir: Path) -> None:
    """A caller cancelled inside ctx.sql.transaction() loses the savepoint's and the turn's writes."""
    never = asyncio.Event()

    async def turn(actor: CountingActor) -> None:
        actor.put("outer", 1)
        await actor.ctx.sql.transaction(lambda: write_rows_then_wait(actor, never))

    task = asyncio.ensure_future(host.call(REF, turn))
    await settle()
    await cancel(task)
    await assert_actor_usable(host, data_dir)
    assert keys(data_dir) == []

    async def again(actor: CountingActor) -> None:
        await actor.ctx.sql.transaction(lambda: _put(actor, "inner"))

    await host.call(REF, again)  # the savepoint stack was reset too
    assert keys(data_dir) == ["inner"]


async def _put(actor: CountingActor, key: str) -> None:
    actor.put(key, 1)


async def test_cancel_during_a_blocked_commit_applies_nothing(data_dir: Path, clock: FakeClock) -> None:
    """A caller cancelled while its commit waits to start leaves no row and no frame; the actor resets."""
    committer = ManualCommitter()
    sock = FakeSocket()
    async with host_for(data_dir, {"c": CountingActor}, clock=clock, committer=committer) as host:
        accept = asyncio.ensure_future(host.call(REF, lambda actor: _accept(actor, sock)))
        await committer.wait_for_commit()
        committer.resolve()
        hs = await asyncio.wait_for(accept, 5)

        async def turn(actor: CountingActor) -> None:
            actor.put("r1", 1)
            actor.ctx.send(hs, "frame")

        task = asyncio.ensure_future(host.call(REF, turn))
        await committer.wait_for_commit()
        await cancel(task)
        committer.assert_no_pending()
        assert not host.in_transaction(REF)
        assert not has_write_lock(data_dir, REF)
        assert keys(data_dir) == []
        await hs.flush(1.0)
        assert sock.sent == []
        probe = asyncio.ensure_future(host.call(REF, _noop))
        await committer.wait_for_commit()
        committer.resolve()
        await asyncio.wait_for(probe, 1)


async def _accept(actor: CountingActor, sock: FakeSocket) -> HostedSocket:
    return actor.ctx.accept_websocket(sock)


async def _noop(actor: CountingActor) -> None:
    pass


async def test_cancel_during_a_commit_in_a_thread_applies_everything(data_dir: Path) -> None:
    """A caller cancelled while its commit runs in a thread waits for it: all rows land, then it cancels."""
    executor = GatedExecutor()
    try:
        async with host_for(data_dir, {"c": CountingActor}, committer=ThreadCommitter(executor)) as host:
            await host.call(REF, _noop)  # activate (the constructor commits inline)
            executor.proceed.set()
            await host.call(REF, _noop)
            executor.proceed.clear()
            executor.entered.clear()

            async def turn(actor: CountingActor) -> None:
                actor.put("r1", 1)
                actor.put("r2", 2)

            task = asyncio.ensure_future(host.call(REF, turn))
            for _ in range(500):
                if executor.entered.is_set():
                    break
                await asyncio.sleep(0.01)
            assert executor.entered.is_set()
            task.cancel()
            await settle()
            assert not task.done(), "the cancelled caller abandoned a commit that was running"
            executor.proceed.set()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            assert keys(data_dir) == ["r1", "r2"]
            await assert_actor_usable(host, data_dir)
    finally:
        executor.proceed.set()
        executor.shutdown(wait=True)


async def test_cancel_during_interleave_keeps_only_the_committed_part(
    host: ActorHost, data_dir: Path
) -> None:
    """A caller cancelled during ctx.interleave keeps what was committed before it and nothing after."""
    never = asyncio.Event()

    async def turn(actor: CountingActor) -> None:
        actor.put("before", 1)
        await actor.ctx.interleave(never.wait())
        actor.put("after", 1)

    task = asyncio.ensure_future(host.call(REF, turn))
    await settle()
    await cancel(task)
    await assert_actor_usable(host, data_dir)
    assert keys(data_dir) == ["before"]


async def test_cancel_inside_block_concurrency_while_stops_the_critical_section(
    host: ActorHost, data_dir: Path
) -> None:
    """A caller cancelled inside block_concurrency_while also cancels the section: it never writes later."""
    resume = asyncio.Event()
    after: list[str] = []

    async def section(actor: CountingActor) -> None:
        actor.put("inside", 1)
        await resume.wait()
        after.append("resumed")
        actor.put("late", 1)

    async def turn(actor: CountingActor) -> None:
        await actor.ctx.block_concurrency_while(lambda: section(actor))

    task = asyncio.ensure_future(host.call(REF, turn))
    await settle()
    await cancel(task)
    resume.set()
    await settle()
    assert after == [], "the critical section kept running after its caller was cancelled"
    await assert_actor_usable(host, data_dir)

    async def other(actor: CountingActor) -> None:
        actor.put("other", 1)

    await host.call(REF, other)
    assert keys(data_dir) == ["other"]


async def test_cancel_while_waiting_for_a_free_slot(data_dir: Path, clock: FakeClock) -> None:
    """A caller cancelled while waiting for a free database slot (max_open) leaves the bound intact."""
    release = asyncio.Event()
    async with host_for(data_dir, {"c": CountingActor}, clock=clock, limits=HostLimits(max_open=1)) as host:

        async def hold(actor: CountingActor) -> None:
            await release.wait()

        holder = asyncio.ensure_future(host.call(ActorRef("c", "holder"), hold))
        await settle()
        waiting = asyncio.ensure_future(host.call(REF, _noop))
        await settle()
        assert not waiting.done()
        await cancel(waiting)
        release.set()
        await asyncio.wait_for(holder, 5)
        await asyncio.wait_for(host.call(REF, _noop), 1)
        assert host.peak_open == 1
