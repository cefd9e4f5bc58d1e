"""WAL checkpoints run off the event loop, only when the WAL holds enough frames not yet copied
back, and leave no connection open behind an eviction or a shutdown (`gateway/actors/wal.py`).

Most tests here run the host without its checkpoint helper process: they test the rounds the
gateway runs itself (a second connection in a worker thread), which a helper that fails falls
back to; `test_checkpoint_helper.py` tests the helper, and the WAL-starts-over tests run both."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.actors import ActorHost, ActorRef, wal
from gateway.actors.layout import shard_path
from gateway.actors.naming import actor_path
from gateway.actors.shards import Shard
from gateway.actors.storage import ActorStorage
from gateway.testing.actors import KV_TABLES, CountingActor, KvActor, host_for

REF = ActorRef("c", "big")
BLOB = 4000  # about one WAL frame per row


def open_files(path: Path) -> list[str]:
    """Paths of this process's open file descriptors on `path` or its -wal / -shm files."""
    out = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(path)):
            out.append(target)
    return out


async def write_rows(host: ActorHost, n: int, ref: ActorRef = REF) -> None:
    """`n` turns, each committing one row of about a page."""

    async def turn(actor: CountingActor) -> None:
        actor.ctx.sql.exec("CREATE TABLE IF NOT EXISTS blobs (b BLOB)")
        actor.ctx.sql.exec("INSERT INTO blobs (b) VALUES (randomblob(?))", BLOB)

    for _ in range(n):
        await host.call(ref, turn)


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait (polling) until `check()` holds; fail the test after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def checkpoint_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads each file actor's checkpoint ran in."""
    seen: list[str] = []
    real = ActorStorage.checkpoint

    def recording(self: ActorStorage) -> tuple[int, int, int]:
        result = real(self)
        seen.append(threading.current_thread().name)
        return result

    monkeypatch.setattr(ActorStorage, "checkpoint", recording)
    return seen


async def test_file_actor_commits_never_checkpoint_the_checkpointer_does_in_a_worker_thread(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_threads: list[str]
) -> None:
    """1,200 one-page write turns leave every frame in the WAL (SQLite's own checkpoint would
    have copied them back at 1,000 inside a commit); the checkpointer then copies them back
    from a worker thread."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 1 << 40)
    async with host_for(data_dir, {"c": CountingActor}, checkpoint_helper=False) as host:
        path = actor_path(data_dir, REF)
        await write_rows(host, 1200)
        assert wal.wal_backlog_bytes(path) > 1200 * 4096  # no commit checkpointed
        assert checkpoint_threads == []

        monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 64 * 1024)
        await write_rows(host, 1)
        await until(lambda: wal.wal_backlog_bytes(path) == 0)
        # the WAL is copied back before the checkpoint call returns and is recorded: wait for both
        await until(lambda: bool(checkpoint_threads))
        assert threading.main_thread().name not in checkpoint_threads
        await write_rows(host, 1)  # the WAL starts again from its beginning
        assert 0 < wal.wal_backlog_bytes(path) < 4 * 4096


async def test_eviction_and_shutdown_leave_no_file_of_the_actor_open(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, checkpoint_threads: list[str]
) -> None:
    """After checkpoints, an eviction and then a shutdown leave no file of the actor open (the
    checkpoint's own connection closed with it, the turns' connection with the activation)."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 16 * 1024)
    path = actor_path(data_dir, REF)
    async with host_for(data_dir, {"c": CountingActor}, checkpoint_helper=False) as host:
        await write_rows(host, 20)
        await until(lambda: len(checkpoint_threads) == 1)
        # database, WAL and shared memory, the WAL index's read descriptor (`wal_index.py`);
        # SQLite may keep the checkpoint's database descriptor
        assert 4 <= len(open_files(path)) <= 5
        assert await host.evict(REF)
        assert open_files(path) == []

        await write_rows(host, 20)
        await until(lambda: len(checkpoint_threads) == 2)
        assert 4 <= len(open_files(path)) <= 5
    assert open_files(path) == []


async def test_an_eviction_or_shutdown_during_a_checkpoint_leaves_no_file_open_after_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eviction while the worker thread checkpoints lets the checkpoint finish on its own
    connection, which then closes; a shutdown waits for a running checkpoint."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 16 * 1024)
    entered = threading.Event()
    proceed = threading.Event()
    results: list[tuple[int, int, int]] = []
    real = ActorStorage.checkpoint

    def held(self: ActorStorage) -> tuple[int, int, int]:
        entered.set()
        assert proceed.wait(5)
        result = real(self)
        results.append(result)
        return result

    monkeypatch.setattr(ActorStorage, "checkpoint", held)
    path = actor_path(data_dir, REF)
    async with host_for(data_dir, {"c": CountingActor}, checkpoint_helper=False) as host:
        await write_rows(host, 20)
        await until(entered.is_set)
        assert await host.evict(REF)
        proceed.set()
        await until(lambda: len(results) == 1)
        await until(lambda: open_files(path) == [])
        assert results[0][0] == 0  # the checkpoint ran to its end

        entered.clear()
        proceed.clear()
        await write_rows(host, 20)
        await until(entered.is_set)
        closing = asyncio.ensure_future(host.close(1.0))
        await asyncio.sleep(0.05)
        assert not closing.done()  # the shutdown waits for the thread
        proceed.set()
        await closing
    assert len(results) == 2
    assert open_files(path) == []


