"""Shard files: where the many small actors (agents, locks) keep their rows, and group commit.

One SQLite file per actor costs a file, a WAL switch and several fsyncs to create, and a close
(with its checkpoint) and an open on every turn once the actors outnumber the open-file bound
(`docs/actor-host.md`, "Layouts compared"). Sharded kinds instead share `storage.shards` files;
an actor lives in the shard its name hashes to (`layout.shard_of`), its rows carry its name in
the primary key, and `ctx.tables` scopes every statement to it (`tables.py`).

Each shard has one connection, used inline on the event loop as the file actors' are, and a
turn lock: turns of the actors of one shard run one at a time (a turn of a sharded kind must
not await another actor of its shard; agents and locks never call other actors). A turn's
writes run in its own scope of the shard's transaction: BEGIN if none is open, else a
SAVEPOINT, so a failing turn rolls back alone (its reads before the first write need no scope:
the turn lock keeps every other writer out). A turn that wrote leaves the transaction open
and waits for the **group commit**: a task that commits every turn folded in since the last
commit, in one COMMIT (an fsync under FULL, in a worker thread, while the next turns queue on
the turn lock and form the next group). A reply leaves only after its turn's commit is durable
per `storage.sqlite_synchronous`; a turn that only read waits for the commit of the group it
saw, if any (what it read may be another turn's uncommitted write); on a shard with nothing
pending its reads ran outside any transaction, with nothing to end or wait for.

Checkpoints: the turn connection never checkpoints (`wal_autocheckpoint=0`, so a commit on the
loop never runs one); a background task checkpoints a shard's WAL from a second connection in
a worker thread once the frames not yet copied back pass `CHECKPOINT_WAL_BYTES`, then once more
with the shard's turns held back, so that the WAL starts over (`Shard.catch_up`, `wal.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from gateway.actors import wal
from gateway.actors.checkpoint_helper import CheckpointHelper
from gateway.actors.crash import crash_point
from gateway.actors.gate import TurnGate
from gateway.actors.layout import shard_path
from gateway.actors.sql_functions import register_sample_fn
from gateway.actors.storage import wait_through_cancellation
from gateway.actors.tables import TableSpec, added_columns, create_statements, physical_name
from gateway.errors import CommitFailed, HostClosed

log = structlog.get_logger(__name__)

SHARD_SCHEMA = """
CREATE TABLE IF NOT EXISTS _actors (kind TEXT NOT NULL, name TEXT NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS _alarms (kind TEXT NOT NULL, name TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS _tables (kind TEXT NOT NULL, name TEXT NOT NULL, physical TEXT NOT NULL,
    PRIMARY KEY (kind, name));
"""

CATCH_UP_TRIES = 5
"""Times `Shard.catch_up` takes the turn lock looking for a moment with no group open."""

KindTables = Mapping[str, Mapping[str, TableSpec]]
"""kind -> table name -> spec: the tables of every sharded kind."""


def connect_shard(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    register_sample_fn(conn)  # a sampled bulk read chooses its rows inside SQLite
    return conn


def ensure_schema(conn: sqlite3.Connection, kinds: KindTables) -> None:
    """Create the shard's tables, add declared columns that are missing, record the tables."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in SHARD_SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        for kind, specs in kinds.items():
            for spec in specs.values():
                for stmt in create_statements(kind, spec):
                    conn.execute(stmt)
                for stmt in added_columns(conn, kind, spec):
                    conn.execute(stmt)
                conn.execute(
                    "INSERT OR IGNORE INTO _tables (kind, name, physical) VALUES (?, ?, ?)",
                    (kind, spec.name, physical_name(kind, spec.name)),
                )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Shard:
    """One shard file: its connection, turn lock and group commit."""

    def __init__(
        self,
        index: int,
        path: Path,
        synchronous: str,
        now_ms: Callable[[], int],
        executor: Any = None,
        *,
        helper: CheckpointHelper | None = None,
    ) -> None:
        self.index = index
        self.helper = helper
        self.path = path
        self.synchronous = synchronous
        self.now_ms = now_ms
        self.conn = connect_shard(path, synchronous)
        wal.hold_index(path)  # released by close(), after both connections
        # the turns' statements share one cursor (`ActorStorage._cur`: `conn.execute` makes and
        # drops one per statement); the turn lock keeps them one at a time, each read at once
        self.cur = self.conn.cursor()
        self.lock = TurnGate()
        self.sql_cache: dict[str, dict[tuple[Any, ...], str]] = {}  # kind -> built SQL
        # a cursor per query of `ShardTables.keep_written`, whose description names the rows it builds
        self.row_cursors: dict[str, sqlite3.Cursor] = {}
        self._executor = executor
        self._savepoints = itertools.count()
        self._dirty = False  # the open transaction holds writes not yet committed
        self._group: asyncio.Future[None] | None = None  # resolved when the open group commits
        self._flusher: asyncio.Task[None] | None = None
        self._ckpt: sqlite3.Connection | None = None
        self.commits = 0
        self.turns_committed = 0
        self._in_group = 0
        self.queued = 0  # turns waiting for the turn lock: a group can form

    def next_savepoint(self) -> str:
        return f"t{next(self._savepoints)}"

    # -- turn scopes (called with the turn lock held) -------------------------------------------

    def end_scope(self, scope: str | None, *, wrote: bool) -> None:
        """Fold a finished turn into the shard's transaction; schedule the group commit."""
        if scope is None:
            return
        conn = self.conn
        if scope:
            self.cur.execute(f"RELEASE {scope}")
        if wrote:
            self._dirty = True
            self._in_group += 1
        if self._dirty:
            if self._group is None and self.queued == 0 and self.synchronous != "FULL":
                self._commit_alone()  # no turn to group with: COMMIT now (no fsync under NORMAL)
            else:
                self._ensure_group()
        elif conn.in_transaction:
            self.cur.execute("COMMIT")  # a read-only transaction: nothing to make durable

    def rollback_scope(self, scope: str) -> None:
        conn = self.conn
        if not conn.in_transaction:
            return
        if scope:
            conn.execute(f"ROLLBACK TO {scope}")
            conn.execute(f"RELEASE {scope}")
        else:  # the turn began the transaction: nothing of another turn is in it
            conn.execute("ROLLBACK")
            self._dirty = False

    def _commit_alone(self) -> None:
        """Commit the turn that holds the turn lock, inline: no other turn waits to join it, so
        a flush task would only add two trips through the event loop."""
        turns, self._in_group = self._in_group, 0
        try:
            crash_point("shard.before_commit")
            self._commit()
            crash_point("shard.after_commit")
        except sqlite3.Error as e:
            log.exception("shard.commit_failed", shard=self.index, turns=turns)
            with contextlib.suppress(sqlite3.Error):
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            self._dirty = False
            raise CommitFailed(f"could not commit shard {self.index}: {e}") from e
        self.commits += 1
        self.turns_committed += turns

    async def read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT across the shard's actors, between turns, as plain tuples;
        returns once what it saw is durable (`ActorHost.read_rows`)."""
        async with self.lock:
            cur = self.conn.cursor()
            cur.row_factory = None
            rows: list[tuple[Any, ...]] = cur.execute(sql, params).fetchall()
            cur.close()
        await self.durable()
        return rows

    def _ensure_group(self) -> None:
        if self._group is None:
            loop = asyncio.get_running_loop()
            self._group = loop.create_future()
            self._flusher = loop.create_task(self._flush())

    async def durable(self) -> None:
        """Wait for the commit of the open group (if any): what this turn wrote or read is durable."""
        group = self._group
        if group is not None:
            await wait_through_cancellation(group)

    async def _flush(self) -> None:
        """Commit the open group: one COMMIT for every turn folded in since the last one."""
        async with self.lock:
            group, self._group = self._group, None
            turns, self._in_group = self._in_group, 0
            try:
                crash_point("shard.before_commit")
                if self.synchronous == "FULL":
                    fut = asyncio.get_running_loop().run_in_executor(self._executor, self._commit)
                    await wait_through_cancellation(fut)
                else:
                    self._commit()
                crash_point("shard.after_commit")
            except Exception as e:
                log.exception("shard.commit_failed", shard=self.index, turns=turns)
                with contextlib.suppress(sqlite3.Error):
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                self._dirty = False
                if group is not None and not group.done():
                    group.set_exception(CommitFailed(f"could not commit shard {self.index}: {e}"))
                    group.exception()  # retrieved here too: a group whose waiters all left
                return
            self.commits += 1
            self.turns_committed += turns
            if group is not None and not group.done():
                group.set_result(None)

    def _commit(self) -> None:
        if self.conn.in_transaction:
            self.cur.execute("COMMIT")
        self._dirty = False

    async def drain(self) -> None:
        """Wait until no group is pending."""
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await self._flusher

    # -- checkpoints ----------------------------------------------------------------------------

    def wal_bytes(self) -> int:
        """Bytes of WAL frames not yet checkpointed (not the file's size, which a checkpoint
        does not shrink)."""
        return wal.wal_backlog_bytes(self.path)

    def checkpoint(self) -> None:
        """Copy the WAL back into the database (worker thread; PASSIVE never blocks turns)."""
        if self._ckpt is None:
            self._ckpt = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._ckpt.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpoint_inline(self) -> None:
        self.cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    async def catch_up(self) -> bool:
        """Checkpoint again with the shard's turns held back, once no group is open: the frames
        committed during the first checkpoint are copied back too, so the next write starts the
        WAL over instead of appending to it (`wal.py`). Gives up (False) if a group is open
        every time it gets the turn lock (a few tries; the next interval tries again)."""
        for _ in range(CATCH_UP_TRIES):
            async with self.lock:
                if not self.conn.in_transaction:
                    ms = await wal.held_round(
                        self.synchronous,
                        self.checkpoint,
                        self._checkpoint_inline,
                        self._executor,
                        helper=self.helper,
                        path=self.path,
                    )
                    log.debug("shard.checkpoint_caught_up", shard=self.index, ms=ms)
                    return True
                group = self._group
            if group is not None:  # its commit is queued behind us on the turn lock
                with contextlib.suppress(Exception):
                    await wait_through_cancellation(group)
        return False

    def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
        if self._group is not None and not self._group.done():  # its turns roll back below
            self._group.set_exception(HostClosed("the actor host closed before the commit"))
            self._group.exception()
            self._group = None
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        try:
            if self._ckpt is not None:
                self._ckpt.close()
                self._ckpt = None
            self.conn.close()
        finally:
            wal.release_index(self.path)


class ShardSet:
    """The shard files of a data directory."""

    def __init__(
        self,
        data_dir: Path,
        count: int,
        kinds: KindTables,
        synchronous: str,
        now_ms: Callable[[], int],
        *,
        helper: CheckpointHelper | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.helper = helper
        self.count = count
        self.kinds = kinds
        self.synchronous = synchronous
        self.now_ms = now_ms
        self.shards: list[Shard] = []
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        shard_path(self.data_dir, 0).parent.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(self.count):
                shard = Shard(
                    i, shard_path(self.data_dir, i), self.synchronous, self.now_ms, helper=self.helper
                )
                self.shards.append(shard)
                ensure_schema(shard.conn, self.kinds)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[Shard]:
        return iter(self.shards)

    def __getitem__(self, index: int) -> Shard:
        return self.shards[index]

    def alarms(self) -> Iterator[tuple[str, str, int]]:
        """(kind, name, ts) of every stored alarm of a sharded actor."""
        for shard in self.shards:
            for kind, name, ts in shard.conn.execute("SELECT kind, name, ts FROM _alarms"):
                yield str(kind), str(name), int(ts)

    def names(self, kind: str) -> list[str]:
        """Every registered actor of `kind` (actors register on their first write)."""
        out: list[str] = []
        for shard in self.shards:
            out += [str(r[0]) for r in shard.conn.execute("SELECT name FROM _actors WHERE kind = ?", (kind,))]
        out.sort()
        return out

    def start_checkpoints(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._checkpointer())

    async def _checkpointer(self) -> None:
        while True:
            await asyncio.sleep(wal.CHECKPOINT_INTERVAL_S)
            for shard in self.shards:
                if shard.wal_bytes() > wal.CHECKPOINT_WAL_BYTES:
                    try:
                        # never abandoned half-way: a stop waits for it, so close() cannot close
                        # the checkpoint connection under the worker thread
                        await wal.checkpoint_in_rounds(shard.path, shard.checkpoint, self.helper)
                        if not await shard.catch_up():
                            log.info("shard.checkpoint_catch_up_skipped", shard=shard.index)
                    except sqlite3.Error as e:
                        log.warning("shard.checkpoint_failed", shard=shard.index, error=str(e))

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Let the pending group commits finish (bounded: a turn stuck past the shutdown grace
        period may hold a shard's turn lock; its group is then rolled back by the close)."""
        try:
            await asyncio.wait_for(asyncio.gather(*(s.drain() for s in self.shards)), timeout_s)
        except TimeoutError:
            log.warning("shard.drain_timed_out", timeout_s=timeout_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.drain()

    def close(self) -> None:
        for shard in self.shards:
            try:
                shard.close()
            except sqlite3.Error as e:
                log.warning("shard.close_failed", shard=shard.index, error=str(e))
        self.shards = []

    def group_commit_stats(self) -> tuple[int, int]:
        """(commits, turns committed) over all shards: turns/commits is the mean group size."""
        return sum(s.commits for s in self.shards), sum(s.turns_committed for s in self.shards)
