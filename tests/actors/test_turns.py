"""S3 strict turns (the input gate), ctx.interleave, S14 mailbox bound, S11 block_concurrency_while."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost, ActorRef, AlarmInfo, HostedSocket, HostLimits
from gateway.clock import FakeClock, settle
from gateway.errors import ActorOverloaded, TransactionControlNotAllowed
from gateway.testing.actors import (
    Counters,
    CountingActor,
    FakeSocket,
    counting_kind,
    host_for,
    query_actor_db,
)

REF = ActorRef("c", "a")


class Tracing(CountingActor):
    """Every non-request event records enter2/exit2 around one await."""

    counters = Counters()
    events: list[str] = []  # noqa: RUF012 - replaced per test by tracing_kind()

    async def _second(self) -> None:
        self.events.append("enter2")
        await asyncio.sleep(0)
        self.events.append("exit2")

    async def alarm(self, info: AlarmInfo) -> None:
        await self._second()

    async def web_socket_message(self, ws: HostedSocket, message: str | bytes) -> None:
        await self._second()

    async def web_socket_close(self, ws: HostedSocket, code: int, reason: str) -> None:
        await self._second()


def tracing_kind(events: list[str]) -> type[Tracing]:
    class Fresh(Tracing):
        counters = Counters()

    Fresh.events = events
    return Fresh


async def accept(actor: CountingActor, sock: FakeSocket) -> HostedSocket:
    return actor.ctx.accept_websocket(sock, ["t"])


async def second_request(host: ActorHost, events: list[str]) -> None:
    async def handler(actor: CountingActor) -> None:
        events.append("enter2")
        await asyncio.sleep(0)
        events.append("exit2")

    await host.call(REF, handler)


@pytest.mark.parametrize("second", ["request", "alarm", "ws_message", "ws_close"])
async def test_paused_turn_holds_back_every_kind_of_event(
    data_dir: Path, clock: FakeClock, second: str
) -> None:
    """While a turn awaits, a second event (request, alarm, WS message, close) waits until it exits."""
    events: list[str] = []
    async with host_for(data_dir, {"c": tracing_kind(events)}, clock=clock) as host:
        hs = await host.call(REF, lambda actor: accept(actor, FakeSocket()))

        async def arm(actor: CountingActor) -> None:
            actor.ctx.set_alarm(clock.now_ms() + 1000)

        await host.call(REF, arm)
        release = asyncio.Event()

        async def first(actor: CountingActor) -> None:
            events.append("enter1")
            actor.put("k", 1)
            await release.wait()
            events.append("exit1")

        t1 = asyncio.ensure_future(host.call(REF, first))
        await settle()
        seconds: dict[str, Callable[[], Awaitable[Any]]] = {
            "request": lambda: second_request(host, events),
            "alarm": lambda: clock.advance(1000),
            "ws_message": lambda: host.deliver_ws_message(REF, hs, "hello"),
            "ws_close": lambda: host.deliver_ws_close(REF, hs, 1000, "bye"),
        }
        t2 = asyncio.ensure_future(seconds[second]())
        await settle()
        assert events == ["enter1"], "the second event entered while the first turn was paused"
        release.set()
        await asyncio.wait_for(asyncio.gather(t1, t2), 5)
        await asyncio.wait_for(host.wait_idle(), 5)
        assert events == ["enter1", "exit1", "enter2", "exit2"]


async def test_concurrent_read_await_write_increments_lose_nothing(host: ActorHost, data_dir: Path) -> None:
    """50 concurrent read-await-write increments end at 50 (no lost update across awaits)."""

    async def increment(actor: CountingActor) -> None:
        value = actor.get("n") or 0
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        actor.put("n", value + 1)

    await asyncio.wait_for(asyncio.gather(*(host.call(REF, increment) for _ in range(50))), 10)
    assert query_actor_db(data_dir, REF, "SELECT v FROM kv WHERE k = 'n'") == [(50,)]


async def test_a_paused_turn_does_not_block_other_actors(
    host: ActorHost, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """Different actors run concurrently: B answers and fires its alarm while A's turn is paused."""
    release = asyncio.Event()
    other = ActorRef("c", "b")

    async def paused(actor: CountingActor) -> None:
        await release.wait()

    async def arm(actor: CountingActor) -> None:
        actor.ctx.set_alarm(clock.now_ms() + 10)

    t1 = asyncio.ensure_future(host.call(REF, paused))
    await settle()
    await asyncio.wait_for(host.call(other, arm), 1)
    await clock.advance(10)
    assert len(kind.counters.alarms) == 1
    assert not t1.done()
    release.set()
    await asyncio.wait_for(t1, 5)


