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
    turn) may see rows not yet committed: they answer that turn but are not kept."""
    store = ActorStore(host)
    await store.save_checkpoint(save("one", clock))

    async def write_then_read(actor: Any) -> str:
        await actor.save_checkpoint(save("two", clock))
        return str(actor.checkpoint().conversation_summary)

    ref = agent_ref(AGENT)
    assert await host.call(ref, write_then_read) == "two"
    statements = traced(host, ref)
    assert await summary(store) == "two"
    assert len(selects(statements)) == 1  # read again, then kept
    statements.clear()
    assert await summary(store) == "two"
    assert statements == []


async def test_a_large_result_is_not_kept(host: ActorHost, clock: FakeClock) -> None:
    store = ActorStore(host)
    big = "x" * (KEPT_CHARS_MAX + 1)
    await store.save_checkpoint(save(big, clock))
    statements = traced(host, agent_ref(AGENT))
    assert await summary(store) == big
    assert await summary(store) == big
    assert len(selects(statements)) == 2


async def test_a_failed_commit_resets_the_actor_and_drops_what_it_kept(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The agent actor keeps its checkpoint; a save whose commit fails resets it, and the next
    read shows the committed row, not the lost write."""
    host = build_actor_host(tmp_path / "d", LimitSettings(), clock=clock)
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
