"""The checkpoint helper process (`gateway/actors/checkpoint_helper.py`): WAL checkpoints of real
SQLite files in a real child process, the WAL started over there, and every way the process can
fail leaving the round to the gateway, never a hang or a lost row."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from gateway.actors import ActorRef, checkpoint_helper, wal
from gateway.actors.checkpoint_helper import CheckpointHelper
from gateway.actors.layout import shard_of, shard_path
from gateway.actors.naming import actor_path
from gateway.testing.actors import KV_TABLES, CountingActor, KvActor, host_for


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL database with 200 one-page rows, none checkpointed, and its connection (the WAL
    index held as the host holds it: `wal_index.hold_index`)."""
    path = tmp_path / "a.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA user_version = 7")
    conn.execute("CREATE TABLE t (b BLOB)")
    for _ in range(200):
        conn.execute("INSERT INTO t (b) VALUES (randomblob(4000))")
    wal.hold_index(path)
    try:
        yield path, conn
    finally:
        conn.close()
        wal.release_index(path)


@pytest.fixture
async def helper() -> AsyncIterator[CheckpointHelper]:
    started = CheckpointHelper("NORMAL")
    try:
        yield started
    finally:
        await started.close()


async def test_a_round_copies_the_wal_back_and_starts_it_over(
    db: tuple[Path, sqlite3.Connection], helper: CheckpointHelper
) -> None:
    """With `restart`, every frame is copied back and the WAL starts over in the helper (one
    frame: page 1 rewritten as it was); the rows and `user_version` are unchanged, and the next
    write of the gateway's connection appends to that WAL instead of starting it over itself."""
    path, conn = db
    assert wal.wal_frames(path) > 200
    result = await helper.round(path, restart=True)
    assert result is not None
    assert result.busy == 0
    assert result.done == result.log_frames > 200
    assert wal.wal_frames(path) == 1
    assert wal.wal_backlog_bytes(path) > 0  # the helper's frame, copied back at the next round
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 200
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    conn.execute("INSERT INTO t (b) VALUES (randomblob(4000))")
    assert wal.wal_frames(path) > 1
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert helper.pid is not None
    assert helper.rounds == 1


async def test_without_restart_a_round_only_copies_back(
    db: tuple[Path, sqlite3.Connection], helper: CheckpointHelper
) -> None:
    path, _ = db
    frames = wal.wal_frames(path)
    result = await helper.round(path, restart=False)
    assert result is not None
    assert result.done == result.log_frames == frames
    assert wal.wal_frames(path) == frames  # not started over
    assert wal.wal_backlog_bytes(path) == 0


async def test_a_missing_or_corrupt_file_is_an_error_and_the_helper_goes_on(
    db: tuple[Path, sqlite3.Connection], helper: CheckpointHelper, tmp_path: Path
) -> None:
    """A round on a file that is not there raises (and creates no database); on a file that is
    not a database it raises SQLite's error; the helper answers the next round as before."""
    missing = tmp_path / "missing.sqlite"
    with pytest.raises(sqlite3.OperationalError, match="FileNotFoundError"):
        await helper.round(missing, restart=True)
    assert not missing.exists()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(os.urandom(8192))
    with pytest.raises(sqlite3.OperationalError, match="not a database"):
        await helper.round(junk, restart=True)
    assert await helper.round(db[0], restart=True) is not None
    assert helper.starts == 1
    assert helper.failures == 0


async def test_a_helper_that_cannot_start_leaves_the_rounds_to_the_caller(
    db: tuple[Path, sqlite3.Connection],
) -> None:
    """No process: the round answers None at once, and no new start is tried before the retry
    delay is over."""
    broken = CheckpointHelper("NORMAL", command=[str(db[0].parent / "no-such-python")], retry_after_s=60)
    try:
        assert await broken.round(db[0], restart=True) is None
        assert await broken.round(db[0], restart=True) is None
        assert (broken.starts, broken.failures) == (0, 1)
        assert wal.wal_frames(db[0]) > 200  # nothing was done
    finally:
        await broken.close()


async def test_a_killed_helper_is_replaced_after_the_retry_delay(db: tuple[Path, sqlite3.Connection]) -> None:
    """A helper killed between rounds: the next round is the caller's (None), the one after it,
    the retry delay over, runs in a new process."""
    path, conn = db
    helper = CheckpointHelper("NORMAL", retry_after_s=0)
    try:
        assert await helper.round(path, restart=False) is not None
        first = helper.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert await asyncio.wait_for(helper.round(path, restart=True), 10) is None
        assert helper.failures == 1
        conn.execute("INSERT INTO t (b) VALUES (randomblob(4000))")
        assert await helper.round(path, restart=True) is not None
        assert helper.pid not in (None, first)
        assert helper.starts == 2
        assert wal.wal_frames(path) == 1
    finally:
        await helper.close()


