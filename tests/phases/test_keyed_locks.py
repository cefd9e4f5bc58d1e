"""KeyedLocks and the names the phase router serialises writes by, without unbounded growth."""

from __future__ import annotations

import asyncio

import pytest

from gateway.domain.entities import EntityKey
from gateway.keyed_locks import KeyedLocks
from gateway.phases.router import replication_scope


async def test_same_name_is_serialised_and_different_names_are_not() -> None:
    """Two holders of one name take turns; a holder of another name runs meanwhile."""
    locks = KeyedLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def holder(name: str, tag: str, wait: bool) -> None:
        async with locks.hold([name]):
            order.append(f"in {tag}")
            if wait:
                await release.wait()
            order.append(f"out {tag}")

    first = asyncio.create_task(holder("task:1", "a", True))
    await asyncio.sleep(0)
    second = asyncio.create_task(holder("task:1", "b", False))
    other = asyncio.create_task(holder("task:2", "c", False))
    await asyncio.wait_for(other, 1)
    assert order == ["in a", "in c", "out c"]
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert order == ["in a", "in c", "out c", "out a", "in b", "out b"]


async def test_locks_disappear_when_nobody_holds_them() -> None:
    """After use the table is empty again: one lock per chat id would otherwise grow forever."""
    locks = KeyedLocks()
    for i in range(100):
        async with locks.hold([f"chat:{i}", "agent:x"]):
            pass
    assert len(locks) == 0


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    """Cancelling a task waiting for a lock releases nothing it did not take and cleans up."""
    locks = KeyedLocks()
    entered = asyncio.Event()
    release = asyncio.Event()

    async def owner() -> None:
        async with locks.hold(["k"]):
            entered.set()
            await release.wait()

    async def waiter() -> None:
        async with locks.hold(["a", "k"]):
            pytest.fail("the waiter must not get the lock")

    own = asyncio.create_task(owner())
    await entered.wait()
    wait = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    release.set()
    await own
    assert len(locks) == 0
    async with locks.hold(["a", "k"]):  # both free again
        pass


def test_an_agents_record_does_not_share_a_lock_with_its_actor() -> None:
    """A heartbeat or /work (the coordinator's record of agent a) and a DM to a or a's checkpoint
    (a's own actor) replicate under different locks; a's DM and checkpoint share one."""
    record = replication_scope(EntityKey("agent", "", "a"))
    dm = replication_scope(EntityKey("dm", "a", "m1"))
    checkpoint = replication_scope(EntityKey("checkpoint", "a", ""))
    assert record != dm
    assert dm == checkpoint
    assert replication_scope(EntityKey("chat", "", "m1")) != replication_scope(EntityKey("chat", "", "m2"))
