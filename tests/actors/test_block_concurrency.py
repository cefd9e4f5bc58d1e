"""S11 ctx.block_concurrency_while: a critical section that holds the gate, and resets the actor
when it raises or runs past its 30 s timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.actors import ActorHost, ActorRef
from gateway.actors.host import BLOCK_CONCURRENCY_TIMEOUT_S
from gateway.clock import FakeClock, settle
from gateway.testing.actors import CountingActor, query_actor_db

REF = ActorRef("c", "a")


async def test_queued_events_wait_for_the_section(host: ActorHost) -> None:
    """Events that arrive during the critical section run only after it finished."""
    events: list[str] = []
    release = asyncio.Event()

    async def section() -> str:
        events.append("section-enter")
        await release.wait()
        events.append("section-exit")
        return "value"

    async def turn(actor: CountingActor) -> str:
        return await actor.ctx.block_concurrency_while(section)

    async def other(actor: CountingActor) -> None:
        events.append("other")

    first = asyncio.ensure_future(host.call(REF, turn))
    await settle()
    second = asyncio.ensure_future(host.call(REF, other))
    await settle()
    assert events == ["section-enter"]
    release.set()
    assert await asyncio.wait_for(first, 5) == "value"
    await asyncio.wait_for(second, 5)
    assert events == ["section-enter", "section-exit", "other"]


async def test_an_exception_resets_the_actor(
    host: ActorHost, kind: type[CountingActor], data_dir: Path
) -> None:
    """A section that raises fails the turn, rolls back its writes, and the next event constructs anew."""

    async def section(actor: CountingActor) -> None:
        actor.put("k", 1)
        actor.in_memory = 9
        raise RuntimeError("section failed")

    async def turn(actor: CountingActor) -> None:
        await actor.ctx.block_concurrency_while(lambda: section(actor))

    async def look(actor: CountingActor) -> int:
        return actor.in_memory

    with pytest.raises(RuntimeError, match="section failed"):
        await host.call(REF, turn)
    assert await host.call(REF, look) == 0
    assert kind.counters.constructed == 2
    assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(0,)]


async def test_a_timeout_resets_the_actor(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """A section still running after 30 s (fake time) fails with TimeoutError and the actor is reset."""
    assert BLOCK_CONCURRENCY_TIMEOUT_S == 30.0
    never = asyncio.Event()
    cancelled: list[bool] = []

    async def section() -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def turn(actor: CountingActor) -> None:
        await actor.ctx.block_concurrency_while(section)

    task = asyncio.ensure_future(host.call(REF, turn))
    await settle()
    await clock.advance(29_999)
    assert not task.done()
    await clock.advance(1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(task, 5)
    assert cancelled == [True], "the timed-out section was left running"
    await asyncio.wait_for(host.call(REF, _noop), 1)
    assert kind.counters.constructed == 2


async def _noop(actor: CountingActor) -> None:
    pass


async def test_a_successful_section_keeps_the_instance(host: ActorHost, kind: type[CountingActor]) -> None:
    """A section that returns normally does not reset anything."""

    async def turn(actor: CountingActor) -> int:
        return await actor.ctx.block_concurrency_while(_seven)

    assert await host.call(REF, turn) == 7
    await host.call(REF, _noop)
    assert kind.counters.constructed == 1


async def _seven() -> int:
    return 7
