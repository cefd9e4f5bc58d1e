"""Kept reads (issue 13): a lock actor keeps its lock row and an agent actor its checkpoint, unread
DMs and newest memories between turns (`ctx.tables.select(..., keep=True)`), so a lock check, a
checkpoint read or an agent state asked again runs no SQL. What they keep is dropped by every
write of the table (a lock, an unlock, an expiry, a save, a DM, marking DMs read), by a
rollback, by a bulk write of the actor's rows, and with the activation (eviction, reset,
restart); rows read while the shard holds writes not yet committed are not kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.actors import ActorHost
from gateway.actors.bulk_write import ShardWriter
from gateway.actors.layout import shard_of
from gateway.actors.tables import KEPT_CHARS_MAX
from gateway.clock import FakeClock
from gateway.do import agent_ref, lock_ref
from gateway.do.actor_store import ActorStore, build_actor_host
from gateway.domain import commands as c
from gateway.domain.ids import IdGenerator
from gateway.settings import LimitSettings

TTL = {"ttl_min_ms": 1, "ttl_max_ms": 86_400_000, "ttl_default_ms": 7_200_000}
AGENT = "agent-1"
PATH = "src/a.ts"


def traced(host: ActorHost, ref: Any) -> list[str]:
    shards = host.shard_set
    assert shards is not None
    statements: list[str] = []
    shards[shard_of(ref, host.shard_count)].conn.set_trace_callback(statements.append)
    return statements


def selects(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("SELECT")]


def acquire(agent: str, clock: FakeClock, ttl_ms: int = 60_000) -> c.AcquireLock:
    return c.AcquireLock.parse(
        PATH, {"agentId": agent, "ttlMs": ttl_ms}, clock.now_ms(), IdGenerator(), **TTL
    )


def save(summary: str, clock: FakeClock) -> c.SaveCheckpoint:
    return c.SaveCheckpoint.parse(AGENT, {"conversationSummary": summary}, clock.now_ms())


def dm(text: str, clock: FakeClock) -> c.SendDm:
    return c.SendDm.parse(AGENT, {"from": "agent-2", "message": text}, clock.now_ms(), IdGenerator())


async def summary(store: ActorStore) -> str | None:
    cp = await store.get_checkpoint(AGENT)
    return None if cp is None else cp.conversation_summary


async def test_a_lock_check_asked_again_runs_no_sql_and_follows_every_lock_change(
    host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    statements = traced(host, lock_ref(PATH))
    assert (await store.check_lock(PATH, clock.now_ms())).lock is None
    assert len(selects(statements)) == 1
    statements.clear()
    assert (await store.check_lock(PATH, clock.now_ms())).lock is None
    assert statements == []  # kept: no statement at all

    await store.acquire_lock(acquire("agent-1", clock))
    check = await store.check_lock(PATH, clock.now_ms())
    assert check.lock is not None
    assert check.lock.locked_by == "agent-1"
    statements.clear()
    await clock.advance(1_000)
    again = await store.check_lock(PATH, clock.now_ms())
    assert statements == []
    assert again.to_json()["lock"]["remainingMs"] == 59_000  # the clock still counts: not a kept answer

    await store.release_lock(c.ReleaseLock.parse(PATH, {"agentId": "agent-1"}, clock.now_ms()))
    assert (await store.check_lock(PATH, clock.now_ms())).lock is None

    await store.acquire_lock(acquire("agent-2", clock, ttl_ms=5_000))
    assert (await store.check_lock(PATH, clock.now_ms())).lock is not None
    await clock.advance(6_000)  # the alarm expires it: a write turn of its own
    await host.wait_idle()
    history = await store.lock_history(PATH, 50)
    assert [e.release_reason for e in history.history] == ["expired", "manual"]
    # gone, not found expired by this check (a kept row of the expired lock would say so)
    assert (await store.check_lock(PATH, clock.now_ms())).to_json() == {"locked": False, "resourcePath": PATH}


async def test_a_checkpoint_and_the_agent_state_asked_again_run_no_sql_and_follow_writes(
    host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    await store.save_checkpoint(save("one", clock))
    await store.send_dm(dm("hello", clock))
    statements = traced(host, agent_ref(AGENT))
    assert await summary(store) == "one"
    state = await store.agent_state(AGENT)
    assert [m.message for m in state.unread_messages] == ["hello"]
    statements.clear()
    assert await summary(store) == "one"
    state = await store.agent_state(AGENT)
    assert statements == []
    assert state.checkpoint is not None
    assert state.checkpoint.conversation_summary == "one"

    await store.save_checkpoint(save("two", clock))
    assert await summary(store) == "two"
    await store.send_dm(dm("again", clock))
    state = await store.agent_state(AGENT)
    assert [m.message for m in state.unread_messages] == ["again", "hello"]
    ids = [m.id for m in state.unread_messages]
    await store.mark_dms_read(c.MarkDmsRead.parse(AGENT, {"messageIds": ids}, clock.now_ms()))
    assert (await store.agent_state(AGENT)).unread_messages == []
    await store.add_memory(
        c.AddMemory.parse(AGENT, {"category": "learning", "content": "kept"}, clock.now_ms(), IdGenerator())
    )
    assert [m.content for m in (await store.agent_state(AGENT)).recent_memories] == ["kept"]


async def test_a_turn_rolled_back_after_its_write_leaves_nothing_kept(
    host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    await store.save_checkpoint(save("one", clock))
    assert await summary(store) == "one"

    async def write_read_then_fail(actor: Any) -> None:
        await actor.save_checkpoint(save("undone", clock))
        assert actor.checkpoint().conversation_summary == "undone"  # its own write, in its turn
        raise RuntimeError("the turn fails after its write")

    with pytest.raises(RuntimeError):
        await host.call(agent_ref(AGENT), write_read_then_fail)
    assert await summary(store) == "one"

    async def nested_write_then_fail(actor: Any) -> str | None:
        def inner() -> None:
            actor.ctx.tables.update("checkpoint", {"conversation_summary": "nested"})
            assert actor.checkpoint().conversation_summary == "nested"
            raise RuntimeError("the nested transaction fails")

        with pytest.raises(RuntimeError):
            actor.ctx.tables.transaction_sync(inner)
        cp = actor.checkpoint()
        return None if cp is None else cp.conversation_summary

    assert await host.call(agent_ref(AGENT), nested_write_then_fail) == "one"
    assert await summary(store) == "one"


async def test_a_bulk_write_of_the_actors_rows_drops_what_it_kept(host: ActorHost, clock: FakeClock) -> None:
    store = ActorStore(host)
    await store.save_checkpoint(save("one", clock))
    assert await summary(store) == "one"  # kept by the open activation
    ref = agent_ref(AGENT)
    assert host.is_active(ref)

    def work(w: ShardWriter) -> None:
        with w.actor(AGENT) as t:
            t.update("checkpoint", {"conversation_summary": "imported"})

    await host.write_rows("agent", shard_of(ref, host.shard_count), work)
    assert await summary(store) == "imported"


async def test_eviction_and_a_reset_start_from_the_rows(host: ActorHost, clock: FakeClock) -> None:
    store = ActorStore(host)
    await store.save_checkpoint(save("one", clock))
    assert await summary(store) == "one"
    ref = agent_ref(AGENT)
    assert await host.evict(ref)
    statements = traced(host, ref)
    assert await summary(store) == "one"
    assert len(selects(statements)) == 1  # a new activation reads its rows again

    async def reset_after_read(actor: Any) -> None:
        actor.checkpoint()
        actor.ctx._act.broken = True  # as a failed critical section does: reset when the turn ends

    await host.call(ref, reset_after_read)
    assert not host.is_active(ref)
    statements.clear()
    assert await summary(store) == "one"
    assert len(selects(statements)) == 1


async def test_rows_read_while_a_group_is_pending_are_not_kept(host: ActorHost, clock: FakeClock) -> None:
    """A read inside the shard's open transaction (here: right after its own write, in the same
    turn) may see rows not yet committed: they answer that turn but are not kept. (A DM: a
    write whose rows the actor does not give whole, as a save's are, `keep_written`.)"""
    store = ActorStore(host)
    await store.send_dm(dm("one", clock))

    async def write_then_read(actor: Any) -> list[str]:
        await actor.send_dm(dm("two", clock))
        return [m.message for m in actor._unread(10)]

    ref = agent_ref(AGENT)
    assert await host.call(ref, write_then_read) == ["two", "one"]
    statements = traced(host, ref)
    assert [m.message for m in (await store.agent_state(AGENT)).unread_messages] == ["two", "one"]
    assert len([s for s in selects(statements) if "agent__messages" in s]) == 1  # read again, then kept
    statements.clear()
    assert [m.message for m in (await store.agent_state(AGENT)).unread_messages] == ["two", "one"]
    assert statements == []


def _shape(row: Any) -> tuple[tuple[Any, ...], list[str], list[type]] | None:
    return None if row is None else (tuple(row), row.keys(), [type(v) for v in row])


async def kept_then_read(host: ActorHost, ref: Any, table: str, cols: str) -> tuple[Any, Any]:
    """The row `first(table, cols, keep=True)` answers now (asserted to run no statement), and
    the row SQLite reads for the same query: each as (values, column names, value types)."""
    statements = traced(host, ref)

    async def both(actor: Any) -> tuple[Any, Any]:
        kept = actor.ctx.tables.first(table, cols, keep=True)
        assert statements == [], statements  # kept: no statement at all
        actor.ctx.tables.forget_kept()
        return _shape(kept), _shape(actor.ctx.tables.first(table, cols))

    return await host.call(ref, both)


async def test_a_written_lock_row_is_kept_as_sqlite_reads_it(tmp_path: Path, clock: FakeClock) -> None:
    """Every write of the lock row gives the row it leaves (`keep_written`): the next check runs
    no statement and sees what a read would, values, names and types alike, after a new lock,
    a re-lock (a reason, a later expiry), a release, a takeover of an expired lock, an expiry
    found by a check and one by the alarm (run here by hand: a host that fires none, so the
    clock can pass an expiry without it)."""
    host = build_actor_host(tmp_path / "d", LimitSettings(), clock=clock, fire_alarms=False)
    await host.start()
    try:
        await _lock_rows_kept(host, clock)
    finally:
        await host.close()


async def _lock_rows_kept(host: ActorHost, clock: FakeClock) -> None:
    store = ActorStore(host)
    ref = lock_ref(PATH)
    cols = "resource_path, resource_type, locked_by, reason, locked_at, expires_at, expires_ms"

    async def same() -> Any:
        kept, read = await kept_then_read(host, ref, "current_lock", cols)
        assert kept == read
        return kept

    await store.acquire_lock(acquire("agent-1", clock, ttl_ms=5_000))
    assert (await same())[0][2] == "agent-1"
    await clock.advance(1_000)
    relock = c.AcquireLock.parse(
        PATH, {"agentId": "agent-1", "reason": "more", "ttlMs": 9_000}, clock.now_ms(), IdGenerator(), **TTL
    )
    assert (await store.acquire_lock(relock)).relock
    assert (await same())[0][3] == "more"
    release = c.ReleaseLock.parse(PATH, {"agentId": "agent-1"}, clock.now_ms())
    await store.release_lock(release)
    assert await same() is None
    await store.acquire_lock(acquire("agent-1", clock, ttl_ms=1_000))
    await clock.advance(2_000)
    assert (await store.acquire_lock(acquire("agent-2", clock))).expired_previous is not None  # a takeover
    assert (await same())[0][2] == "agent-2"
    await clock.advance(120_000)
    assert (await store.check_lock(PATH, clock.now_ms())).expired_now is not None  # expired by the check
    assert await same() is None
    await store.acquire_lock(acquire("agent-3", clock, ttl_ms=1_000))
    assert (await same())[0][2] == "agent-3"
    await clock.advance(2_000)
    assert await host.run_alarm(ref)  # expired by the alarm
    assert await same() is None
    assert (await store.check_lock(PATH, clock.now_ms())).lock is None


async def test_a_saved_checkpoint_is_kept_as_sqlite_reads_it(host: ActorHost, clock: FakeClock) -> None:
    """A save gives the whole row it leaves: the next read runs no statement and sees what a
    read would, after a first save, a save with arrays, and one that keeps the old summary."""
    store = ActorStore(host)
    ref = agent_ref(AGENT)
    cols = "conversation_summary, accomplishments, pending_work, recent_context, files_edited, checkpoint_at"
    bodies: list[dict[str, Any]] = [
        {"conversationSummary": "one"},
        {"conversationSummary": "t\u00e9", "accomplishments": ["a", "b"], "filesEdited": ["x.py"]},
        {"conversationSummary": "", "recentContext": "ctx", "pendingWork": ["p"]},
    ]
    for body in bodies:
        await clock.advance(1)
        await store.save_checkpoint(c.SaveCheckpoint.parse(AGENT, body, clock.now_ms()))
        kept, read = await kept_then_read(host, ref, "checkpoint", cols)
        assert kept == read
    assert await summary(store) == "t\u00e9"  # an empty summary keeps the old one


async def test_a_written_row_is_not_kept_past_a_later_write_or_a_failed_nested_transaction(
    host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    await store.save_checkpoint(save("one", clock))
    ref = agent_ref(AGENT)

    async def save_then_update(actor: Any) -> None:
        await actor.save_checkpoint(save("two", clock))
        actor.ctx.tables.update("checkpoint", {"conversation_summary": "three"})

    await host.call(ref, save_then_update)
    assert await summary(store) == "three"

    async def nested_save_fails(actor: Any) -> None:
        async def inner() -> None:
            await actor.save_checkpoint(save("undone", clock))
            raise RuntimeError("the nested transaction fails")

        with pytest.raises(RuntimeError):
            await actor.ctx.tables.transaction(inner)
        await actor.send_dm(dm("the turn writes on and commits", clock))

    await host.call(ref, nested_save_fails)
    assert await summary(store) == "three"


async def test_a_large_result_is_not_kept(host: ActorHost, clock: FakeClock) -> None:
    store = ActorStore(host)
    big = "x" * (KEPT_CHARS_MAX + 1)
    await store.save_checkpoint(save(big, clock))
    statements = traced(host, agent_ref(AGENT))
    assert await summary(store) == big
    assert await summary(store) == big
    assert len(selects(statements)) == 2


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_failed_commit_resets_the_actor_and_drops_what_it_kept(
    tmp_path: Path, clock: FakeClock, synchronous: str
) -> None:
    """The agent actor keeps its checkpoint; a save whose commit fails resets it, and the next
    read shows the committed row, not the lost write (nor the row the save gave as kept): the
    commit alone under NORMAL, the group commit in a worker thread under FULL."""
    host = build_actor_host(tmp_path / "d", LimitSettings(), clock=clock, synchronous=synchronous)
    await host.start()
    try:
        store = ActorStore(host)
        await store.save_checkpoint(save("one", clock))
        assert await summary(store) == "one"
        shards = host.shard_set
        assert shards is not None
        shard = shards[shard_of(agent_ref(AGENT), host.shard_count)]
        real = shard._commit

        def failing() -> None:
            raise sqlite3.OperationalError("disk I/O error (injected)")

        shard._commit = failing  # type: ignore[method-assign]
        try:
            with pytest.raises(Exception, match="could not commit"):
                await store.save_checkpoint(save("lost", clock))
        finally:
            shard._commit = real  # type: ignore[method-assign]
        assert not host.is_active(agent_ref(AGENT))
        assert await summary(store) == "one"
    finally:
        await host.close()


async def test_a_lock_refused_on_a_kept_row_runs_no_statement(host: ActorHost, clock: FakeClock) -> None:
    """An acquire asks for its scope before its read (`ensure_transaction`); with the lock row
    kept and the lock refused, the turn runs no statement at all (no BEGIN and COMMIT around
    nothing). A save reads its checkpoint in its write's transaction when it is not kept, and
    runs no read when it is."""
    store = ActorStore(host)
    await store.acquire_lock(acquire("agent-1", clock))
    statements = traced(host, lock_ref(PATH))
    refused = await store.acquire_lock(acquire("agent-2", clock))
    assert not refused.acquired
    assert statements == []
    assert (await store.check_lock(PATH, clock.now_ms())).lock is not None
    assert statements == []

    ref = agent_ref(AGENT)
    await store.save_checkpoint(save("one", clock))
    assert await host.evict(ref)  # nothing kept: the next save reads its row first
    statements = traced(host, ref)
    await store.save_checkpoint(save("two", clock))
    assert statements[0] == "BEGIN"
    assert statements[1].startswith("SELECT")
    assert "agent__checkpoint" in statements[1]
    statements.clear()
    await store.save_checkpoint(save("three", clock))  # kept from the save before: no read
    assert statements[0] == "BEGIN"
    assert selects(statements) == []
    assert await summary(store) == "three"
