"""Phase switches at run time, under load: nothing lost, nothing duplicated, locks stay exclusive."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.domain.phase import PHASES

from .conftest import Gw, GwFactory
from .helpers import lock_url

SHARED = "shared/file.txt"


async def acked_count(acked: dict[str, list[str]]) -> int:
    return sum(map(len, acked.values()))


async def wait_for_more(acked: dict[str, list[str]], than: int, timeout_s: float = 10.0) -> None:
    """Wait (bounded) until more than `than` writes were acknowledged."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await acked_count(acked) <= than:
        assert asyncio.get_running_loop().time() < deadline, "the writers made no progress"
        await asyncio.sleep(0.005)


async def test_switching_back_and_forth_under_concurrent_writes_loses_and_duplicates_nothing(
    start_gw: GwFactory,
) -> None:
    """Eight writers post chat and create tasks while the phase goes write-through -> read-switch
    (forced) -> write-through three times: every acknowledged id is in both stores exactly once."""
    gw = await start_gw("write-through")
    stop = asyncio.Event()
    acked: dict[str, list[str]] = {"chat": [], "task": []}

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 2:
                body = await gw.client.ok("POST", "/coordinator/chat", {"author": f"w{n}", "message": f"{i}"})
                acked["chat"].append(body["message"]["id"])
            else:
                body = await gw.client.ok("POST", "/coordinator/tasks", {"title": f"w{n}-{i}"})
                acked["task"].append(body["task"]["id"])

    writers = [asyncio.create_task(writer(n)) for n in range(8)]
    try:
        for target in ["read-switch", "write-through"] * 3:
            await wait_for_more(acked, await acked_count(acked) + 10)
            status, body = await gw.client.set_phase(target, "drill under load", force=True)
            assert status == 200, body
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), 20)

    legacy_chat = [m["id"] for m in gw.legacy.chat()]
    assert len(legacy_chat) == len(set(legacy_chat))
    assert sorted(legacy_chat) == sorted(acked["chat"])
    legacy, actors = gw.legacy.snapshot(), gw.actors.snapshot()
    assert sorted(actors["chat"]) == sorted(acked["chat"])
    assert sorted(legacy["task"]) == sorted(actors["task"]) == sorted(acked["task"])
    assert legacy == actors
    history = (await gw.client.admin("GET", "/admin/phase/history"))[1]["changes"]
    assert [(c["from"], c["to"], c["forced"]) for c in history[1:]] == [
        ("write-through", "read-switch", True),
        ("read-switch", "write-through", False),
    ] * 3


def verdicts(results: list[tuple[int, Any]]) -> tuple[list[int], list[int]]:
    """(indexes that got the lock, indexes refused with 409)."""
    won = [i for i, (status, _) in enumerate(results) if status == 200]
    refused = [i for i, (status, _) in enumerate(results) if status == 409]
    return won, refused


async def holders(gw: Gw) -> dict[str, str | None]:
    """Who holds SHARED in each store, read directly."""
    await gw.router.drain()
    legacy = gw.legacy.snapshot()["lock"].get(SHARED)
    actors = gw.actors.snapshot()["lock"].get(SHARED)
    return {
        "legacy": None if legacy is None else legacy["lockedBy"],
        "actors": None if actors is None else actors["lockedBy"],
    }


@pytest.mark.parametrize("phase", PHASES)
async def test_concurrent_acquires_have_exactly_one_winner(start_gw: GwFactory, phase: str) -> None:
    """Twenty agents acquire one resource at once: one wins, nineteen are told who holds it."""
    gw = await start_gw(phase)
    results = await asyncio.gather(
        *(gw.client.call("POST", lock_url(SHARED, "lock"), {"agentId": f"a{i}"}) for i in range(20))
    )
    won, refused = verdicts(results)
    assert len(won) == 1
    assert len(refused) == 19
    winner = f"a{won[0]}"
    assert {results[i][1]["lockedBy"] for i in refused} == {winner}
    expected = {"legacy": None if phase == "cutover" else winner, "actors": winner}
    assert await holders(gw) == expected


async def test_lock_exclusivity_holds_across_a_phase_switch(start_gw: GwFactory) -> None:
    """Acquires racing a write-through -> read-switch switch have one winner; the lock granted
    by one phase's store is honoured by the next phase's, and released there."""
    gw = await start_gw("write-through")

    def acquire(agent: str) -> Any:
        return gw.client.call("POST", lock_url(SHARED, "lock"), {"agentId": agent})

    first = [asyncio.create_task(acquire(f"a{i}")) for i in range(15)]
    switch = asyncio.create_task(gw.client.set_phase("read-switch", "switch during a lock race", force=True))
    second = [asyncio.create_task(acquire(f"b{i}")) for i in range(15)]
    results = await asyncio.gather(*first, *second)
    assert (await switch)[0] == 200
    won, refused = verdicts(results)
    assert len(won) == 1
    assert len(refused) == 29
    winner = ([f"a{i}" for i in range(15)] + [f"b{i}" for i in range(15)])[won[0]]
    assert await holders(gw) == {"legacy": winner, "actors": winner}

    status, body = await acquire("late")  # read-switch: the actors decide now
    assert (status, body["lockedBy"]) == (409, winner)
    assert await gw.client.ok("POST", lock_url(SHARED, "unlock"), {"agentId": winner}) == {
        "success": True,
        "message": "Lock released",
        "previousOwner": winner,
    }
    assert await holders(gw) == {"legacy": None, "actors": None}

    assert (await gw.client.set_phase("write-through", "back"))[0] == 200
    again = await asyncio.gather(*(acquire(f"c{i}") for i in range(10)))
    won, _ = verdicts(again)
    assert len(won) == 1
    assert await holders(gw) == {"legacy": f"c{won[0]}", "actors": f"c{won[0]}"}