async def test_a_shard_is_checkpointed_again_only_when_its_wal_fills_again(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a shard's WAL was checkpointed, small writes do not make every interval checkpoint
    it again (the WAL file keeps its size; the frames not copied back are what counts)."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 64 * 1024)
    checkpoints: list[int] = []
    real = Shard.checkpoint

    def counting(self: Shard) -> None:
        checkpoints.append(self.index)
        real(self)

    monkeypatch.setattr(Shard, "checkpoint", counting)
    async with host_for(
        data_dir, {"kv": KvActor}, sharded={"kv": KV_TABLES}, shards=1, checkpoint_helper=False
    ) as host:

        async def put(i: int) -> None:
            async def turn(a: KvActor) -> None:
                a.put(f"k{i}", i)

            await host.call(ActorRef("kv", f"a{i % 7}"), turn)

        for i in range(300):
            await put(i)
        await until(lambda: len(checkpoints) >= 1)
        await asyncio.sleep(0.1)
        after_first = len(checkpoints)
        for i in range(20):  # a few pages, every interval for 0.4 s
            await put(i)
            await asyncio.sleep(0.02)
        assert len(checkpoints) == after_first


async def until_started_over(path: Path, write: Callable[[], Awaitable[None]], most: int) -> int:
    """Write (one turn at a time, the loop turning between them) until the WAL of `path` starts
    over (its frame count drops), at most `most` writes; returns how many it took."""
    highest = 0
    for n in range(1, most + 1):
        await write()
        frames = wal.wal_frames(path)
        if frames < highest:
            return n
        highest = max(highest, frames)
        await asyncio.sleep(0)  # the checkpointer's turn of the loop
    raise AssertionError(f"the WAL never started over in {most} writes ({highest} frames)")


@pytest.mark.parametrize("helper", [True, False], ids=["helper", "in-gateway"])
async def test_a_file_actors_wal_starts_over_though_turns_commit_during_its_checkpoints(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, helper: bool
) -> None:
    """Under a steady stream of write turns, every checkpoint in the worker thread ends with new
    frames behind it, and SQLite starts a WAL over only for a transaction that began with every
    frame copied back: without the last checkpoint with the actor's turns held back, the WAL grew
    by every frame ever written. With it the WAL starts over, and nothing written is lost."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.01)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 64 * 1024)
    path = actor_path(data_dir, REF)
    async with host_for(data_dir, {"c": CountingActor}, checkpoint_helper=helper) as host:
        written = await until_started_over(path, lambda: write_rows(host, 1), 3000)
        written += await until_started_over(path, lambda: write_rows(host, 1), 3000)  # and again

        async def count(actor: CountingActor) -> int:
            return int(actor.ctx.sql.exec("SELECT count(*) FROM blobs").one()[0])

        assert await host.call(REF, count) == written
        assert (host.checkpoint_helper is not None and host.checkpoint_helper.rounds > 0) == helper


async def test_the_last_checkpoint_holds_the_actors_turns_back_until_it_ends(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the checkpoint with the turns held back runs, a turn of that actor waits for it
    (so nothing can commit behind it), then runs. Under `synchronous=FULL` it runs in a worker
    thread, as the commits do (under NORMAL it runs inline, between two turns).

    The rows are written before the checkpointer may start, and one round is always enough
    (`CATCH_UP_BYTES` above any backlog), so the second checkpoint is the held-back one
    whatever the machine's speed: written while turns ran, a slow disk's first round could
    leave more than `CATCH_UP_BYTES` behind it and make the second call another round."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 1 << 40)
    monkeypatch.setattr(wal, "CATCH_UP_BYTES", 1 << 40)
    real = ActorStorage.checkpoint
    second_entered, proceed = threading.Event(), threading.Event()
    calls: list[int] = []

    def checkpoint(self: ActorStorage) -> tuple[int, int, int]:
        calls.append(1)
        if len(calls) == 2:
            second_entered.set()
            assert proceed.wait(5)
        return real(self)

    monkeypatch.setattr(ActorStorage, "checkpoint", checkpoint)
    async with host_for(data_dir, {"c": CountingActor}, synchronous="FULL", checkpoint_helper=False) as host:
        await write_rows(host, 40)
        monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 64 * 1024)
        await write_rows(host, 1)  # a write since the checkpointer last looked: it is due now
        await until(second_entered.is_set)
        assert len(calls) == 2
        turn = asyncio.ensure_future(write_rows(host, 1))
        await asyncio.sleep(0.05)
        assert not turn.done()  # held back by the checkpoint
        proceed.set()
        await asyncio.wait_for(turn, 5)


@pytest.mark.parametrize("helper", [True, False], ids=["helper", "in-gateway"])
async def test_a_shards_wal_starts_over_though_turns_commit_during_its_checkpoints(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, helper: bool
) -> None:
    """The same for a shard, whose turn lock holds the turns back for the last checkpoint."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.01)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 32 * 1024)
    path = shard_path(data_dir, 0)
    async with host_for(
        data_dir, {"kv": KvActor}, sharded={"kv": KV_TABLES}, shards=1, checkpoint_helper=helper
    ) as host:
        puts = 0

        async def put() -> None:
            nonlocal puts

            async def turn(a: KvActor) -> None:
                a.put(f"k{puts}", puts)

            await host.call(ActorRef("kv", f"a{puts % 7}"), turn)
            puts += 1

        await until_started_over(path, put, 5000)
        await until_started_over(path, put, 5000)

        async def everything(a: KvActor) -> dict[str, int]:
            return a.all()

        stored = [len(await host.call(ActorRef("kv", f"a{n}"), everything)) for n in range(7)]
        assert sum(stored) == puts  # nothing lost
        assert (host.checkpoint_helper is not None and host.checkpoint_helper.rounds > 0) == helper
