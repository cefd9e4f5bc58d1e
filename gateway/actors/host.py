"""The actor host: named actors, each with its own SQLite database, one event at a time.

What it guarantees (numbers refer to `shared/spec/actor-runtime.md`):

- S1 lazy activation: a ref costs nothing; the first event opens the database and constructs
  the actor; activation has no `await`, so concurrent first calls share one instance.
- S2 one host per data directory: `start()` takes an exclusive `flock` on `host.lock`.
- S3 strict turns: every event (request, alarm, WebSocket message or close) runs under the
  actor's gate for its whole handler; actors run concurrently with each other. `ctx.interleave`
  is the explicit, marked way to let other events in around slow external I/O.
- S4/S5 one transaction per turn, output gate: statements join an implicit transaction that
  commits when the handler returns; the reply and every queued frame leave only after the
  commit; an exception rolls back and discards the frames; a failed commit resets the actor.
- S8/S9 alarms: one per actor, stored in the actor's database in the turn's transaction and in
  a host index (`host.sqlite`) reloaded at start-up; the index time is never later than the
  stored time; firing is at-least-once, re-checked against the stored time, with retries and
  jittered exponential backoff; a fired alarm is cleared in the same commit as its handler.
- S12 eviction: idle activations are closed after `idle_timeout_s`, and the number of open
  databases never exceeds `max_open` whatever the number of actors; sockets stay with the host.
- S14 overload: more than `mailbox_max` waiting events gives `ActorOverloaded`.
- S15 cancellation: a cancelled event rolls its turn back (or, once the commit started, lets it
  finish) and always releases the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import inspect
import itertools
import os
import random
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway.actors import wal
from gateway.actors.bulk_write import ShardWriter
from gateway.actors.checkpoint_helper import CheckpointHelper
from gateway.actors.convert import convert_old_layout
from gateway.actors.crash import crash_point
from gateway.actors.gate import TurnGate
from gateway.actors.layout import host_index_path, host_lock_path, shard_of
from gateway.actors.naming import ActorRef, actor_path
from gateway.actors.shard_reader import bulk_select
from gateway.actors.shards import ShardSet
from gateway.actors.sockets import MAX_QUEUED_BYTES, HostedSocket, WebSocketLike
from gateway.actors.storage import (
    META_SCHEMA,
    ActorStorage,
    Committer,
    InlineCommitter,
    ThreadCommitter,
    open_connection,
    wait_through_cancellation,
)
from gateway.actors.tables import ShardTables, TableSpec
from gateway.clock import Clock, SystemClock
from gateway.errors import (
    ActorOverloaded,
    ActorOwnedElsewhere,
    ActorResetError,
    CommitFailed,
    DataDirError,
    HostClosed,
    InvalidActorName,
    StorageApiError,
    TransactionControlNotAllowed,
)
from gateway.retry import Backoff

log = structlog.get_logger(__name__)

T = TypeVar("T")
A = TypeVar("A", bound="Actor")

BLOCK_CONCURRENCY_TIMEOUT_S = 30.0
ALARM_CONCURRENCY = 32
"""Alarm handlers running at once. A start after an import finds thousands of alarms due;
started all together they would each be ready to run in every pass of the event loop, so a
request or a Redis reply would wait behind all of them. The rest wait their turn, asleep."""
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class HostLimits:
    """The host's tunables (built from `settings.actors`)."""

    max_open: int = 4096
    idle_timeout_s: float = 60.0
    mailbox_max: int = 1000
    alarm_retry_base_s: float = 2.0
    alarm_max_retries: int = 6
    socket_queue_max_bytes: int = MAX_QUEUED_BYTES


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    """Passed to `Actor.alarm` (DO: `alarmInfo`)."""

    retry_count: int
    is_retry: bool


class Actor:
    """Base class of actor kinds; one instance per activation.

    The constructor is synchronous, like a DO constructor, and runs in its own transaction:
    create tables there with `ctx.sql.exec`. Keep no state in memory that the database does not
    also hold: an activation can be evicted or reset at any time between events.
    """

    def __init__(self, ctx: ActorContext) -> None:
        self.ctx = ctx

    async def alarm(self, info: AlarmInfo) -> None:
        """Called when the actor's alarm is due."""

    async def web_socket_message(self, ws: HostedSocket, message: str | bytes) -> None:
        """Called for each message on a socket this actor accepted."""

    async def web_socket_close(self, ws: HostedSocket, code: int, reason: str) -> None:
        """Called once when a socket this actor accepted closes."""


