"""The data-directory layout: one list of the host's files, a stable actor -> shard mapping."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.actors import ActorRef
from gateway.actors.layout import host_files, shard_of, shard_path
from gateway.clock import FakeClock
from gateway.testing.actors import KV_TABLES as KV
from gateway.testing.actors import CountingActor, KvActor, counting_kind, host_for


async def test_host_files_lists_every_file_the_host_wrote(data_dir: Path, clock: FakeClock) -> None:
    """Lock, index, shards and the file actors' databases, with their -wal/-shm when asked:
    exactly the files in the directory, so backup and inspection need no globbing of their own."""
    async with host_for(
        data_dir, {"c": counting_kind(), "kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=3
    ) as host:

        async def put_c(a: CountingActor) -> None:
            a.put("k", 1)

        await host.call(ActorRef("c", "coordinator-like"), put_c)
        await host.call(ActorRef("kv", "x"), lambda a: asyncio.sleep(0, a.put("k", 1)))
        listed = host_files(data_dir, sidecars=True)
        on_disk = files_in(data_dir)
        assert {f.path for f in listed} == on_disk
        roles = sorted(f.role for f in host_files(data_dir))
        assert roles == ["actor", "index", "lock", "shard", "shard", "shard"]
        assert [f.path for f in host_files(data_dir) if f.role == "shard"] == [
            shard_path(data_dir, i) for i in range(3)
        ]


def files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_the_shard_of_an_actor_never_changes() -> None:
    """The mapping is a fixed hash of kind and name (not Python's per-process `hash`)."""
    assert [shard_of(ActorRef("agent", n), 8) for n in ("alice", "bob", "../x", "é")] == [
        shard_of(ActorRef("agent", n), 8) for n in ("alice", "bob", "../x", "é")
    ]
    assert shard_of(ActorRef("agent", "alice"), 8) == 1
    assert shard_of(ActorRef("lock", "src/a.ts"), 8) == 2
    spread = [0] * 8
    for i in range(8000):
        spread[shard_of(ActorRef("lock", f"p{i}"), 8)] += 1
    assert min(spread) > 850
