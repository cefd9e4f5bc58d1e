"""`ActorHost.write_rows`: many actors' rows of a sharded kind in one shard transaction.

What an import relies on: no actor is activated, each actor's rows of the batch are kept or
lost together (an error inside one actor's scope undoes that actor only; a crash before the
shard's commit loses the whole batch, never part of an actor), one actor's scope cannot touch
another's rows, live turns wait for the batch, and written actors are registered (listed).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.actors import ActorHost, ActorRef
from gateway.actors.bulk_write import ShardWriter
from gateway.actors.crash import CRASH_EXIT_CODE
from gateway.clock import FakeClock
from gateway.errors import StorageApiError
from gateway.testing.actors import KV_TABLES as KV
from gateway.testing.actors import KvActor, host_for

REPO = Path(__file__).resolve().parents[2]


def kv(name: str) -> ActorRef:
    return ActorRef("kv", name)


async def read_all(host: ActorHost, name: str) -> dict[str, int]:
    async def run(a: KvActor) -> dict[str, int]:
        return a.all()

    return await host.call(kv(name), run)


async def test_rows_of_many_actors_are_written_without_activating_them(
    data_dir: Path, clock: FakeClock
) -> None:
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:

        def work(w: ShardWriter) -> int:
            for name in ("a", "b", "c"):
                with w.actor(name) as t:
                    t.insert_many("kv", ("k", "v"), [("x", 1), ("y", 2)], conflict="update")
            return w.actors_written

        assert await h.write_rows("kv", 0, work) == 3
        assert h.activations == 0
        assert h.list_actors("kv") == ["a", "b", "c"]  # registered, as by a turn that wrote
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:
        assert await read_all(h, "b") == {"x": 1, "y": 2}  # durable, and what the actor's turns see


def half_way() -> None:
    raise ValueError("half-way")


async def test_an_error_in_one_actor_undoes_all_of_its_rows_and_only_its(
    data_dir: Path, clock: FakeClock
) -> None:
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:

        def work(w: ShardWriter) -> list[str]:
            failed = []
            for name in ("a", "b", "c"):
                try:
                    with w.actor(name) as t:
                        t.insert_many("kv", ("k", "v"), [("x", 1)], conflict="update")
                        if name == "b":
                            half_way()
                        t.insert_many("kv", ("k", "v"), [("y", 2)], conflict="update")
                except ValueError:
                    failed.append(name)
            return failed

        assert await h.write_rows("kv", 0, work) == ["b"]
        assert await read_all(h, "a") == {"x": 1, "y": 2}
        assert await read_all(h, "b") == {}
        assert await read_all(h, "c") == {"x": 1, "y": 2}
        assert h.list_actors("kv") == ["a", "c"]  # b wrote nothing that stayed: not registered


async def test_an_error_out_of_the_work_rolls_the_whole_batch_back(data_dir: Path, clock: FakeClock) -> None:
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:

        def work(w: ShardWriter) -> None:
            with w.actor("a") as t:
                t.insert("kv", {"k": "x", "v": 1})
            raise RuntimeError("the batch fails")

        with pytest.raises(RuntimeError):
            await h.write_rows("kv", 0, work)
        assert await read_all(h, "a") == {}
        assert h.list_actors("kv") == []


async def test_an_actor_scope_sees_and_changes_its_own_rows_only(data_dir: Path, clock: FakeClock) -> None:
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:

        async def put(a: KvActor) -> None:
            a.put("x", 7)

        await h.call(kv("other"), put)

        def work(w: ShardWriter) -> list[tuple[object, ...]]:
            with w.actor("mine") as t:
                seen = [tuple(r) for r in t.select("kv", "k, v")]
                t.delete("kv", "k = ?", "x")  # another actor's key: not this actor's row
                t.insert_many("kv", ("k", "v"), [("x", 1)], conflict="replace")
            return seen

        assert await h.write_rows("kv", 0, work) == []
        assert await read_all(h, "other") == {"x": 7}
        assert await read_all(h, "mine") == {"x": 1}
        rows = await h.read_rows("kv", 0, "kv", "actor, k, v", order="actor")
        assert rows == [("mine", "x", 1), ("other", "x", 7)]


async def test_a_batch_waits_for_a_running_turn_of_the_shard(data_dir: Path, clock: FakeClock) -> None:
    """A batch that starts while a turn of another actor of the shard is half-way runs after
    it, and decides on the whole turn's rows: the decision and the write cannot be split by a
    live gateway's turn."""
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:
        inside = asyncio.Event()
        go_on = asyncio.Event()

        async def two_rows(a: KvActor) -> None:
            a.put("first", 1)
            inside.set()
            await asyncio.wait_for(go_on.wait(), 5)
            a.put("second", 2)

        def work(w: ShardWriter) -> list[tuple[object, ...]]:
            seen = w.select("kv", "actor, k, v", order="k")
            with w.actor("b") as t:
                t.insert("kv", {"k": "seen", "v": len(seen)})
            return seen

        turn = asyncio.ensure_future(h.call(kv("a"), two_rows))
        await asyncio.wait_for(inside.wait(), 5)
        batch = asyncio.ensure_future(h.write_rows("kv", 0, work))
        await asyncio.sleep(0.01)
        assert not batch.done()
        go_on.set()
        await asyncio.wait_for(turn, 5)
        assert await asyncio.wait_for(batch, 5) == [("a", "first", 1), ("a", "second", 2)]
        assert await read_all(h, "b") == {"seen": 2}


async def test_bad_uses_are_refused(data_dir: Path, clock: FakeClock) -> None:
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:

        def nested(w: ShardWriter) -> None:
            with w.actor("a"), w.actor("b"):
                pass

        with pytest.raises(StorageApiError):
            await h.write_rows("kv", 0, nested)
        with pytest.raises(StorageApiError):
            await h.write_rows("kv", 0, lambda w: w.select("nope", "k"))
        with pytest.raises(StorageApiError):
            await h.write_rows("kv", 0, lambda w: w.select("kv", "k; DELETE FROM kv__kv"))


_CRASHER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from gateway.actors.crash import arm
    from gateway.testing.actors import KV_TABLES, KvActor, host_for

    async def main(data, point):
        async with host_for(Path(data), {"kv": KvActor}, sharded={"kv": KV_TABLES}, shards=1) as h:
            def batch(value):
                def work(w):
                    for name in ("a", "b", "c"):
                        with w.actor(name) as t:
                            t.insert_many("kv", ("k", "v"), [("x", value), ("y", value)], conflict="update")
                return work
            await h.write_rows("kv", 0, batch(1))
            arm(point, sigkill=True)
            await h.write_rows("kv", 0, batch(2))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.parametrize(
    "point", ["bulk_write.actor_done", "bulk_write.before_commit", "shard.before_commit"]
)
def test_a_crash_before_the_commit_loses_the_whole_batch_and_no_part_of_an_actor(
    data_dir: Path, point: str
) -> None:
    """SIGKILL inside the second batch (after an actor's scope, before the batch's end, at the
    shard's commit): every actor is exactly as the first batch left it, both rows."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("AGENT_COORD_CRASH_AT", None)
    ran = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _CRASHER, str(data_dir), point],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode in (-9, CRASH_EXIT_CODE), ran.stderr.decode()[-2000:]

    async def check() -> None:
        async with host_for(data_dir, {"kv": KvActor}, sharded={"kv": KV}, shards=1) as h:
            for name in ("a", "b", "c"):
                assert await read_all(h, name) == {"x": 1, "y": 1}

    asyncio.run(check())