class ActorContext:
    """What an actor sees of the host (DO: `ctx` / `state`)."""

    def __init__(self, host: ActorHost, activation: _Activation) -> None:
        self._host = host
        self._act = activation
        self.ref = activation.ref
        self.clock = host.clock

    @property
    def sharded(self) -> bool:
        """Whether this actor's kind keeps its rows in the shard files (use `tables`, not `sql`)."""
        return isinstance(self._act.storage, ShardTables)

    @property
    def sql(self) -> ActorStorage:
        """The actor's own SQLite database (DO `ctx.storage.sql`); file kinds only."""
        storage = self._act.storage
        if isinstance(storage, ShardTables):
            raise StorageApiError(
                f"actors of kind {self.ref.kind!r} keep their rows in shard files: "
                "use ctx.tables, not ctx.sql"
            )
        return storage

    @property
    def tables(self) -> ShardTables:
        """The scoped table API of a sharded kind (`gateway/actors/tables.py`)."""
        storage = self._act.storage
        if not isinstance(storage, ShardTables):
            raise StorageApiError(f"actors of kind {self.ref.kind!r} have their own database: use ctx.sql")
        return storage

    # -- alarms -------------------------------------------------------------------------------

    def get_alarm(self) -> int | None:
        """The alarm time in epoch ms, or None (also None while the alarm handler runs)."""
        act = self._act
        if act.pending_alarm is not _UNSET:
            return act.pending_alarm  # type: ignore[no-any-return]
        return None if act.alarm_hidden else act.alarm_ms

    def set_alarm(self, epoch_ms: int) -> None:
        """Set the one alarm (replacing any other), in this turn's transaction."""
        self._act.pending_alarm = int(epoch_ms)
        self._act.alarm_hidden = False
        self._act.storage.write_alarm(int(epoch_ms))

    def delete_alarm(self) -> None:
        """Clear the alarm, in this turn's transaction."""
        self._act.pending_alarm = None
        self._act.alarm_hidden = False
        self._act.storage.write_alarm(None)

    # -- WebSockets ---------------------------------------------------------------------------

    def accept_websocket(
        self, ws: WebSocketLike, tags: Sequence[str] = (), attachment: Any = None
    ) -> HostedSocket:
        """Hand a server-side socket to the host; it outlives this activation."""
        return self._host._register_socket(self.ref, ws, tags, attachment)

    def get_websockets(self, tag: str | None = None) -> list[HostedSocket]:
        """The open sockets of this actor, optionally only those carrying `tag`."""
        return self._host.get_websockets(self.ref, tag)

    def send(self, ws: HostedSocket, text: str) -> None:
        """Queue a frame; it leaves only after this turn commits (the output gate)."""
        self._act.outbox.append((ws, text))

    def close_websocket(self, ws: HostedSocket, code: int = 1000, reason: str = "") -> None:
        """Close a socket after this turn commits."""
        self._act.outbox.append((ws, (code, reason)))

    # -- concurrency control ------------------------------------------------------------------

    async def interleave(self, aw: Awaitable[T]) -> T:
        """Commit, open the gate while `aw` runs (other events may run), then close it again.

        For slow external I/O only (the legacy Redis). The turn's writes so far are committed
        and its frames sent before the gate opens; what follows is a new transaction. Not
        allowed inside `ctx.sql.transaction()`: the commit would end that scope half-way.
        """
        host, act = self._host, self._act
        if act.storage.in_savepoint:
            if inspect.iscoroutine(aw):
                aw.close()  # it will never run: don't leave a "never awaited" coroutine behind
            raise TransactionControlNotAllowed(
                "ctx.interleave inside ctx.sql.transaction() would commit the enclosing scope"
            )
        await host._commit(act)
        act.gate.release()
        try:
            return await aw
        finally:
            # re-close the gate even if cancelled meanwhile: the turn must end holding it
            await wait_through_cancellation(asyncio.ensure_future(act.gate.acquire()))
            act.begin_turn()
            await wait_through_cancellation(asyncio.ensure_future(act.storage.enter()))
            if act.dead:
                raise ActorResetError(f"actor {act.ref} was reset while its turn was interleaved")

    async def block_concurrency_while(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` with the gate held; an exception or a 30 s timeout resets the actor."""
        task = asyncio.ensure_future(fn())
        timer = asyncio.ensure_future(self.clock.sleep(BLOCK_CONCURRENCY_TIMEOUT_S))
        try:
            done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # the caller went away: the section must not run on once the turn gave up the gate
            self._act.broken = True
            await _stop(task)
            raise
        finally:
            timer.cancel()
        if task not in done:
            self._act.broken = True
            await _stop(task)
            raise TimeoutError("block_concurrency_while timed out; the actor was reset")
        try:
            return task.result()
        except BaseException:
            self._act.broken = True
            raise


async def _stop(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait until it really ended, even if the waiter is cancelled meanwhile."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await wait_through_cancellation(task)


class _Activation:
    """One live instance of an actor and its open database."""

    __slots__ = (
        "actor",
        "alarm_hidden",
        "alarm_ms",
        "broken",
        "busy",
        "ctx",
        "dead",
        "gate",
        "last_used_ms",
        "outbox",
        "path",
        "pending_alarm",
        "ref",
        "storage",
        "waiting",
    )

    def __init__(
        self, ref: ActorRef, path: Path, storage: ActorStorage | ShardTables, alarm_ms: int | None
    ) -> None:
        self.ref = ref
        self.path = path
        self.storage = storage
        self.gate = TurnGate()
        self.waiting = 0  # events queued for the gate
        self.busy = 0  # turns in progress (more than one only around `interleave`)
        self.dead = False  # closed: waiters must re-activate
        self.broken = False  # must be reset when the current turn ends
        self.last_used_ms = 0
        self.alarm_ms = alarm_ms
        self.pending_alarm: Any = _UNSET
        # the alarm handler is running and has not set or deleted the alarm itself: get_alarm()
        # says None, and the fired alarm is deleted only in the handler's final commit
        self.alarm_hidden = False
        self.outbox: list[tuple[HostedSocket, Any]] = []
        self.actor: Actor | None = None
        self.ctx: ActorContext | None = None

    def begin_turn(self) -> None:
        self.outbox = []
        self.pending_alarm = _UNSET


class _Fired:
    """A heap entry of the alarm scheduler; only the newest entry pushed for an actor is live."""

    __slots__ = ("ref", "retry", "seq", "ts")

    def __init__(self, ts: int, ref: ActorRef, retry: int, seq: int) -> None:
        self.ts = ts
        self.ref = ref
        self.retry = retry
        self.seq = seq


def _claim_file(conn: sqlite3.Connection, ref: ActorRef, path: Path) -> None:
    """Record the actor's name in its own file, or check that the file is really this actor's."""
    conn.execute(META_SCHEMA)
    row = conn.execute("SELECT value FROM _actor_meta WHERE key = 'name'").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO _actor_meta (key, value) VALUES ('kind', ?), ('name', ?)", (ref.kind, ref.name)
        )
    elif row[0] != ref.name:
        raise InvalidActorName(f"actor file {path.name} belongs to another name")


HOST_SCHEMA = """
CREATE TABLE IF NOT EXISTS actors (kind TEXT NOT NULL, name TEXT NOT NULL, file TEXT NOT NULL,
    created_ms INTEGER NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS alarms (kind TEXT NOT NULL, name TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS layout (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class ActorHost:
    """Runs actors of the registered kinds out of one data directory."""

    def __init__(
        self,
        data_dir: Path,
        factories: Mapping[str, Callable[[ActorContext], Actor]],
        *,
        clock: Clock | None = None,
        limits: HostLimits | None = None,
        synchronous: str = "NORMAL",
        committer: Committer | None = None,
        rng: random.Random | None = None,
        sharded: Mapping[str, Sequence[TableSpec]] | None = None,
        shards: int = 8,
        fire_alarms: bool = True,
        checkpoint_helper: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.factories = dict(factories)
        self.clock: Clock = clock or SystemClock()
        self.limits = limits or HostLimits()
        self.synchronous = synchronous.upper()
        self.committer: Committer = committer or (
            ThreadCommitter() if self.synchronous == "FULL" else InlineCommitter()
        )
        # the production committers end a turn with no transaction open inline (`commit_now`):
        # such a turn skips the commit machinery (`_turn`); a test's committer sees every turn
        self._inline_end = type(self.committer) in (InlineCommitter, ThreadCommitter)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        # sharded kinds: their actors keep rows in `shards` shared files (gateway/actors/shards.py)
        self.sharded = {kind: {t.name: t for t in specs} for kind, specs in (sharded or {}).items()}
        self.shard_count = shards
        # False for a tool's host (the checker, a bulk read): alarms are kept and indexed as
        # usual but never fired, so the tool changes nothing behind its back; the gateway's next
        # start fires them
        self.fire_alarms = fire_alarms
        # the WAL checkpoints' process (`checkpoint_helper.py`; it starts with the first one)
        self.checkpoint_helper = CheckpointHelper(self.synchronous) if checkpoint_helper else None
        self._alarm_slots = asyncio.Semaphore(ALARM_CONCURRENCY)
        self._shards: ShardSet | None = None
        self._open: OrderedDict[ActorRef, _Activation] = OrderedDict()
        self._open_files: dict[ActorRef, ActorStorage] = {}  # the open file actors' storage
        self._sockets: dict[ActorRef, dict[HostedSocket, None]] = {}
        self._slot_free = asyncio.Event()
        self._lock_fd: int | None = None
        self._index_db: sqlite3.Connection | None = None
        # alarm index: ref -> indexed time; a heap of entries of which only the newest per actor
        # (its seq in `_live`) fires, so re-setting an alarm never leaves two schedules behind
        self._alarm_index: dict[ActorRef, int] = {}
        self._heap: list[tuple[int, int, _Fired]] = []
        self._seq = itertools.count()
        self._live: dict[ActorRef, int] = {}
        self._wake = asyncio.Event()
        # the scheduler sleeps until this time (ms): only an alarm due before it needs to wake it
        self._wake_before: float = float("inf")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._started = False
        self._closing = False
        self.activations = 0  # constructors run (a metric, and what tests count)
        self.evictions = 0
        self.peak_open = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take ownership of the data directory, load the alarm index, start the scheduler."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(host_lock_path(self.data_dir), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise ActorOwnedElsewhere(
                f"another agent-coord process owns the data directory {self.data_dir}"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        try:
            self._open_storage()
        except BaseException:
            self._close_storage()
            raise
        db = self._db
        for kind, name, ts in db.execute("SELECT kind, name, ts FROM alarms"):
            ref = ActorRef(kind, name)
            self._alarm_index[ref] = int(ts)
            self._push(int(ts), ref, 0)
        if self._shards is not None:
            for kind, name, ts in self._shards.alarms():
                ref = ActorRef(kind, name)
                self._alarm_index[ref] = ts
                self._push(ts, ref, 0)
        self._started = True
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self._sweeper()), loop.create_task(self._checkpointer())]
        if self.fire_alarms:
            self._background.append(loop.create_task(self._scheduler()))
        if self._shards is not None:
            self._shards.start_checkpoints()
        log.info(
            "actor_host.started",
            data_dir=str(self.data_dir),
            alarms=len(self._alarm_index),
            synchronous=self.synchronous,
            max_open=self.limits.max_open,
            shards=self.shard_count if self.sharded else 0,
        )

    def _open_storage(self) -> None:
        """Open the host index and the shard files; convert actors kept in the old layout."""
        db = sqlite3.connect(host_index_path(self.data_dir), isolation_level=None, check_same_thread=False)
        self._index_db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.executescript(HOST_SCHEMA)
        if not self.sharded:
            return
        row = db.execute("SELECT value FROM layout WHERE key = 'shards'").fetchone()
        if row is None:
            db.execute("INSERT INTO layout (key, value) VALUES ('shards', ?)", (str(self.shard_count),))
        elif int(row[0]) != self.shard_count:
            raise DataDirError(
                f"the data directory {self.data_dir} was created with storage.shards = {row[0]}; "
                f"set storage.shards = {row[0]} (the setting is {self.shard_count})"
            )
        self._shards = ShardSet(
            self.data_dir,
            self.shard_count,
            self.sharded,
            self.synchronous,
            self.clock.now_ms,
            helper=self.checkpoint_helper,
        )
        self._shards.open()
        convert_old_layout(self.data_dir, db, self._shards)

    def _close_storage(self) -> None:
        if self._shards is not None:
            self._shards.close()
            self._shards = None
        if self._index_db is not None:
            self._index_db.close()
            self._index_db = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def accepting(self) -> bool:
        """Started and not closing: the host takes events (for readiness checks)."""
        return self._started and not self._closing

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop taking events, let in-flight turns finish (bounded), close sockets with 1001."""
        if not self._started or self._closing:
            return
        self._closing = True
        self._slot_free.set()  # events waiting for a database slot give up (HostClosed)
        for t in self._background:
            t.cancel()
        for t in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self._drain_turns(grace_s)
        late = list(self._tasks)  # alarm handlers still running after the grace period
        for t in late:
            t.cancel()
        if late:  # let them roll back while their databases are still open
            await asyncio.wait(late, timeout=1.0)
        await self._close_sockets(1001, "going away")
        if self._shards is not None:
            await self._shards.stop()  # the pending group commits finish first
        if self.checkpoint_helper is not None:
            await self.checkpoint_helper.close()  # no round runs: the checkpointers have ended
        for act in list(self._open.values()):
            self._close_activation(act)
        self._close_storage()
        log.info("actor_host.closed")

    async def _drain_turns(self, grace_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(a.busy or a.waiting for a in self._open.values()):
            if loop.time() >= deadline:
                busy = sum(1 for a in self._open.values() if a.busy)
                log.warning("actor_host.grace_expired", busy=busy)
                return
            await asyncio.sleep(0.01)

    async def _close_sockets(self, code: int, reason: str) -> None:
        held = [hs for socks in self._sockets.values() for hs in socks]
        for hs in held:
            hs.enqueue_close(code, reason)
        await asyncio.gather(*(hs.flush(1.0) for hs in held))
        self._sockets.clear()

    # -- events -----------------------------------------------------------------------------------

    async def call(self, ref: ActorRef, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn(actor)` as one strict turn of the actor named by `ref` and return its result."""
        act = self._open.get(ref)
        if act is not None and self._started and not self._closing and act.gate.try_acquire():
            # an open actor with a free gate and no queue: its turn starts without an await
            self._open.move_to_end(ref)
            if not act.storage.try_enter():  # sharded kinds: the shard's turn lock is busy
                try:
                    await act.storage.enter()
                except BaseException:
                    act.gate.release()
                    raise
            return await self._turn(act, fn)
        while True:
            act = await self._activation(ref)
            if act.waiting >= self.limits.mailbox_max:
                raise ActorOverloaded(f"actor {ref} has {act.waiting} queued events")
            act.waiting += 1
            try:
                await act.gate.acquire()
            finally:
                act.waiting -= 1
            if act.dead:  # reset or evicted while we waited: start over on a fresh activation
                act.gate.release()
                continue
            try:
                await act.storage.enter()  # sharded kinds: the shard's turn lock
            except BaseException:
                act.gate.release()
                raise
            return await self._turn(act, fn)

    run_in_actor = call

    async def _turn(self, act: _Activation, fn: Callable[[Any], Awaitable[T]]) -> T:
        act.busy += 1
        act.begin_turn()
        try:
            try:
                result = await fn(act.actor)
            except BaseException as e:
                self._abort(act)
                if act.dead and isinstance(e, sqlite3.ProgrammingError):
                    # the host closed the database under the turn (shutdown past its grace period)
                    raise self._gone(act) from e
                raise
            crash_point("turn.before_commit")
            idle = not act.outbox and act.pending_alarm is _UNSET
            if not idle or not act.storage.end_read_turn(self._inline_end):
                await self._commit(act)  # else the turn left nothing to commit, send or wait for
            return result
        finally:
            act.storage.leave()
            act.busy -= 1
            act.last_used_ms = self.clock.now_ms()
            if act.broken and not act.dead:
                self._reset(act, "critical section failed")
            if act.gate.locked():
                act.gate.release()
            self._slot_free.set()

    def _gone(self, act: _Activation) -> Exception:
        if self._closing:
            return HostClosed(
                f"the actor host shut down during a turn of {act.ref}; its uncommitted writes were discarded"
            )
        return ActorResetError(
            f"actor {act.ref} was reset during its turn; its uncommitted writes were discarded"
        )

    def _abort(self, act: _Activation) -> None:
        act.outbox = []
        act.pending_alarm = _UNSET
        if not act.dead:
            act.storage.rollback()

    async def _commit(self, act: _Activation) -> None:  # noqa: PLR0912 - each branch is one case
        """Commit the turn's transaction, then release its outputs (the output gate)."""
        new_alarm = act.pending_alarm
        alarm_changed = new_alarm is not _UNSET and new_alarm != act.alarm_ms
        indexed = self._alarm_index.get(act.ref)
        sharded = isinstance(act.storage, ShardTables)  # its alarm row is its index: set after
        if (
            alarm_changed
            and not sharded
            and new_alarm is not None
            and (indexed is None or new_alarm < indexed)
        ):
            self._index_set(act.ref, new_alarm)  # moving earlier: index first
        cancelled = False
        try:
            if isinstance(act.storage, ShardTables):
                await act.storage.finish()  # the shard's group commit
            else:
                await self.committer.commit(act.storage)
        except asyncio.CancelledError:
            if act.storage.in_transaction:  # cancelled before the commit ran: nothing is durable
                self._reset(act, "commit cancelled")
                raise
            cancelled = True  # the commit finished: release its outputs, then propagate
        except Exception as e:
            log.exception("actor.commit_failed", actor=str(act.ref))
            self._reset(act, "commit failed")
            raise CommitFailed(f"could not commit the turn of {act.ref}: {e}") from e
        if alarm_changed:
            act.alarm_ms = new_alarm
            if new_alarm is None:
                self._index_clear(act.ref)
            elif sharded and new_alarm != indexed:
                self._index_set(act.ref, new_alarm)
            elif indexed is not None and new_alarm > indexed:
                self._index_set(act.ref, new_alarm)  # moving later: after the commit
        act.pending_alarm = _UNSET
        outbox, act.outbox = act.outbox, []
        for hs, item in outbox:
            if isinstance(item, str):
                hs.enqueue(item)
            else:
                hs.enqueue_close(*item)
        if cancelled:
            raise asyncio.CancelledError

    # -- activation, eviction, reset --------------------------------------------------------------

    async def _activation(self, ref: ActorRef) -> _Activation:
        if not self._started or self._closing:
            raise HostClosed("the actor host is not running")
        act = self._open.get(ref)
        if act is not None:
            self._open.move_to_end(ref)
            return act
        while len(self._open) >= self.limits.max_open:
            if not self._evict_one():
                self._slot_free.clear()
                await self._slot_free.wait()
                if self._closing:  # close() wakes the waiters: open nothing new
                    raise HostClosed("the actor host is shutting down")
                act = self._open.get(ref)
                if act is not None:
                    return act
        return self._activate(ref)

    def _activate(self, ref: ActorRef) -> _Activation:
        factory = self.factories.get(ref.kind)
        if factory is None:
            raise InvalidActorName(f"unknown actor kind {ref.kind!r}")
        specs = self.sharded.get(ref.kind)
        if specs is not None:
            return self._activate_sharded(ref, factory, specs)
        path = actor_path(self.data_dir, ref)
        fresh = not path.exists()
        if fresh:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = open_connection(path, self.synchronous, fresh=fresh)
        try:
            _claim_file(conn, ref, path)
            if fresh:
                self._register_name(ref, path)
            storage = ActorStorage(conn, path)
            act = _Activation(ref, path, storage, storage.read_alarm())
            act.ctx = ActorContext(self, act)
            act.actor = factory(act.ctx)
            storage.commit_now()
        except BaseException:
            conn.close()
            raise
        act.last_used_ms = self.clock.now_ms()
        self._open[ref] = act
        self._open_files[ref] = storage
        self.activations += 1
        self.peak_open = max(self.peak_open, len(self._open))
        return act

    def _activate_sharded(
        self, ref: ActorRef, factory: Callable[[ActorContext], Actor], specs: Mapping[str, TableSpec]
    ) -> _Activation:
        """An actor of a sharded kind: nothing is opened or written; its rows are in its shard.

        Its stored alarm is the one the host loaded from the shard (the shard row is both the
        stored alarm and its index), and its constructor may not touch storage (no turn is open).
        """
        if self._shards is None:
            raise HostClosed("the actor host is not running")
        shard = self._shards[shard_of(ref, self.shard_count)]
        storage = ShardTables(shard, ref, specs)
        act = _Activation(ref, shard.path, storage, self._alarm_index.get(ref))
        act.ctx = ActorContext(self, act)
        act.actor = factory(act.ctx)
        act.last_used_ms = self.clock.now_ms()
        self._open[ref] = act
        self.activations += 1
        self.peak_open = max(self.peak_open, len(self._open))
        return act

    @property
    def _db(self) -> sqlite3.Connection:
        if self._index_db is None:
            raise HostClosed("the actor host is not running")
        return self._index_db

    def _register_name(self, ref: ActorRef, path: Path) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO actors (kind, name, file, created_ms) VALUES (?, ?, ?, ?)",
            (ref.kind, ref.name, str(path.relative_to(self.data_dir)), self.clock.now_ms()),
        )

    def _idle(self, act: _Activation) -> bool:
        return act.busy == 0 and act.waiting == 0 and not act.gate.locked()

    def _evict_one(self) -> bool:
        for act in self._open.values():  # least recently used first
            if self._idle(act):
                self._close_activation(act)
                self.evictions += 1
                return True
        return False

    def _close_activation(self, act: _Activation) -> None:
        act.dead = True
        self._open.pop(act.ref, None)
        if self._open_files.get(act.ref) is act.storage:
            del self._open_files[act.ref]
        try:
            act.storage.close()
        except sqlite3.Error as e:
            log.warning("actor.close_failed", actor=str(act.ref), error=str(e))

    def _reset(self, act: _Activation, why: str) -> None:
        log.warning("actor.reset", actor=str(act.ref), reason=why)
        act.outbox = []
        self._close_activation(act)

    async def evict(self, ref: ActorRef) -> bool:
        """Close the actor's database now if it is idle (DO: hibernation); sockets stay."""
        act = self._open.get(ref)
        if act is None or not self._idle(act):
            return False
        self._close_activation(act)
        self.evictions += 1
        return True

    async def _sweeper(self) -> None:
        idle_ms = self.limits.idle_timeout_s * 1000
        while True:
            await self.clock.sleep(max(self.limits.idle_timeout_s / 2, 0.05))
            now = self.clock.now_ms()
            for act in list(self._open.values()):
                if self._idle(act) and now - act.last_used_ms >= idle_ms:
                    self._close_activation(act)
                    self.evictions += 1

    async def _checkpointer(self) -> None:
        """Checkpoint the WAL of each open file actor that wrote, once its frames not yet copied
        back pass `wal.CHECKPOINT_WAL_BYTES`, in a worker thread (`ActorStorage.checkpoint`; the
        turns' connection never checkpoints: `open_connection`), then once more with the actor's
        turns held back so that its WAL starts over (`_catch_up`). A checkpoint under way is never
        abandoned: a stop waits for the thread. An eviction meanwhile closes only the turns'
        connection; the checkpoint's own closes when it ends. The interval is on the host's
        clock (a fake clock schedules no real-time timer)."""
        while True:
            await self.clock.sleep(wal.CHECKPOINT_INTERVAL_S)
            due = [(ref, storage) for ref, storage in self._open_files.items() if storage.wrote_since_check]
            for ref, storage in due:
                storage.wrote_since_check = False
                if storage.closed or storage.path is None:
                    continue
                if wal.wal_backlog_bytes(storage.path) <= wal.CHECKPOINT_WAL_BYTES:
                    continue
                try:
                    await wal.checkpoint_in_rounds(storage.path, storage.checkpoint, self.checkpoint_helper)
                    await self._catch_up(ref, storage)
                except sqlite3.Error as e:
                    log.warning("actor.checkpoint_failed", path=str(storage.path), error=str(e))

    async def _catch_up(self, ref: ActorRef, storage: ActorStorage) -> None:
        """Checkpoint `storage` once more with its actor's turns held back (its gate): the frames
        its turns committed during the first checkpoint are copied back too, so its next write
        starts the WAL over instead of appending to it (`wal.py`). Between turns no transaction
        is open (each turn commits before it gives up the gate). Under `synchronous=NORMAL` it
        runs on the turns' own connection on the event loop, as their commits do: in a worker
        thread the actor's events waited 2-8 ms for it under issue 13's mix, most of it the
        thread waiting for the GIL, for a checkpoint of a few frames."""
        act = self._open.get(ref)
        if act is None or act.storage is not storage:
            return  # evicted meanwhile: its next activation's WAL starts over on its own
        await act.gate.acquire()
        try:
            if act.dead or storage.closed or storage.in_transaction:
                return
            version = storage.data_version()
            ms = await wal.held_round(
                self.synchronous,
                storage.checkpoint,
                storage.checkpoint_inline,
                helper=self.checkpoint_helper,
                path=storage.path,
            )
            # the helper's write that started the WAL over changed no row: the actor's copies in
            # memory (`gateway/do/memory.py`, keyed by `change_token`) stay current
            storage.absorb_empty_commit(version)
            log.debug("actor.checkpoint_caught_up", ref=str(ref), ms=ms)
        finally:
            act.gate.release()

    @property
    def socket_count(self) -> int:
        """How many WebSockets the host holds, over all actors."""
        return sum(len(socks) for socks in self._sockets.values())

    @property
    def open_count(self) -> int:
        """How many actor databases are open right now."""
        return len(self._open)

    def is_active(self, ref: ActorRef) -> bool:
        return ref in self._open

    def in_transaction(self, ref: ActorRef) -> bool:
        """Whether the actor's connection has a transaction open (for tests and diagnostics)."""
        act = self._open.get(ref)
        return act is not None and act.storage.in_transaction

    def list_actors(self, kind: str) -> list[str]:
        """Every name of `kind` the host holds, sorted (DO: `listDurableObjectIds`).

        A file kind lists every actor ever activated; a sharded kind every actor that has
        written (a read of an actor with no stored state registers nothing).
        """
        if kind in self.sharded:
            if self._shards is None:
                raise HostClosed("the actor host is not running")
            return self._shards.names(kind)
        rows = self._db.execute("SELECT name FROM actors WHERE kind = ? ORDER BY name", (kind,))
        return [r[0] for r in rows]

    async def read_rows(
        self,
        kind: str,
        shard: int,
        table: str,
        cols: str,
        where: str = "",
        *params: Any,
        order: str = "",
        limit: int | None = None,
        extra_of: tuple[str, str] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Rows of table `table` of a sharded kind in shard `shard`, across its actors, read
        without activating any of them (bulk reads: the checker, the migration tool's export).

        `cols`, `where` and `order` are fragments as for `ctx.tables` (column names, operators,
        `?`) and may name the `actor` column; values are bound. With `extra_of` (a domain and
        the table's id column), each row ends with its `_extra` value of that domain (None when
        it has none), looked up for that row alone. Read-only. The read is as safe
        as a read-only turn: it runs between turns (under the shard's turn lock), so each actor's
        rows are as a whole turn left them, and, like such a turn, it returns once what it saw
        is durable (it waits for the open group commit, if any).
        """
        if self._shards is None:
            raise HostClosed("the actor host is not running")
        sql, args = bulk_select(
            self.sharded, kind, table, cols, where, params, order=order, limit=limit, extra_of=extra_of
        )
        return await self._shards[shard].read(sql, args)

    async def write_rows(self, kind: str, shard: int, work: Callable[[ShardWriter], T]) -> T:
        """Run `work` on a `ShardWriter` of shard `shard` of sharded kind `kind`: many actors'
        rows written in one scope of the shard's transaction, each actor's in a scope of its
        own, without activating any of them (bulk imports; `gateway/actors/bulk_write.py` says
        what of a turn is kept). `work` runs under the shard's turn lock, between turns, and
        cannot await; an exception it lets out rolls the whole batch back. Returns once the
        batch is durable (the shard's group commit), with `work`'s result.
        """
        if self._shards is None or self._closing:
            raise HostClosed("the actor host is not running")
        specs = self.sharded.get(kind)
        if specs is None:
            raise StorageApiError(f"actors of kind {kind!r} are not sharded")
        target = self._shards[shard]
        writer = ShardWriter(target, kind, specs)
        target.queued += 1
        try:
            await target.lock.acquire()
        finally:
            target.queued -= 1
        try:
            scope = writer.begin()
            try:
                result = work(writer)
                crash_point("bulk_write.before_commit")
            except BaseException:
                writer.abort(scope)
                raise
            writer.end(scope)
        finally:
            target.lock.release()
            for name in writer.names:  # their rows changed without a turn: drop what they kept
                act = self._open.get(ActorRef(kind, name))
                if act is not None and isinstance(act.storage, ShardTables):
                    act.storage.forget_kept()
        await target.durable()
        return result

    @property
    def shard_set(self) -> ShardSet | None:
        """The shard files (None when no kind is sharded); for tests, benchmarks and status."""
        return self._shards

    # -- alarms -------------------------------------------------------------------------------------

    def _push(self, ts: int, ref: ActorRef, retry: int) -> None:
        """Schedule `ref` at `ts`, superseding whatever was scheduled for it before."""
        seq = next(self._seq)
        self._live[ref] = seq
        heapq.heappush(self._heap, (ts, seq, _Fired(ts, ref, retry, seq)))
        if ts < self._wake_before:  # else the scheduler wakes by then anyway and looks again
            self._wake.set()

    def _index_set(self, ref: ActorRef, ts: int) -> None:
        if ref.kind not in self.sharded:  # a sharded actor's alarm row is its own index
            self._db.execute(
                "INSERT INTO alarms (kind, name, ts) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, name) DO UPDATE SET ts = excluded.ts",
                (ref.kind, ref.name, ts),
            )
        self._alarm_index[ref] = ts
        self._push(ts, ref, 0)

    def _index_clear(self, ref: ActorRef) -> None:
        if ref.kind not in self.sharded:
            self._db.execute("DELETE FROM alarms WHERE kind = ? AND name = ?", (ref.kind, ref.name))
        self._alarm_index.pop(ref, None)
        self._live.pop(ref, None)

    @property
    def pending_alarms(self) -> int:
        return len(self._alarm_index)

    def next_alarm_ms(self) -> int | None:
        """The earliest indexed alarm time (for tests and status)."""
        return min(self._alarm_index.values(), default=None)

    async def _scheduler(self) -> None:
        while True:
            self._wake.clear()
            self.fire_due()
            if self._heap:
                self._wake_before = self._heap[0][0]
                delay = max(0.0, (self._wake_before - self.clock.now_ms()) / 1000)
                sleeper = asyncio.ensure_future(self.clock.sleep(delay))
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
            else:
                self._wake_before = float("inf")
                await self._wake.wait()

    def fire_due(self) -> int:
        """Start the handlers of every due alarm; returns how many were started."""
        now = self.clock.now_ms()
        started = 0
        while self._heap and self._heap[0][0] <= now:
            _, _, entry = heapq.heappop(self._heap)
            if self._live.get(entry.ref) != entry.seq:
                continue  # superseded by a newer schedule (re-set, moved, cleared or retried)
            del self._live[entry.ref]
            if entry.ref not in self._alarm_index:
                continue
            task = asyncio.get_running_loop().create_task(self._fire(entry.ref, entry.retry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def _fire(self, ref: ActorRef, retry: int) -> bool:
        """Run the alarm handler of `ref` if its stored alarm is due; schedule a retry on error."""
        async with self._alarm_slots:  # at most ALARM_CONCURRENCY at once
            return await self._fire_now(ref, retry)

    async def _fire_now(self, ref: ActorRef, retry: int) -> bool:
        try:
            return await self.call(ref, lambda actor: self._alarm_turn(ref, actor, retry, force=False))
        except HostClosed:
            return False  # the alarm stays stored and indexed; the next start fires it
        except Exception as e:  # any handler error is retried, as DO does
            if retry < self.limits.alarm_max_retries:
                self._schedule_retry(ref, retry, e)
            else:
                log.exception("alarm.gave_up", actor=str(ref), retries=retry, error=str(e))
                await self._give_up(ref)
            return False

    async def _alarm_turn(self, ref: ActorRef, actor: Actor, retry: int, *, force: bool) -> bool:
        act = self._open[ref]
        stored = act.alarm_ms
        now = self.clock.now_ms()
        if stored is None:
            if self._alarm_index.get(ref) is not None and not force:
                self._index_clear(ref)
            return False
        if stored > now and not force:
            self._index_set(ref, stored)  # the stored alarm moved later: follow it
            return False
        ctx = act.ctx
        if ctx is None:
            raise ActorResetError(f"actor {ref} has no context")
        # get_alarm() is None while the handler runs, unless it sets one. The fired alarm is
        # deleted in the handler's last transaction, not its first: a commit made earlier by
        # ctx.interleave must not clear an alarm whose handler may still fail (and be retried).
        act.alarm_hidden = True
        try:
            await actor.alarm(AlarmInfo(retry_count=retry, is_retry=retry > 0))
        finally:
            hidden, act.alarm_hidden = act.alarm_hidden, False
        if hidden:
            ctx.delete_alarm()
        crash_point("alarm.before_commit")
        return True

    def _schedule_retry(self, ref: ActorRef, retry: int, error: BaseException) -> None:
        delay_s = Backoff(self.limits.alarm_retry_base_s, jitter=(0.75, 1.25)).delay_s(retry, self._rng)
        log.warning(
            "alarm.retry", actor=str(ref), retry=retry + 1, delay_s=round(delay_s, 3), error=str(error)
        )
        self._push(self.clock.now_ms() + int(delay_s * 1000), ref, retry + 1)

    async def _give_up(self, ref: ActorRef) -> None:
        """Drop an alarm whose handler failed every retry, from the actor's database and the index.

        DO drops it too. Only dropping the index entry would leave `get_alarm()` reporting a time
        that never fires, not even after a restart, and a later `set_alarm` of that same time
        would be a no-op that is never scheduled.
        """

        async def drop(actor: Actor) -> None:
            act = self._open[ref]
            if act.alarm_ms is None:
                self._index_clear(ref)
            elif act.alarm_ms <= self.clock.now_ms() and act.ctx is not None:
                act.ctx.delete_alarm()  # the commit clears the index entry
            # else a later alarm was set meanwhile: keep it (that turn indexed it)

        try:
            await self.call(ref, drop)
        except Exception:
            log.exception("alarm.give_up_failed", actor=str(ref))

    async def run_alarm(self, ref: ActorRef) -> bool:
        """Run the actor's alarm now if one is set (DO test helper `runDurableObjectAlarm`)."""
        return await self.call(ref, lambda actor: self._alarm_turn(ref, actor, 0, force=True))

    async def wait_idle(self) -> None:
        """Wait until every alarm handler started so far has finished (for tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- WebSockets -------------------------------------------------------------------------------

    def _register_socket(
        self, ref: ActorRef, ws: WebSocketLike, tags: Sequence[str], attachment: Any
    ) -> HostedSocket:
        hs = HostedSocket(ws, ref, tags, attachment, max_queued_bytes=self.limits.socket_queue_max_bytes)
        self._sockets.setdefault(ref, {})[hs] = None
        return hs

    def accept_websocket(
        self, ref: ActorRef, ws: WebSocketLike, tags: Sequence[str] = (), attachment: Any = None
    ) -> HostedSocket:
        """Hold a socket for `ref` outside any turn (for pushes whose data lives in another store)."""
        return self._register_socket(ref, ws, tags, attachment)

    def forget_websocket(self, hs: HostedSocket) -> None:
        """Drop a held socket without calling its actor (the counterpart of `accept_websocket`)."""
        hs.closed = True
        socks = self._sockets.get(hs.ref)
        if socks is not None:
            socks.pop(hs, None)
            if not socks:
                del self._sockets[hs.ref]

    def get_websockets(self, ref: ActorRef, tag: str | None = None) -> list[HostedSocket]:
        """The open sockets held for `ref`, optionally only those carrying `tag`."""
        socks = self._sockets.get(ref)
        if not socks:
            return []
        if tag is None:
            return list(socks)
        return [hs for hs in socks if tag in hs.tags]

    def send(self, sockets: Iterable[HostedSocket], text: str) -> None:
        """Queue a frame on sockets outside any turn (pushes whose data lives elsewhere)."""
        for hs in sockets:
            hs.enqueue(text)

    async def deliver_ws_message(self, ref: ActorRef, hs: HostedSocket, message: str | bytes) -> None:
        """A message arrived on a held socket: run it as a turn (re-activating if evicted)."""
        if hs.closed:
            return
        await self.call(ref, lambda actor: actor.web_socket_message(hs, message))

    async def deliver_ws_close(self, ref: ActorRef, hs: HostedSocket, code: int, reason: str = "") -> None:
        """A held socket closed: forget it and run `web_socket_close` exactly once."""
        if hs.closed:
            return
        hs.closed = True
        socks = self._sockets.get(ref)
        if socks is not None:
            socks.pop(hs, None)
            if not socks:
                del self._sockets[ref]
        if self._closing:
            return
        await self.call(ref, lambda actor: actor.web_socket_close(hs, code, reason))
