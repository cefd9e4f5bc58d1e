"""S1 lazy activation and a stable name -> instance map; S2 one host per data directory."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gateway.actors import Actor, ActorContext, ActorHost, ActorRef, actor_path
from gateway.errors import ActorOwnedElsewhere, HostClosed, InvalidActorName
from gateway.testing.actors import CountingActor, host_for, query_actor_db

if TYPE_CHECKING:
    from tests.actors.conftest import HostProcs

REF = ActorRef("c", "a")


async def identity(actor: CountingActor) -> CountingActor:
    return actor


async def test_ref_and_reads_of_host_state_create_no_database(
    host: ActorHost, data_dir: Path, kind: type[CountingActor]
) -> None:
    """A ref, a socket lookup and a listing construct nothing and create no actor file."""
    ref = ActorRef("c", "lazy")
    assert host.get_websockets(ref) == []
    assert host.list_actors("c") == []
    assert not host.is_active(ref)
    assert not actor_path(data_dir, ref).exists()
    assert not (data_dir / "c").exists()
    assert kind.counters.constructed == 0
    assert host.open_count == 0


async def test_first_event_constructs_and_creates_the_file(
    host: ActorHost, data_dir: Path, kind: type[CountingActor]
) -> None:
    """The first event opens the database and runs the constructor; later events reuse the instance."""
    first = await host.call(REF, identity)
    assert actor_path(data_dir, REF).exists()
    assert kind.counters.constructed == 1
    assert await host.call(REF, identity) is first
    assert kind.counters.constructed == 1


async def test_concurrent_first_calls_construct_once(host: ActorHost, kind: type[CountingActor]) -> None:
    """100 concurrent first calls to one name share a single instance: the constructor runs once."""
    seen = await asyncio.wait_for(asyncio.gather(*(host.call(REF, identity) for _ in range(100))), 10)
    assert kind.counters.constructed == 1
    assert len({id(actor) for actor in seen}) == 1
    assert host.open_count == 1


async def test_two_names_two_files_isolated_data(host: ActorHost, data_dir: Path) -> None:
    """Two names give two database files, and what one writes the other does not see."""
    a, b = ActorRef("c", "a"), ActorRef("c", "b")

    async def put_a(actor: CountingActor) -> None:
        actor.put("k", 1)

    await host.call(a, put_a)
    assert await host.call(b, lambda actor: _get(actor, "k")) is None
    assert await host.call(a, lambda actor: _get(actor, "k")) == 1
    assert actor_path(data_dir, a) != actor_path(data_dir, b)
    assert query_actor_db(data_dir, a, "SELECT v FROM kv WHERE k = 'k'") == [(1,)]
    assert query_actor_db(data_dir, b, "SELECT v FROM kv WHERE k = 'k'") == []


async def _get(actor: CountingActor, key: str) -> int | None:
    return actor.get(key)


async def test_unknown_kind_is_rejected_without_a_file(host: ActorHost, data_dir: Path) -> None:
    """An event for a kind the host does not know fails with InvalidActorName and creates nothing."""
    ref = ActorRef("nope", "x")
    with pytest.raises(InvalidActorName):
        await host.call(ref, identity)
    assert not (data_dir / "nope").exists()
    assert host.open_count == 0


async def test_constructor_error_keeps_no_instance(data_dir: Path) -> None:
    """A constructor that raises fails the event; nothing is kept open and the next event constructs again."""
    attempts: list[int] = []

    class Flaky(Actor):
        def __init__(self, ctx: ActorContext) -> None:
            super().__init__(ctx)
            attempts.append(1)
            ctx.sql.exec("CREATE TABLE IF NOT EXISTS t (x)")
            if len(attempts) == 1:
                raise RuntimeError("constructor failed")

    async with host_for(data_dir, {"c": Flaky}) as host:
        with pytest.raises(RuntimeError, match="constructor failed"):
            await host.call(REF, identity)
        assert host.open_count == 0
        assert not host.in_transaction(REF)
        await host.call(REF, identity)
        assert len(attempts) == 2
        assert host.open_count == 1


async def test_events_before_start_and_after_close_get_host_closed(data_dir: Path) -> None:
    """A host that is not running refuses events with the retryable HostClosed."""
    host = ActorHost(data_dir, {"c": CountingActor})
    with pytest.raises(HostClosed) as before:
        await host.call(REF, identity)
    assert before.value.retryable
    await host.start()
    await host.close(1.0)
    with pytest.raises(HostClosed):
        await host.call(REF, identity)


async def test_second_host_in_process_is_refused_until_the_first_closes(data_dir: Path) -> None:
    """Two hosts on one directory in one process: the second fails at start; after close it can start."""
    async with host_for(data_dir, {"c": CountingActor}):
        second = ActorHost(data_dir, {"c": CountingActor})
        with pytest.raises(ActorOwnedElsewhere):
            await second.start()
    async with host_for(data_dir, {"c": CountingActor}) as third:
        await third.call(REF, identity)


def test_second_process_is_refused_until_the_first_is_killed(tmp_path: Path, procs: HostProcs) -> None:
    """A second host process on the same directory fails fast; once the first is killed a new one starts."""
    data = tmp_path / "data"
    first = procs.start("hold", data)
    assert first.next_event()["event"] == "started"

    began = time.monotonic()
    second = procs.start("start", data)
    assert second.next_event()["event"] == "owned_elsewhere"
    assert second.wait() == 3
    assert time.monotonic() - began < 5.0  # fails fast: no waiting for the lock

    first.popen.kill()
    first.wait()
    third = procs.start("start", data)
    assert third.next_event()["event"] == "started"
    assert third.wait() == 0
