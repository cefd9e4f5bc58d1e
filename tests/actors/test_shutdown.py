"""S13 shutdown: stop taking events, let in-flight turns finish within a grace period, and never
leave a partial turn in the database (a real SIGTERM to a subprocess host, and in process)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.actors import ActorHost, ActorRef, AlarmInfo, HostLimits, actor_path
from gateway.clock import FakeClock, settle
from gateway.errors import HostClosed
from gateway.testing.actors import CountingActor, host_for, query_actor_db

if TYPE_CHECKING:
    from tests.actors.conftest import HostProcs

REF = ActorRef("c", "a")


def rows(data_dir: Path) -> list[int]:
    found = query_actor_db(data_dir, ActorRef("rec", "slow"), "SELECT n FROM rows ORDER BY n")
    return [int(r[0]) for r in found]


@pytest.mark.parametrize(
    ("grace_s", "outcome", "expected"),
    [("5", "ok", [1, 2, 3, 4, 5, 6]), ("0.05", "HostClosed", [])],
    ids=["grace-long-enough", "grace-too-short"],
)
def test_sigterm_with_a_slow_turn_in_flight(
    tmp_path: Path, procs: HostProcs, grace_s: str, outcome: str, expected: list[int]
) -> None:
    """SIGTERM mid-turn: the turn completes within the grace period, or fails (HostClosed) leaving no row."""
    data = tmp_path / "data"
    proc = procs.start("slow-turn", data, grace_s)
    assert proc.next_event() == {"event": "in_turn"}
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.next_event() == {"event": "closed", "turn": outcome}
    assert proc.wait() == 0
    assert rows(data) == expected


async def test_close_waits_for_an_in_flight_turn(host: ActorHost, data_dir: Path) -> None:
    """close() lets a turn that is running finish and commit before it closes the databases."""
    release = asyncio.Event()

    async def turn(actor: CountingActor) -> str:
        actor.put("a", 1)
        await release.wait()
        actor.put("b", 2)
        return "done"

    task = asyncio.ensure_future(host.call(REF, turn))
    await settle()
    closing = asyncio.ensure_future(host.close(5.0))
    await settle()
    assert not closing.done()
    with pytest.raises(HostClosed):
        await host.call(ActorRef("c", "new"), _noop)
    release.set()
    assert await asyncio.wait_for(task, 5) == "done"
    await asyncio.wait_for(closing, 5)
    assert query_actor_db(data_dir, REF, "SELECT k FROM kv ORDER BY k") == [("a",), ("b",)]


async def _noop(actor: CountingActor) -> None:
    pass


async def test_alarm_cut_off_by_shutdown_runs_again_after_restart(
    data_dir: Path, clock: FakeClock, kind: type[CountingActor]
) -> None:
    """An alarm handler still running after the grace period is rolled back and fires again on restart."""
    never = asyncio.Event()

    async def hang(actor: CountingActor, info: AlarmInfo) -> None:
        actor.put("partial", 1)
        await never.wait()

    kind.alarm_behaviour = hang
    host = ActorHost(data_dir, {"c": kind}, clock=clock)
    await host.start()

    async def arm(actor: CountingActor) -> None:
        actor.ctx.set_alarm(clock.now_ms() + 1_000)

    await host.call(REF, arm)
    await clock.advance(1_000)
    assert len(kind.counters.alarms) == 1
    await asyncio.wait_for(host.close(0.05), 5)
    assert query_actor_db(data_dir, REF, "SELECT count(*) FROM kv") == [(0,)]

    kind.alarm_behaviour = None
    async with host_for(data_dir, {"c": kind}, clock=clock) as again:
        await settle()
        await again.wait_idle()
        assert len(kind.counters.alarms) == 2
        assert again.pending_alarms == 0


async def test_events_waiting_for_a_slot_fail_when_the_host_closes(data_dir: Path, clock: FakeClock) -> None:
    """An event waiting for a free database slot gets HostClosed at shutdown and opens no database."""
    release = asyncio.Event()
    async with host_for(data_dir, {"c": CountingActor}, clock=clock, limits=HostLimits(max_open=1)) as host:

        async def hold(actor: CountingActor) -> None:
            await release.wait()

        holder = asyncio.ensure_future(host.call(ActorRef("c", "holder"), hold))
        await settle()
        waiter = asyncio.ensure_future(host.call(REF, _noop))
        await settle()
        closing = asyncio.ensure_future(host.close(5.0))
        await settle()
        release.set()
        await asyncio.wait_for(holder, 5)
        with pytest.raises(HostClosed):
            await asyncio.wait_for(waiter, 5)
        await asyncio.wait_for(closing, 5)
    assert not actor_path(data_dir, REF).exists(), "a database was opened after the host closed"
