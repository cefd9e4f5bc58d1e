"""A data directory of the old layout (one SQLite file per agent and lock) is converted at start-up."""

from __future__ import annotations

from pathlib import Path

from gateway.actors import Actor, ActorContext, ActorRef
from gateway.actors.layout import actor_files, host_files
from gateway.clock import FakeClock
from gateway.do.actor_store import ActorStore, build_actor_host
from gateway.domain import commands as c
from gateway.settings import LimitSettings
from gateway.testing.actors import host_for

# the schemas the old layout's actors created in their own files (gateway/do before shards)
OLD_AGENT = """
CREATE TABLE IF NOT EXISTS checkpoint (
  id INTEGER PRIMARY KEY CHECK (id = 1), conversation_summary TEXT, accomplishments TEXT DEFAULT '[]',
  pending_work TEXT DEFAULT '[]', recent_context TEXT, files_edited TEXT DEFAULT '[]', checkpoint_at TEXT);
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY, from_agent TEXT NOT NULL, type TEXT DEFAULT 'note', message TEXT NOT NULL,
  timestamp TEXT NOT NULL, read INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS memory (
  id TEXT PRIMARY KEY, category TEXT NOT NULL, content TEXT NOT NULL, tags TEXT DEFAULT '[]',
  created_at TEXT NOT NULL)
"""
OLD_LOCK = """
CREATE TABLE IF NOT EXISTS current_lock (
  id INTEGER PRIMARY KEY CHECK (id = 1), resource_path TEXT NOT NULL, resource_type TEXT DEFAULT 'file-lock',
  locked_by TEXT NOT NULL, reason TEXT, locked_at TEXT NOT NULL, expires_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lock_history (
  id TEXT PRIMARY KEY, locked_by TEXT NOT NULL, reason TEXT, locked_at TEXT NOT NULL, released_at TEXT,
  release_reason TEXT)
"""
NOW = 1_795_627_727_041  # 2026-11-25T17:28:47.041Z


class OldActor(Actor):
    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        ctx.sql.exec(OLD_AGENT if ctx.ref.kind == "agent" else OLD_LOCK)


async def _write_old_layout(data_dir: Path, clock: FakeClock) -> None:
    async with host_for(data_dir, {"agent": OldActor, "lock": OldActor}, clock=clock) as old:

        async def agent(a: OldActor) -> None:
            a.ctx.sql.exec(
                "INSERT INTO checkpoint (id, conversation_summary, accomplishments, checkpoint_at) "
                "VALUES (1, 'S', '[\"a\"]', '2026-11-25T17:00:00.000Z')"
            )
            for i in (1, 2):
                a.ctx.sql.exec(
                    "INSERT INTO messages (id, from_agent, message, timestamp) VALUES (?, 'bob', ?, ?)",
                    f"dm-{i}",
                    f"hello {i}",
                    "2026-11-25T17:00:00.000Z",  # a timestamp tie: rowid order must survive
                )
            a.ctx.sql.exec(
                "INSERT INTO memory (id, category, content, created_at) VALUES ('m1', 'learning', 'WAL', 'x')"
            )

        async def lock(a: OldActor) -> None:
            a.ctx.sql.exec(
                "INSERT INTO current_lock (id, resource_path, locked_by, reason, locked_at, expires_at) "
                "VALUES (1, 'src/a.ts', 'alice', 'edit', '2026-11-25T17:28:47.041Z', "
                "'2026-11-25T17:29:47.041Z')"
            )
            a.ctx.sql.exec(
                "INSERT INTO lock_history (id, locked_by, reason, locked_at) VALUES ('h1', 'alice', 'edit', "
                "'2026-11-25T17:28:47.041Z')"
            )
            a.ctx.set_alarm(NOW + 60_000)

        await old.call(ActorRef("agent", "alice"), agent)
        await old.call(ActorRef("lock", "src/a.ts"), lock)
        await old.call(ActorRef("agent", "empty"), lambda a: a.alarm(None))
    assert len(actor_files(data_dir, "agent")) == 2
    assert len(actor_files(data_dir, "lock")) == 1


async def test_old_per_actor_files_are_converted_into_shards_at_start(tmp_path: Path) -> None:
    """Every row, the listing order, the lock's alarm and the names survive; the old files and
    their host-index rows are gone, and a second start changes nothing."""
    clock = FakeClock(NOW)
    data = tmp_path / "data"
    await _write_old_layout(data, clock)

    host = build_actor_host(data, LimitSettings(), clock=clock, shards=4)
    await host.start()
    try:
        store = ActorStore(host)
        assert not (data / "agent").exists()
        assert not (data / "lock").exists()
        assert {f.role for f in host_files(data)} == {"lock", "index", "shard"}
        assert host.list_actors("agent") == ["alice", "empty"]
        assert host.list_actors("lock") == ["src/a.ts"]
        cp = await store.get_checkpoint("alice")
        assert cp is not None
        assert (cp.conversation_summary, cp.accomplishments) == ("S", ["a"])
        dms = await store.list_dms(c.ListDms("alice", unread_only=False, limit=10))
        assert [d.id for d in dms] == ["dm-2", "dm-1"]  # ties broken by insertion order, newest first
        mems = await store.search_memory(c.MemoryQuery("alice", None, None, 10))
        assert [m.content for m in mems] == ["WAL"]
        check = await store.check_lock("src/a.ts", NOW)
        assert check.lock is not None
        assert check.lock.locked_by == "alice"
        assert host.pending_alarms == 1
        await clock.advance(60_000)
        await host.wait_idle()
        assert (await store.check_lock("src/a.ts", clock.now_ms())).lock is None
        hist = await store.lock_history("src/a.ts", 10)
        assert [(h.id, h.release_reason) for h in hist.history] == [("h1", "expired")]
    finally:
        await host.close(1.0)

    again = build_actor_host(data, LimitSettings(), clock=clock, shards=4)
    await again.start()
    try:
        assert again.list_actors("agent") == ["alice", "empty"]
        assert [d.id for d in await ActorStore(again).list_dms(c.ListDms("alice", False, 10))] == [
            "dm-2",
            "dm-1",
        ]
    finally:
        await again.close(1.0)
