"""A lock acquire and a checkpoint save read their row inside their own write's transaction (one
BEGIN before the read, one COMMIT), instead of a read transaction of its own first (issue 13);
a refused acquire writes nothing and leaves no transaction open. (The row a write left is kept
for the next read, `keep_written`: the reads here follow an eviction, which forgets it.)"""

from __future__ import annotations

from gateway.actors import ActorHost
from gateway.actors.layout import shard_of
from gateway.clock import FakeClock
from gateway.do import agent_ref, lock_ref
from gateway.do.actor_store import ActorStore
from gateway.domain import commands as c
from gateway.domain.ids import IdGenerator
from gateway.settings import LimitSettings

NOW = 1_795_627_727_041
LIMITS = LimitSettings()
TTL = {"ttl_min_ms": 1, "ttl_max_ms": 86_400_000, "ttl_default_ms": 7_200_000}


def traced(host: ActorHost, ref_shard: int) -> list[str]:
    shards = host.shard_set
    assert shards is not None
    statements: list[str] = []
    shards[ref_shard].conn.set_trace_callback(statements.append)
    return statements


def untrace(host: ActorHost) -> None:
    assert host.shard_set is not None
    for shard in host.shard_set:
        shard.conn.set_trace_callback(None)


def acquire(path: str, agent: str, clock: FakeClock) -> c.AcquireLock:
    return c.AcquireLock.parse(
        path, {"agentId": agent, "ttlMs": 60_000}, clock.now_ms(), IdGenerator(), **TTL
    )


async def test_a_lock_acquire_reads_the_lock_inside_its_transaction(
    host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    ref = lock_ref("src/a.ts")
    statements = traced(host, shard_of(ref, host.shard_count))
    try:
        taken = await store.acquire_lock(acquire("src/a.ts", "agent-1", clock))
        first = list(statements)
        assert await host.evict(ref)  # nothing kept: the refused acquire reads the row
        statements.clear()
        refused = await store.acquire_lock(acquire("src/a.ts", "agent-2", clock))
        after_eviction = list(statements)
        await store.acquire_lock(acquire("src/a.ts", "agent-1", clock))  # a re-lock keeps its row
        statements.clear()
        refused_on_kept = await store.acquire_lock(acquire("src/a.ts", "agent-2", clock))
    finally:
        untrace(host)
    assert taken.acquired
    assert not refused.acquired
    assert refused.lock.locked_by == "agent-1"
    assert first[0] == "BEGIN"
    assert first[1].startswith("SELECT")
    assert first[-1] == "COMMIT"
    assert first.count("BEGIN") == 1
    assert first.count("COMMIT") == 1
    # refused: the read, in a transaction that wrote nothing and is closed again
    assert [s.split()[0] for s in after_eviction] == ["BEGIN", "SELECT", "COMMIT"]
    assert not refused_on_kept.acquired
    assert statements == []  # the row kept: no read, so no transaction to open and close
    assert not host.in_transaction(ref)
    check = await store.check_lock("src/a.ts", clock.now_ms())
    assert check.lock is not None
    assert check.lock.locked_by == "agent-1"


async def test_a_checkpoint_save_reads_the_checkpoint_inside_its_transaction(
    host: ActorHost, clock: FakeClock
) -> None:
    store = ActorStore(host)
    ref = agent_ref("agent-1")
    body = {"conversationSummary": "one", "pendingWork": ["a"]}
    await store.save_checkpoint(c.SaveCheckpoint.parse("agent-1", body, clock.now_ms()))
    assert await host.evict(ref)  # nothing kept: the save reads its row
    statements = traced(host, shard_of(ref, host.shard_count))
    try:
        await store.save_checkpoint(c.SaveCheckpoint.parse("agent-1", {"pendingWork": ["b"]}, clock.now_ms()))
    finally:
        untrace(host)
    assert statements[0] == "BEGIN"
    assert statements[1].startswith("SELECT")
    assert statements[-1] == "COMMIT"
    assert statements.count("BEGIN") == 1
    saved = await store.get_checkpoint("agent-1")
    assert saved is not None
    assert saved.conversation_summary == "one"  # kept when not given, as before
    assert saved.pending_work == ["b"]