async def test_interleave_lets_another_event_run_and_resumes_behind_the_gate(
    host: ActorHost, data_dir: Path
) -> None:
    """During ctx.interleave a second request runs; the first resumes only after that request's turn ends."""
    events: list[str] = []
    seen: list[int | None] = []
    external, second_may_finish = asyncio.Event(), asyncio.Event()

    async def first(actor: CountingActor) -> None:
        events.append("enter1")
        actor.put("before", 1)
        await actor.ctx.interleave(external.wait())
        events.append("resume1")
        actor.put("after", 1)
        events.append("exit1")

    async def second(actor: CountingActor) -> None:
        events.append("enter2")
        seen.append(actor.get("before"))
        await second_may_finish.wait()
        actor.put("two", 2)
        events.append("exit2")

    t1 = asyncio.ensure_future(host.call(REF, first))
    t2: asyncio.Future[None] | None = None
    try:
        await settle()
        # the writes before the interleave are committed when the gate opens
        assert query_actor_db(data_dir, REF, "SELECT v FROM kv WHERE k = 'before'") == [(1,)]
        t2 = asyncio.ensure_future(host.call(REF, second))
        await settle()
        assert events == ["enter1", "enter2"], "the second request did not run during the interleave"
        assert seen == [1]
        external.set()
        await settle()
        assert "resume1" not in events, "the first turn resumed while the second still held the gate"
    finally:  # never leave a turn parked on the gate behind a failed assertion
        external.set()
        second_may_finish.set()
    await asyncio.wait_for(asyncio.gather(t1, t2), 5)
    assert events == ["enter1", "enter2", "exit2", "resume1", "exit1"]
    assert query_actor_db(data_dir, REF, "SELECT k FROM kv ORDER BY k") == [("after",), ("before",), ("two",)]


async def test_interleave_commits_before_and_rolls_back_only_after(host: ActorHost, data_dir: Path) -> None:
    """A turn raising after an interleave keeps what it wrote and sent before it, not what came after."""
    sock = FakeSocket()
    hs = await host.call(REF, lambda actor: accept(actor, sock))

    async def turn(actor: CountingActor) -> None:
        actor.put("before", 1)
        actor.ctx.send(hs, "before")
        await actor.ctx.interleave(asyncio.sleep(0))
        actor.put("after", 1)
        actor.ctx.send(hs, "after")
        raise RuntimeError("after the interleave")

    with pytest.raises(RuntimeError, match="after the interleave"):
        await host.call(REF, turn)
    await hs.flush(1.0)
    assert query_actor_db(data_dir, REF, "SELECT k FROM kv") == [("before",)]
    assert sock.sent == ["before"]


async def test_full_mailbox_rejects_without_running_the_handler(data_dir: Path, clock: FakeClock) -> None:
    """With mailbox_max=5 and the actor busy, the 6th waiting event gets ActorOverloaded and never runs."""
    kind = counting_kind()
    ran: list[int] = []
    release = asyncio.Event()
    async with host_for(data_dir, {"c": kind}, clock=clock, limits=HostLimits(mailbox_max=5)) as host:

        async def busy(actor: CountingActor) -> None:
            await release.wait()

        def handler(i: int) -> Callable[[CountingActor], Awaitable[None]]:
            async def run(actor: CountingActor) -> None:
                ran.append(i)

            return run

        t0 = asyncio.ensure_future(host.call(REF, busy))
        await settle()
        queued = [asyncio.ensure_future(host.call(REF, handler(i))) for i in range(5)]
        await settle()
        with pytest.raises(ActorOverloaded) as rejected:
            await asyncio.wait_for(host.call(REF, handler(99)), 1)
        assert rejected.value.status == 503
        assert rejected.value.body() == {
            "error": rejected.value.message,
            "overloaded": True,
            "retryable": False,
        }
        release.set()
        await asyncio.wait_for(asyncio.gather(t0, *queued), 5)
        await settle()
        assert ran == [0, 1, 2, 3, 4]
        await host.call(REF, handler(100))  # the mailbox drains: the actor takes events again
        assert ran[-1] == 100


async def test_interleave_is_refused_inside_a_nested_transaction(host: ActorHost, data_dir: Path) -> None:
    """ctx.interleave inside ctx.sql.transaction() raises before committing anything of the scope."""

    async def turn(actor: CountingActor) -> None:
        actor.put("outer", 1)

        async def scope() -> None:
            actor.put("inner", 1)
            await actor.ctx.interleave(asyncio.sleep(0))

        await actor.ctx.sql.transaction(scope)

    with pytest.raises(TransactionControlNotAllowed):
        await host.call(REF, turn)
    assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(0,)]
    assert not host.in_transaction(REF)