async def test_a_helper_that_does_not_answer_is_killed_after_the_timeout(
    db: tuple[Path, sqlite3.Connection],
) -> None:
    """A round unanswered for `round_timeout_s`: the process is killed (its SQLite locks end
    with it) and the round is the caller's."""
    silent = [sys.executable, "-c", "import sys; sys.stdin.read()"]  # reads, never answers
    helper = CheckpointHelper("NORMAL", command=silent, round_timeout_s=0.5, retry_after_s=60)
    try:
        assert await helper.round(db[0], restart=True) is None
        pid = helper.pid
        assert pid is None
        assert helper.failures == 1
        assert helper.in_flight == 0
    finally:
        await helper.close()


async def test_close_ends_the_process_and_no_round_starts_another(
    db: tuple[Path, sqlite3.Connection],
) -> None:
    helper = CheckpointHelper("NORMAL")
    assert await helper.round(db[0], restart=False) is not None
    pid = helper.pid
    assert pid is not None
    await helper.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped
    assert await helper.round(db[0], restart=True) is None
    assert helper.starts == 1


def refs_of_shard(shard: int, shards: int, count: int) -> list[ActorRef]:
    refs = (ActorRef("kv", f"a{i}") for i in range(10_000))
    return [ref for ref in refs if shard_of(ref, shards) == shard][:count]


