"""Sharded kinds: actors that share a shard file, scoped by `ctx.tables`, committed in groups."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost, ActorRef, HostLimits
from gateway.actors.layout import host_files, shard_files
from gateway.clock import FakeClock
from gateway.errors import DataDirError, StorageApiError
from gateway.testing.actors import KV_TABLES as KV
from gateway.testing.actors import KvActor, counting_kind, host_for


def kv(name: str) -> ActorRef:
    return ActorRef("kv", name)


@pytest.fixture
async def host(data_dir: Path, clock: FakeClock) -> AsyncIterator[ActorHost]:
    """One shard, so that every actor shares it."""
    KvActor.fired = []
    async with host_for(
        data_dir, {"kv": KvActor, "c": counting_kind()}, clock=clock, sharded={"kv": KV}, shards=1
    ) as h:
        yield h


def shard_query(data_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Committed rows of the (only) shard, read from outside the host."""
    (path,) = shard_files(data_dir)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


async def put(host: ActorHost, name: str, k: str, v: int) -> None:
    async def run(a: KvActor) -> None:
        a.put(k, v)

    await host.call(kv(name), run)


async def test_actors_sharing_a_file_see_only_their_own_rows(host: ActorHost, data_dir: Path) -> None:
    """Every call of ctx.tables is scoped to the calling actor: select, first, count, update,
    delete and an insert of a key another actor also has."""
    await put(host, "a", "x", 1)
    await put(host, "b", "x", 2)
    await put(host, "b", "y", 3)

    async def probe(a: KvActor) -> dict[str, Any]:
        t = a.ctx.tables
        return {
            "all": a.all(),
            "count": t.count("kv"),
            "count_v": t.count("kv", "v > ?", 0),
            "first": tuple(t.first("kv", "k, v") or ()),
            "updated": t.update("kv", {"v": 10}, "v >= ?", 0),
            "deleted_y": t.delete("kv", "k = ?", "y"),
        }

    got = await host.call(kv("a"), probe)
    assert got == {"all": {"x": 1}, "count": 1, "count_v": 1, "first": ("x", 1), "updated": 1, "deleted_y": 0}
    assert await host.call(kv("b"), lambda a: asyncio.sleep(0, a.all())) == {"x": 2, "y": 3}
    assert shard_query(data_dir, "SELECT actor, k, v FROM kv__kv ORDER BY actor, k") == [
        ("a", "x", 10),
        ("b", "x", 2),
        ("b", "y", 3),
    ]


async def test_no_storage_call_of_one_actor_reaches_another_on_its_shard(
    host: ActorHost, data_dir: Path, clock: FakeClock
) -> None:
    """`b` has rows under the same keys as `a`, a log and an alarm. Every storage call `a` can
    make - each insert conflict mode on a key `b` also has, select with GROUP BY / ORDER BY /
    LIMIT / OFFSET, first, count, update and delete without a condition, nested transactions,
    the alarm calls - sees and changes `a`'s rows alone; `b`'s rows and alarm are unchanged."""
    b_alarm = clock.now_ms() + 60_000

    async def seed_b(a: KvActor) -> None:
        a.put("x", 2)
        a.put("y", 3)
        a.ctx.tables.insert("log", {"line": "b", "at": 1})
        a.ctx.set_alarm(b_alarm)

    await host.call(kv("b"), seed_b)
    b_before = shard_query(data_dir, "SELECT * FROM kv__kv WHERE actor = 'b' ORDER BY k")
    b_log_before = shard_query(data_dir, "SELECT * FROM kv__log WHERE actor = 'b'")

    async def probe(a: KvActor) -> dict[str, Any]:
        t = a.ctx.tables
        seen: dict[str, Any] = {
            "alarm_before": a.ctx.get_alarm(),
            "empty": (t.select("kv", "k, v"), t.first("kv", "k"), t.count("kv"), t.count("log")),
            "insert_abort": t.insert("kv", {"k": "x", "v": 10}),
            "insert_ignore": t.insert("kv", {"k": "y", "v": 11}, conflict="ignore"),
            "insert_ignore_again": t.insert("kv", {"k": "y", "v": 99}, conflict="ignore"),
            "insert_replace": t.insert("kv", {"k": "x", "v": 12}, conflict="replace"),
            "insert_update": t.insert("kv", {"k": "y", "v": 13}, conflict="update"),
        }
        t.transaction_sync(lambda: t.insert("log", {"line": "a", "at": 2}))

        async def nested() -> None:
            t.insert("kv", {"k": "z", "v": 14})

        await t.transaction(nested)
        grouped = t.select("kv", "count(*), max(v)", group="v >= 14", order="max(v)")
        seen["grouped"] = [tuple(r) for r in grouped]
        seen["paged"] = [tuple(r) for r in t.select("kv", "k", order="k", limit=2, offset=1)]
        seen["sum"] = tuple(t.first("kv", "sum(v), count(*)") or ())
        seen["updated"] = t.update("kv", {"v": 20})
        seen["deleted"] = t.delete("log")
        seen["deleted_kv"] = t.delete("kv", "k = ?", "z")
        a.ctx.set_alarm(clock.now_ms() + 1_000)
        a.ctx.delete_alarm()
        return seen

    got = await host.call(kv("a"), probe)
    assert got == {
        "alarm_before": None,
        "empty": ([], None, 0, 0),
        "insert_abort": 1,
        "insert_ignore": 1,
        "insert_ignore_again": 0,
        "insert_replace": 1,
        "insert_update": 1,
        "grouped": [(2, 13), (1, 14)],
        "paged": [("y",), ("z",)],
        "sum": (39, 3),
        "updated": 3,
        "deleted": 1,
        "deleted_kv": 1,
    }
    assert shard_query(data_dir, "SELECT * FROM kv__kv WHERE actor = 'b' ORDER BY k") == b_before
    assert shard_query(data_dir, "SELECT * FROM kv__log WHERE actor = 'b'") == b_log_before
    assert shard_query(data_dir, "SELECT kind, name, ts FROM _alarms") == [("kv", "b", b_alarm)]
    a_rows = shard_query(data_dir, "SELECT k, v FROM kv__kv WHERE actor = 'a' ORDER BY k")
    assert a_rows == [("x", 20), ("y", 20)]
    assert await host.call(kv("b"), lambda b: asyncio.sleep(0, (b.all(), b.ctx.get_alarm()))) == (
        {"x": 2, "y": 3},
        b_alarm,
    )


