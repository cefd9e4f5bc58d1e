"""S4 one implicit transaction per turn; S5 the output gate (reply and frames wait for the commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.actors import ActorHost, ActorRef, HostedSocket, ThreadCommitter
from gateway.clock import FakeClock, settle
from gateway.errors import CommitFailed
from gateway.testing.actors import (
    CountingActor,
    FakeSocket,
    FaultyCommitter,
    GatedExecutor,
    ManualCommitter,
    host_for,
    query_actor_db,
)

REF = ActorRef("c", "a")
T = TypeVar("T")


async def insert_three(actor: CountingActor) -> None:
    for i in range(3):
        actor.put(f"k{i}", i)


async def test_exception_rolls_back_every_write_of_the_turn(host: ActorHost, data_dir: Path) -> None:
    """Three inserts then an exception: the caller gets that exception and the table stays empty."""

    async def turn(actor: CountingActor) -> None:
        await insert_three(actor)
        await asyncio.sleep(0)
        raise ValueError("handler failed")

    with pytest.raises(ValueError, match="handler failed"):
        await host.call(REF, turn)
    assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(0,)]
    assert await host.call(REF, _count) == 0
    assert not host.in_transaction(REF)


async def _count(actor: CountingActor) -> int:
    return int(actor.ctx.sql.exec("SELECT count(*) FROM kv").one()[0])


async def test_successful_turn_commits_all_its_writes(host: ActorHost, data_dir: Path) -> None:
    """Three inserts then success: all three are durable and visible to another connection."""
    await host.call(REF, insert_three)
    assert query_actor_db(data_dir, REF, "SELECT k, v FROM kv ORDER BY k") == [
        ("k0", 0),
        ("k1", 1),
        ("k2", 2),
    ]
    assert not host.in_transaction(REF)


async def test_frames_of_a_failed_turn_are_discarded(host: ActorHost) -> None:
    """Frames queued by a turn that raises are never written to the socket."""
    sock = FakeSocket()
    hs = await host.call(REF, lambda actor: _accept(actor, sock))

    async def turn(actor: CountingActor) -> None:
        actor.ctx.send(hs, "should not leave")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await host.call(REF, turn)
    await hs.flush(1.0)
    assert sock.sent == []


async def _accept(actor: CountingActor, sock: FakeSocket) -> HostedSocket:
    return actor.ctx.accept_websocket(sock, ["t"])


async def resolved(
    host: ActorHost, committer: ManualCommitter, fn: Callable[[CountingActor], Awaitable[T]]
) -> T:
    """Run a turn on a host with a ManualCommitter and let its commit through."""
    task = asyncio.ensure_future(host.call(REF, fn))
    await committer.wait_for_commit()
    committer.resolve()
    return await asyncio.wait_for(task, 5)


async def test_reply_and_frames_wait_for_the_commit(data_dir: Path, clock: FakeClock) -> None:
    """While the commit is blocked neither the reply nor a queued frame has left; once it resolves both do."""
    committer = ManualCommitter()
    sock = FakeSocket()
    async with host_for(data_dir, {"c": CountingActor}, clock=clock, committer=committer) as host:
        hs = await resolved(host, committer, lambda actor: _accept(actor, sock))

        async def turn(actor: CountingActor) -> str:
            actor.put("k", 1)
            actor.ctx.send(hs, "frame")
            return "reply"

        task = asyncio.ensure_future(host.call(REF, turn))
        await committer.wait_for_commit()
        await settle()
        assert not task.done(), "the reply left before the commit"
        assert sock.sent == [], "a frame left before the commit"
        assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(0,)]

        committer.resolve()
        assert await asyncio.wait_for(task, 5) == "reply"
        await hs.flush(1.0)
        assert sock.sent == ["frame"]
        assert query_actor_db(data_dir, REF, "SELECT v FROM kv") == [(1,)]
        committer.assert_no_pending()


async def test_failed_commit_resets_the_actor_and_sends_nothing(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """A failed commit gives a retryable CommitFailed, sends no frame, and the next event constructs anew."""
    committer = ManualCommitter()
    sock = FakeSocket()
    async with host_for(data_dir, {"c": kind}, clock=clock, committer=committer) as host:
        hs = await resolved(host, committer, lambda actor: _accept(actor, sock))
        assert kind.counters.constructed == 1

        async def turn(actor: CountingActor) -> str:
            actor.in_memory = 7
            actor.put("k", 1)
            actor.ctx.send(hs, "frame")
            return "reply"

        task = asyncio.ensure_future(host.call(REF, turn))
        await committer.wait_for_commit()
        committer.fail()
        with pytest.raises(CommitFailed) as failed:
            await asyncio.wait_for(task, 5)
        assert failed.value.retryable
        assert failed.value.status == 503
        await hs.flush(1.0)
        assert sock.sent == []

        async def look(actor: CountingActor) -> tuple[int, int | None]:
            return actor.in_memory, actor.get("k")

        assert await resolved(host, committer, look) == (0, None)
        assert kind.counters.constructed == 2
        assert host.get_websockets(REF) == [hs], "a reset must not drop the sockets the host holds"
        committer.assert_no_pending()


async def test_faulty_commit_fails_only_that_turn(data_dir: Path) -> None:
    """With the 2nd commit failing, that turn's writes are lost and the turns around it are kept."""
    committer = FaultyCommitter(fail_on=2)
    async with host_for(data_dir, {"c": CountingActor}, committer=committer) as host:

        def put(key: str) -> Callable[[CountingActor], Awaitable[None]]:
            async def turn(actor: CountingActor) -> None:
                actor.put(key, 1)

            return turn

        await host.call(REF, put("first"))
        with pytest.raises(CommitFailed):
            await host.call(REF, put("second"))
        await host.call(REF, put("third"))
        assert query_actor_db(data_dir, REF, "SELECT k FROM kv ORDER BY k") == [("first",), ("third",)]


