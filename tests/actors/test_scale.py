"""100,000 sharded actors through the host (issue 9): created with one write turn each, read back
and evicted under a small `max_open`, a tenth of them read again by a restarted host, with every
value intact and the open file descriptors bounded by the settings the whole time.

About 25 s of CPU on this 2-core machine (longer in wall time when the machine is shared);
marked slow, and it runs in CI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.actors import ActorHost, ActorRef, HostLimits
from gateway.actors.layout import open_files_bound
from gateway.testing.actors import KV_TABLES, KvActor, host_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ACTORS = 100_000
SHARDS = 8
MAX_OPEN = 64
CALLERS = 64  # concurrent callers, as concurrent requests would be
SAMPLE_EVERY = 1_000  # turns between two counts of the open descriptors


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


class FdWatch:
    """The highest number of open descriptors seen at the samples."""

    def __init__(self) -> None:
        self.baseline = open_fds()
        self.peak = self.baseline

    def sample(self) -> None:
        self.peak = max(self.peak, open_fds())


async def each_actor(watch: FdWatch, run: Callable[[int], Awaitable[None]], step: int = 1) -> None:
    """`run(i)` for every `step`-th actor index, from CALLERS concurrent callers, sampling
    descriptors."""

    async def caller(first: int) -> None:
        for i in range(first * step, ACTORS, CALLERS * step):
            await run(i)
            if i % SAMPLE_EVERY == 0:
                watch.sample()

    await asyncio.gather(*(caller(c) for c in range(CALLERS)))


def ref(i: int) -> ActorRef:
    return ActorRef("kv", f"agent-{i:06d}")


async def read_back(host: ActorHost, watch: FdWatch, step: int = 1) -> list[int]:
    """The actors whose value is wrong, reading every `step`-th one in an order unrelated to
    creation (each read reactivates)."""
    wrong: list[int] = []

    async def read(i: int) -> None:
        j = (i * 7919) % ACTORS  # a permutation: 7919 is prime and does not divide ACTORS

        async def get(a: KvActor) -> int | None:
            return a.get("v")

        if await host.call(ref(j), get) != j:
            wrong.append(j)

    await each_actor(watch, read, step)
    return wrong


async def test_100k_actors_are_created_read_back_and_evicted_with_bounded_descriptors(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    limits = HostLimits(max_open=MAX_OPEN)
    kinds = {"kv": KvActor}
    watch = FdWatch()
    async with host_for(data, kinds, limits=limits, sharded={"kv": KV_TABLES}, shards=SHARDS) as host:

        async def create(i: int) -> None:
            async def put(a: KvActor) -> None:
                a.put("v", i)

            await host.call(ref(i), put)

        await each_actor(watch, create)
        assert await read_back(host, watch) == []
        assert host.peak_open <= MAX_OPEN
        assert host.evictions >= 2 * ACTORS - MAX_OPEN
        assert len(host.list_actors("kv")) == ACTORS

    # from the files: a restarted host reads one actor in ten (every one was read above)
    async with host_for(data, kinds, limits=limits, sharded={"kv": KV_TABLES}, shards=SHARDS) as host:
        assert await read_back(host, watch, step=10) == []

    # the bound of the settings (the host's own files) over what the process had open before
    assert watch.peak - watch.baseline <= open_files_bound(SHARDS, 0)
    assert open_fds() <= watch.baseline