@pytest.mark.parametrize(
    ("where", "cols", "order"),
    [
        ("1) OR (1 = 1", "k", ""),  # escape the parentheses around the condition
        ("k IN (SELECT k FROM kv__kv)", "k", ""),  # a subquery over the whole table
        ("k = 'x'", "k", ""),  # a literal (values are bound, never written in)
        ("k = ? ; DELETE FROM kv__kv", "k", ""),
        ("k = ? -- ", "k", ""),
        ("", "(SELECT count(*) FROM kv__kv)", ""),
        ("", "k", "k UNION SELECT actor FROM kv__kv"),
        ("", "actor, k /* */", ""),
    ],
)
async def test_fragments_that_could_reach_other_rows_are_refused(
    host: ActorHost, where: str, cols: str, order: str
) -> None:
    """A WHERE, column list or ORDER BY that could escape the actor's scope raises StorageApiError."""
    await put(host, "b", "x", 2)

    async def probe(a: KvActor) -> Any:
        return a.ctx.tables.select("kv", cols, where, *(["x"] if "?" in where else []), order=order)

    with pytest.raises(StorageApiError):
        await host.call(kv("a"), probe)


async def test_updates_cannot_set_or_name_the_actor_column(host: ActorHost) -> None:
    """The actor column is the host's: an insert or update naming it is refused."""

    async def steal(a: KvActor) -> None:
        a.ctx.tables.update("kv", {"actor": "b"})

    async def plant(a: KvActor) -> None:
        a.ctx.tables.insert("kv", {"actor": "b", "k": "x", "v": 1})

    for fn in (steal, plant):
        with pytest.raises(StorageApiError):
            await host.call(kv("a"), fn)


async def test_sql_and_tables_are_each_for_their_own_kinds(host: ActorHost) -> None:
    """ctx.sql on a sharded kind and ctx.tables on a file kind raise a clear error."""
    with pytest.raises(StorageApiError, match=r"use ctx\.tables"):
        await host.call(kv("a"), lambda a: asyncio.sleep(0, a.ctx.sql))
    with pytest.raises(StorageApiError, match=r"use ctx\.sql"):
        await host.call(ActorRef("c", "x"), lambda a: asyncio.sleep(0, a.ctx.tables))
    with pytest.raises(StorageApiError, match="no table"):
        await host.call(kv("a"), lambda a: asyncio.sleep(0, a.ctx.tables.select("nope", "k")))


async def test_a_read_of_an_actor_with_no_state_writes_nothing(host: ActorHost, data_dir: Path) -> None:
    """No file, no row, no registration: the data directory's files, their sizes and the bytes
    of the databases and WALs are unchanged (the `-shm` index holds only reader marks)."""
    await put(host, "seed", "x", 1)  # the shard exists and has content

    def state() -> dict[Path, tuple[int, bytes]]:
        files = [f.path for f in host_files(data_dir, sidecars=True)]
        assert sorted(files) == sorted(p for p in data_dir.rglob("*") if p.is_file())
        return {p: (p.stat().st_size, b"" if p.name.endswith("-shm") else p.read_bytes()) for p in files}

    before = state()
    for i in range(50):
        assert await host.call(kv(f"new-{i}"), lambda a: asyncio.sleep(0, a.get("x"))) is None
    assert state() == before
    assert host.list_actors("kv") == ["seed"]