async def test_the_held_round_holds_only_its_shards_turns_while_the_helper_waits(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the helper's round with a shard's turns held back waits (here on a write lock this
    test holds; on a production machine, on a slow disk's sync), a turn of that shard waits for
    it, and the event loop and the other shard's turns go on. Once it ends, the WAL has started
    over and the waiting turn runs."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 1 << 40)
    monkeypatch.setattr(wal, "CATCH_UP_BYTES", 1 << 40)  # one bulk round, then the held one
    held_shard, other_shard = refs_of_shard(0, 2, 3), refs_of_shard(1, 2, 1)
    path = shard_path(data_dir, 0)
    async with host_for(data_dir, {"kv": KvActor}, sharded={"kv": KV_TABLES}, shards=2) as host:

        async def put(ref: ActorRef, i: int) -> None:
            async def turn(a: KvActor) -> None:
                a.put(f"k{i}", i)

            await host.call(ref, turn)

        async def get(ref: ActorRef, key: str) -> int | None:
            async def turn(a: KvActor) -> int | None:
                return a.get(key)

            return await host.call(ref, turn)

        for i in range(300):
            await put(held_shard[i % 3], i)
        await put(other_shard[0], 0)
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        wal.hold_index(path)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # the helper's restarting write waits for it
            monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 16 * 1024)
            helper = host.checkpoint_helper
            assert helper is not None
            assert host._shards is not None
            turn_lock = host._shards[0].lock  # the shard's turns, held by the round
            await until(lambda: turn_lock.locked() and helper.in_flight == 1)

            waiting = asyncio.ensure_future(get(held_shard[0], "k0"))
            before = time.monotonic()
            assert await asyncio.wait_for(get(other_shard[0], "k0"), 2) == 0
            await asyncio.sleep(0.2)
            assert time.monotonic() - before < 1.5  # the loop was never held
            assert not waiting.done()  # held back by the round
            blocker.execute("ROLLBACK")
            assert await asyncio.wait_for(waiting, 10) == 0
        finally:
            blocker.close()
            wal.release_index(path)
        await until(lambda: wal.wal_frames(path) <= 2)  # started over: the helper's frame
        assert helper.rounds >= 2
        assert sorted((await host.call(held_shard[1], _all)).values()) == list(range(1, 300, 3))


async def _all(actor: KvActor) -> dict[str, int]:
    return actor.all()


async def test_a_host_whose_helper_dies_at_start_checkpoints_in_the_gateway(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A helper process that exits at once (here: its script is missing): each round falls back
    to the gateway's own, and the shard's WAL still starts over with nothing lost."""
    monkeypatch.setattr(checkpoint_helper, "WORKER", tmp_path / "missing_worker.py")
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.01)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 32 * 1024)
    path = shard_path(data_dir, 0)
    async with host_for(data_dir, {"kv": KvActor}, sharded={"kv": KV_TABLES}, shards=1) as host:
        helper = host.checkpoint_helper
        assert helper is not None
        highest, puts = 0, 0
        while True:
            ref = ActorRef("kv", f"a{puts % 7}")

            async def turn(a: KvActor, n: int = puts) -> None:
                a.put(f"k{n}", n)

            await host.call(ref, turn)
            puts += 1
            frames = wal.wal_frames(path)
            if frames < highest:
                break
            highest = max(highest, frames)
            assert puts < 5000, "the WAL never started over"
            await asyncio.sleep(0)
        stored = [len(await host.call(ActorRef("kv", f"a{n}"), _all)) for n in range(7)]
        assert sum(stored) == puts
        assert helper.rounds == 0
        assert helper.failures >= 1


async def test_the_helpers_restart_leaves_a_file_actors_change_token_alone(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper's write that starts a file actor's WAL over is another connection's commit,
    which moves `PRAGMA data_version`; it changes no row, so the actor's change token (what its
    copies in memory are checked against, `gateway/do/memory.py`) stays as it was. A real commit
    of another connection after it still moves the token."""
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_S", 0.02)
    monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 1 << 40)
    ref = ActorRef("c", "big")
    path = actor_path(data_dir, ref)

    async def write(actor: CountingActor) -> None:
        actor.ctx.sql.exec("CREATE TABLE IF NOT EXISTS blobs (b BLOB)")
        actor.ctx.sql.exec("INSERT INTO blobs (b) VALUES (randomblob(4000))")

    async def token(actor: CountingActor) -> tuple[int, int, int]:
        return actor.ctx.sql.change_token()

    async with host_for(data_dir, {"c": CountingActor}) as host:
        for _ in range(40):
            await host.call(ref, write)
        before = await host.call(ref, token)
        helper = host.checkpoint_helper
        assert helper is not None
        monkeypatch.setattr(wal, "CHECKPOINT_WAL_BYTES", 16 * 1024)
        host._open_files[ref].wrote_since_check = True  # due at the next interval
        await until(lambda: wal.wal_frames(path) == 1)  # started over by the helper
        assert helper.rounds >= 2
        assert await host.call(ref, token) == before

        other = sqlite3.connect(path, isolation_level=None)
        wal.hold_index(path)
        try:
            other.execute("INSERT INTO blobs (b) VALUES (x'00')")
        finally:
            other.close()
            wal.release_index(path)
        assert await host.call(ref, token) != before


async def test_an_answer_is_waited_for_with_the_loop_blocked_only_up_to_block_s(
    db: tuple[Path, sqlite3.Connection], tmp_path: Path
) -> None:
    """With `block_s` the round's answer is read with the event loop blocked (a held round
    answered at once costs the held actor no step of a busy loop); an answer later than that is
    waited for with the loop running: here a helper that answers after 0.3 s, during which a
    timer of the loop still fires."""
    path, _ = db
    helper = CheckpointHelper("NORMAL")
    try:
        assert await helper.round(path, restart=False, block_s=5.0) is not None
        assert helper.answered_in_time == 1
    finally:
        await helper.close()

    slow_worker = tmp_path / "slow_worker.py"
    slow_worker.write_text(  # the real worker, its answers written 0.3 s late
        "import importlib.util, sys, time\n"
        "class Late:\n"
        "    def __init__(self, raw): self.raw = raw\n"
        "    def write(self, data): time.sleep(0.3); return self.raw.write(data)\n"
        "    def flush(self): self.raw.flush()\n"
        "class Out: pass\n"
        "out = Out(); out.buffer = Late(sys.stdout.buffer); sys.stdout = out\n"
        f"spec = importlib.util.spec_from_file_location('worker', {str(checkpoint_helper.WORKER)!r})\n"
        "worker = importlib.util.module_from_spec(spec); spec.loader.exec_module(worker)\n"
        "sys.exit(worker.main(['worker', 'NORMAL']))\n",
        encoding="utf-8",
    )
    slow = CheckpointHelper("NORMAL", command=[sys.executable, "-I", str(slow_worker)])
    try:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        ticking = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        started = time.monotonic()
        assert await slow.round(path, restart=True, block_s=0.05) is not None
        ticking.cancel()
        assert time.monotonic() - started >= 0.3
        assert slow.answered_in_time == 0
        during = [t for t in ticks if started + 0.06 < t < started + 0.3]
        assert len(during) >= 3, "the loop ran while the late answer was awaited"
    finally:
        await slow.close()


async def test_a_helper_started_with_many_descriptors_open_is_waited_for(
    db: tuple[Path, sqlite3.Connection],
) -> None:
    """The helper starts with the first checkpoint, when a busy gateway may hold thousands of
    sockets: its pipe's descriptor is then above 1023, which select() refuses; the blocked wait
    for a held round's answer works there too."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1200
    if hard != resource.RLIM_INFINITY and hard < want + 100:
        pytest.skip(f"the descriptor limit ({hard}) is below {want + 100}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want + 100), hard))
    null = os.open(os.devnull, os.O_RDONLY)
    held = [os.dup(null) for _ in range(want)]
    os.close(null)
    helper = CheckpointHelper("NORMAL")
    try:
        assert await helper.round(db[0], restart=True, block_s=5.0) is not None
        assert helper.answered_in_time == 1
    finally:
        await helper.close()
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_the_helper_outlives_sigint_and_sigterm_until_its_stdin_closes(
    db: tuple[Path, sqlite3.Connection], helper: CheckpointHelper
) -> None:
    """Ctrl-C in the gateway's terminal, or a service manager's SIGTERM, reaches the helper too
    (one process group): it goes on answering, and ends when the gateway closes its stdin."""
    assert await helper.round(db[0], restart=False) is not None
    pid = helper.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert await helper.round(db[0], restart=True) is not None
    assert helper.pid == pid
    assert helper.failures == 0
    await helper.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