async def test_waiting_events_run_on_a_fresh_instance_after_a_reset(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """An event queued behind a turn whose commit fails runs on a new instance, not the reset one."""
    committer = ManualCommitter()

    async def identity(actor: CountingActor) -> CountingActor:
        return actor

    async with host_for(data_dir, {"c": kind}, clock=clock, committer=committer) as host:
        old = await resolved(host, committer, identity)
        first = asyncio.ensure_future(host.call(REF, insert_three))
        await committer.wait_for_commit()
        second = asyncio.ensure_future(host.call(REF, identity))
        await settle()
        committer.fail()
        with pytest.raises(CommitFailed):
            await asyncio.wait_for(first, 5)
        await committer.wait_for_commit()
        committer.resolve()
        new = await asyncio.wait_for(second, 5)
        assert new is not old
        assert kind.counters.constructed == 2
        assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(0,)]
        committer.assert_no_pending()


async def test_thread_committer_hops_only_for_turns_that_wrote(data_dir: Path) -> None:
    """With a thread committer (synchronous=FULL) writes commit in the worker; read-only turns never hop."""
    executor = GatedExecutor()

    async def read(actor: CountingActor) -> int | None:
        return actor.get("k0")

    async def with_insert(actor: CountingActor) -> None:
        actor.ctx.sql.exec("WITH x(k) AS (VALUES ('w')) INSERT INTO kv (k, v) SELECT k, 1 FROM x")

    try:
        async with host_for(data_dir, {"c": CountingActor}, committer=ThreadCommitter(executor)) as host:
            await asyncio.wait_for(host.call(REF, read), 1)  # would hang if it waited for the gated thread
            assert not executor.entered.is_set()

            task = asyncio.ensure_future(host.call(REF, insert_three))
            for _ in range(500):
                if executor.entered.is_set():
                    break
                await asyncio.sleep(0.01)
            assert executor.entered.is_set(), "the write turn did not commit in the worker thread"
            assert not task.done()
            executor.proceed.set()
            await asyncio.wait_for(task, 5)
            assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(3,)]

            executor.entered.clear()
            await asyncio.wait_for(host.call(REF, with_insert), 5)
            assert executor.entered.is_set(), "a WITH ... INSERT was taken for a read"
    finally:
        executor.proceed.set()
        executor.shutdown(wait=True)