async def test_actors_register_on_their_first_write(host: ActorHost) -> None:
    """list_actors lists a sharded actor once it has written, even if the row is gone again."""
    await put(host, "b", "x", 1)
    await put(host, "a", "x", 1)
    await host.call(kv("b"), lambda a: asyncio.sleep(0, a.ctx.tables.delete("kv")))
    assert host.list_actors("kv") == ["a", "b"]


async def test_a_failing_turn_rolls_back_alone_in_its_group(host: ActorHost, data_dir: Path) -> None:
    """Turns of several actors in one group commit: the one that raises loses all of its writes
    (its savepoint), the others commit all of theirs."""

    async def ok(a: KvActor) -> None:
        a.put("k1", 1)
        a.put("k2", 2)

    async def fail(a: KvActor) -> None:
        a.put("k1", 9)
        a.put("k2", 9)
        raise RuntimeError("boom")

    results = await asyncio.gather(
        host.call(kv("a"), ok), host.call(kv("b"), fail), host.call(kv("c"), ok), return_exceptions=True
    )
    assert [type(r).__name__ for r in results] == ["NoneType", "RuntimeError", "NoneType"]
    assert shard_query(data_dir, "SELECT actor, k, v FROM kv__kv ORDER BY actor, k") == [
        ("a", "k1", 1),
        ("a", "k2", 2),
        ("c", "k1", 1),
        ("c", "k2", 2),
    ]
    assert host.list_actors("kv") == ["a", "c"]


async def test_a_nested_transaction_rolls_back_only_its_scope(host: ActorHost, data_dir: Path) -> None:
    """ctx.tables.transaction_sync nests as ctx.sql's does."""

    async def run(a: KvActor) -> None:
        a.put("outer", 1)

        def inner() -> None:
            a.put("inner", 2)
            raise ValueError("inner fails")

        with pytest.raises(ValueError, match="inner fails"):
            a.ctx.tables.transaction_sync(inner)

    await host.call(kv("a"), run)
    assert shard_query(data_dir, "SELECT k FROM kv__kv") == [("outer",)]


async def test_concurrent_write_turns_share_commits(host: ActorHost, data_dir: Path) -> None:
    """200 write turns of 200 actors that overlap (each awaits mid-turn, so the others queue for
    the shard) commit in far fewer than 200 commits, and each is committed when its call returns."""
    shards = host.shard_set
    assert shards is not None
    commits_before, _ = shards.group_commit_stats()

    async def put_slowly(name: str, v: int) -> None:
        async def run(a: KvActor) -> None:
            await asyncio.sleep(0)
            a.put("x", v)

        await host.call(kv(name), run)
        assert shard_query(data_dir, "SELECT v FROM kv__kv WHERE actor = ?", name) == [(v,)]

    await asyncio.gather(*(put_slowly(f"g{i}", i) for i in range(200)))
    commits, turns = shards.group_commit_stats()
    assert turns >= 200
    assert commits - commits_before < 20


async def test_a_write_turn_with_no_other_waiting_commits_at_once(host: ActorHost, data_dir: Path) -> None:
    """Sequential write turns (no turn queued for the shard) commit inline, one commit each,
    with no group to wait for: committed when the call returns."""
    shards = host.shard_set
    assert shards is not None
    commits_before, _ = shards.group_commit_stats()
    for i in range(5):
        await put(host, f"s{i}", "x", i)
        assert shard_query(data_dir, "SELECT v FROM kv__kv WHERE actor = ?", f"s{i}") == [(i,)]
    commits, _ = shards.group_commit_stats()
    assert commits - commits_before == 5


async def test_alarms_of_sharded_actors_live_in_the_shard_and_survive_restart(
    data_dir: Path, clock: FakeClock
) -> None:
    """An alarm set by a sharded actor is stored in the shard, fires after a restart while the
    actor is not active, and is cleared in the same commit as the handler's writes."""
    KvActor.fired = []
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:

        async def arm(a: KvActor) -> None:
            a.ctx.set_alarm(clock.now_ms() + 5_000)

        await h.call(kv("sleepy"), arm)
        assert shard_query(data_dir, "SELECT kind, name FROM _alarms") == [("kv", "sleepy")]
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=1) as h:
        assert h.pending_alarms == 1
        assert not h.is_active(kv("sleepy"))
        await clock.advance(5_000)
        await h.wait_idle()
        assert KvActor.fired == ["sleepy"]
        assert shard_query(data_dir, "SELECT kind FROM _alarms") == []
        assert shard_query(data_dir, "SELECT line FROM kv__log WHERE actor = 'sleepy'") == [("alarm",)]


async def test_evicted_sharded_actors_keep_their_rows(data_dir: Path, clock: FakeClock) -> None:
    """With max_open 4, 40 actors are evicted and come back with their values."""
    async with host_for(
        data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=2, limits=HostLimits(max_open=4)
    ) as h:
        for i in range(40):
            await put(h, f"e{i}", "v", i)
        assert h.peak_open <= 4
        for i in range(40):
            assert await h.call(kv(f"e{i}"), lambda a: asyncio.sleep(0, a.get("v"))) == i


async def test_a_changed_shard_count_is_refused_with_the_value_to_set(
    data_dir: Path, clock: FakeClock
) -> None:
    """The shard of an actor depends on the count: a start with another count says what to set."""
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=2):
        pass
    h = ActorHost(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=3)
    with pytest.raises(DataDirError, match=r"set storage\.shards = 2"):
        await h.start()
    # the refused start released the directory: a host with the right count starts
    async with host_for(data_dir, {"kv": KvActor}, clock=clock, sharded={"kv": KV}, shards=2):
        pass


async def test_a_read_turn_runs_its_reads_alone(host: ActorHost) -> None:
    """A turn that only reads, on a shard with nothing pending, runs its SELECTs and no BEGIN,
    SAVEPOINT, RELEASE or COMMIT (issue 13), and sees the committed rows; a turn that writes
    still opens its scope before its first write."""
    await put(host, "a", "x", 1)
    shards = host.shard_set
    assert shards is not None
    statements: list[str] = []
    shards[0].conn.set_trace_callback(statements.append)
    try:
        assert await host.call(kv("a"), lambda a: asyncio.sleep(0, (a.get("x"), a.all()))) == (1, {"x": 1})
        assert await host.call(kv("nobody"), lambda a: asyncio.sleep(0, a.all())) == {}
        assert statements
        assert all(s.startswith("SELECT") for s in statements), statements

        statements.clear()

        async def read_then_write(a: KvActor) -> None:
            a.put("y", a.get("x") or 0)

        await host.call(kv("a"), read_then_write)
    finally:
        shards[0].conn.set_trace_callback(None)
    assert statements[0].startswith("SELECT")
    assert statements[1] == "BEGIN"
    assert statements[-1] == "COMMIT"
    assert await host.call(kv("a"), lambda a: asyncio.sleep(0, a.all())) == {"x": 1, "y": 1}


async def test_a_read_turn_inside_a_pending_group_returns_after_its_commit(
    host: ActorHost, data_dir: Path
) -> None:
    """A read turn that runs while another turn's writes wait for their group commit reads
    inside that open transaction, so it returns only once the group is committed."""
    order: list[str] = []

    async def write_slowly(a: KvActor) -> None:
        for _ in range(3):  # the read below queues for the shard meanwhile: a group forms
            await asyncio.sleep(0)
        a.put("x", 1)
        assert host.shard_set is not None
        assert host.shard_set[0].queued == 1

    async def writer() -> None:
        await host.call(kv("w"), write_slowly)
        order.append("write returned")

    async def reader() -> None:
        await asyncio.sleep(0)  # after the writer took the shard's turn lock
        got = await host.call(kv("r"), lambda a: asyncio.sleep(0, a.all()))
        assert got == {}
        order.append("read returned")
        # what the read could have seen was committed before it returned
        assert shard_query(data_dir, "SELECT actor, k, v FROM kv__kv") == [("w", "x", 1)]

    await asyncio.gather(writer(), reader())
    assert sorted(order) == ["read returned", "write returned"]


async def test_an_actor_is_registered_by_its_first_committed_write_only(host: ActorHost) -> None:
    """A write turn that rolls back registers nothing; the next write turn registers the actor;
    once that is committed, later write turns of the activation insert no `_actors` row again."""

    async def write_then_fail(a: KvActor) -> None:
        a.put("x", 1)
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await host.call(kv("late"), write_then_fail)
    assert host.list_actors("kv") == []
    await put(host, "late", "x", 2)
    assert host.list_actors("kv") == ["late"]

    shards = host.shard_set
    assert shards is not None
    statements: list[str] = []
    shards[0].conn.set_trace_callback(statements.append)
    try:
        await put(host, "late", "x", 3)
    finally:
        shards[0].conn.set_trace_callback(None)
    assert [s for s in statements if "_actors" in s] == []
    assert await host.call(kv("late"), lambda a: asyncio.sleep(0, a.all())) == {"x": 3}
    assert await host.evict(kv("late"))
    await put(host, "late", "y", 4)  # a new activation inserts (or ignores) the row once more
    assert host.list_actors("kv") == ["late"]
