"""The durable repair queue: entities whose copy in the non-authoritative store is behind.

When a write to the non-authoritative store fails in `write-through` or `read-switch`, the
request still succeeds and the entity's key goes here. The queue lives in
`<data_dir>/repair.sqlite` (WAL), so it survives a crash of the gateway. It holds one row per
(entity, target store): a repair never replays the failed write, it re-reads the source
store's *current* value and upserts it (or deletes, when the entity is gone), so several
failed writes of one entity collapse into one repair and per-entity order is the source's
order by construction. A `gen` counter bumped on every enqueue makes sure a repair that read
an older value does not remove the entry of a newer failure that arrived meanwhile.

An entry whose copy keeps failing for a reason of its own (Redis holds a value of that entity
the gateway cannot read and will not overwrite, or the value cannot be stored) is not retried
forever: after `max_strikes` such failures it moves to the *dead-letter* list with its last
error, where it no longer counts as queued but blocks the forward phase guards until an operator
retries it (back into the queue, attempts reset) or drops it. Failures of a store that cannot be
reached never count toward that limit: a Redis down for an hour dead-letters nothing.

Intents close the window between the two writes: before the authoritative store runs a
command, the router records an intent per entity it may touch (`begin`), and ends them once
the other store has the new state or the failure is queued (`end`). A gateway killed in between
leaves the intents behind; the next start turns them into repair entries (a repair of an entity
that did not change copies the same value again, which is harmless). Intents must survive a
crash of the process, like the actor commits they guard, not a power loss, and every write in
write-through and read-switch records them, so they are lines appended to a journal
(`<data_dir>/repair.intents`, `IntentJournal`) with one `write` system call per command (its
intents, after the ends noted since the last one): in the page cache before the command runs,
with no SQLite transaction, no fsync and no WAL checkpoint on the request path. An end lost in a
crash only repairs an entity that needed none. The journal is emptied whenever no intent is open
and it has grown past `JOURNAL_TRUNCATE_BYTES`. (Queues written by an older version kept
intents in an `intent` table; those are recovered too.)

Repair entries, which stand for writes already acknowledged, are written with `FULL`, on a
thread of their own (as the actor host commits `FULL` turns), so their fsync never holds up the
event loop. Reads (what is due, the stats) use a second connection and see every committed
entry (WAL).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from gateway.actors.storage import wait_through_cancellation
from gateway.clock import Clock
from gateway.domain.entities import EntityKey
from gateway.errors import GatewayError
from gateway.retry import Backoff

log = structlog.get_logger(__name__)


TARGETS = ("legacy", "actors")

SCHEMA = """
CREATE TABLE IF NOT EXISTS repair (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL, scope TEXT NOT NULL, id TEXT NOT NULL, target TEXT NOT NULL,
    enqueued_ms INTEGER NOT NULL, gen INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, last_error TEXT,
    strikes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (domain, scope, id, target)
);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL, scope TEXT NOT NULL, id TEXT NOT NULL, target TEXT NOT NULL,
    enqueued_ms INTEGER NOT NULL, dead_ms INTEGER NOT NULL, attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (domain, scope, id, target)
);
CREATE INDEX IF NOT EXISTS repair_due ON repair (next_ms, seq);
CREATE INDEX IF NOT EXISTS repair_target_due ON repair (target, next_ms);
CREATE TABLE IF NOT EXISTS intent (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL, scope TEXT NOT NULL, id TEXT NOT NULL, target TEXT NOT NULL,
    started_ms INTEGER NOT NULL
);
"""

_BURY = (
    "INSERT INTO dead_letter (domain, scope, id, target, enqueued_ms, dead_ms, attempts, reason) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, scope, id, target) DO UPDATE SET "
    "dead_ms = excluded.dead_ms, attempts = attempts + excluded.attempts, reason = excluded.reason"
)
_ENTRY_COLUMNS = "seq, domain, scope, id, target, enqueued_ms, gen, attempts, next_ms, last_error, strikes"
_DEAD_COLUMNS = "seq, domain, scope, id, target, enqueued_ms, dead_ms, attempts, reason"

_ENQUEUE = (
    "INSERT INTO repair (domain, scope, id, target, enqueued_ms, next_ms, last_error) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, scope, id, target) DO UPDATE SET "
    "gen = gen + 1, next_ms = MIN(next_ms, excluded.next_ms), last_error = excluded.last_error"
)


@dataclass(frozen=True, slots=True)
class RepairEntry:
    """One entity waiting to be copied to `target`."""

    seq: int
    key: EntityKey
    target: str
    enqueued_ms: int
    gen: int
    attempts: int
    next_ms: int
    last_error: str | None
    strikes: int = 0  # failures of this entity itself (not of an unreachable store)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A repair that failed its last retry: kept with its reason until an operator acts."""

    seq: int
    key: EntityKey
    target: str
    enqueued_ms: int
    dead_ms: int
    attempts: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        from gateway.domain.jscompat import iso_from_ms  # noqa: PLC0415 - keeps the module light

        return {
            "seq": self.seq,
            "domain": self.key.domain,
            "scope": self.key.scope,
            "id": self.key.id,
            "target": self.target,
            "enqueuedAt": iso_from_ms(self.enqueued_ms),
            "deadAt": iso_from_ms(self.dead_ms),
            "attempts": self.attempts,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    oldest_ms: int | None
    max_attempts: int
    dead_letters: int = 0


INTENTS_FILE = "repair.intents"
JOURNAL_TRUNCATE_BYTES = 1 << 20
"""The intent journal is emptied when no intent is open and it is at least this long."""

Intent = tuple[EntityKey, str]  # the entity, and the store it is being copied to


class IntentJournal:
    """Open intents, as lines appended to a file (module docstring): `["b", handle, domain,
    scope, id, target]` when one begins, `["e", handle, ...]` when intents end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._open: dict[int, Intent] = {}
        self._ended: list[int] = []  # ended, not written yet (`end`)
        self._last = 0

    @staticmethod
    def left_behind(path: Path) -> list[Intent]:
        """The intents a journal holds that never ended, in the order they began."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        begun: dict[int, Intent] = {}
        for line in data.splitlines():
            try:
                record = orjson.loads(line)
                if record[0] == "b":
                    key = EntityKey(str(record[2]), str(record[3]), str(record[4]))
                    begun[int(record[1])] = (key, str(record[5]))
                elif record[0] == "e":
                    for handle in record[1:]:
                        begun.pop(int(handle), None)
            except (orjson.JSONDecodeError, IndexError, TypeError, ValueError):
                continue  # a torn last line: its write never returned, so its command never ran
        return list(begun.values())

    def __len__(self) -> int:
        return len(self._open)

    def get(self, handle: int) -> Intent | None:
        return self._open.get(handle)

    def begin(self, keys: Sequence[EntityKey], target: str) -> list[int]:
        """Open intents for `keys`: written before this returns, with the ends noted since the
        last write ahead of them (one system call)."""
        handles = list(range(self._last + 1, self._last + 1 + len(keys)))
        lines = [
            orjson.dumps(["b", h, k.domain, k.scope, k.id, target])
            for h, k in zip(handles, keys, strict=True)
        ]
        if self._ended:
            lines.insert(0, orjson.dumps(["e", *self._ended]))
        self._append(b"\n".join(lines) + b"\n")
        self._ended.clear()
        self._last += len(keys)
        for h, k in zip(handles, keys, strict=True):
            self._open[h] = (k, target)
        return handles

    def end(self, handles: Sequence[int]) -> None:
        """End intents. The end is written with the next `begin` (or at `close`): an end lost in
        a crash only makes the next start repair an entity that needed none, which is harmless."""
        for h in handles:
            self._open.pop(h, None)
        self._ended.extend(handles)
        if not self._open and self._size >= JOURNAL_TRUNCATE_BYTES:
            self.clear()  # nothing is open: nothing in it is needed any more

    def clear(self) -> None:
        """Empty the journal (what it held is ended, or repair entries now)."""
        self._open.clear()
        self._ended.clear()
        os.ftruncate(self._fd, 0)
        self._size = 0

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def close(self) -> None:
        if self._ended:
            self._append(orjson.dumps(["e", *self._ended]) + b"\n")
        os.close(self._fd)


class RepairQueue:
    """The queue's storage: entries written (and fsynced) on the queue's own thread, intents
    appended to their journal and reads run on the event loop (no fsync)."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "repair.sqlite"
        self._clock = clock
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an entry stands for a write the client was told succeeded; it must survive power loss
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {str(row[1]) for row in self._db.execute("PRAGMA table_info(repair)")}
        if "strikes" not in columns:  # a queue written by an older version
            self._db.execute("ALTER TABLE repair ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0")
        self.recovered = self._recover_intents(data_dir / INTENTS_FILE)
        # the request path's intents (module docstring): recovered above, so the journal starts empty
        self._intents = IntentJournal(data_dir / INTENTS_FILE)
        self._intents.clear()
        # one thread owns `_db` from here on: its commits are serialised and fsync off the loop
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="repair-queue")
        # reads on the loop: a second connection (WAL readers never wait for the writer)
        self._read = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.wakeup = asyncio.Event()

    async def _write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        """Run one statement (its own FULL transaction) on the writer thread."""
        fut = asyncio.get_running_loop().run_in_executor(self._writer, self._db.execute, sql, params)
        return await wait_through_cancellation(fut)

    def _recover_intents(self, journal: Path) -> int:
        """Turn the intents a killed gateway left behind into repair entries (at start-up); the
        journal is emptied after they are committed (a crash in between recovers them again)."""
        now = self._clock.now_ms()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._db.execute("SELECT domain, scope, id, target FROM intent ORDER BY seq").fetchall()
            rows += [(k.domain, k.scope, k.id, target) for k, target in IntentJournal.left_behind(journal)]
            for domain, scope, ident, target in rows:
                self._db.execute(
                    _ENQUEUE, (domain, scope, ident, target, now, now, "gateway stopped during replication")
                )
            self._db.execute("DELETE FROM intent")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if rows:
            log.warning("repair.intents_recovered", entries=len(rows))
        return len(rows)

    async def enqueue(
        self, key: EntityKey, target: str, error: str, *, not_before_ms: int | None = None
    ) -> None:
        """Record that `target`'s copy of `key` must be repaired (idempotent; bumps `gen`).

        The entry is due at once, or at `not_before_ms` (a target known to be down is not
        probed again for each new entry).
        """
        if target not in TARGETS:
            raise ValueError(f"unknown repair target {target!r}")
        now = self._clock.now_ms()
        due = now if not_before_ms is None else max(now, not_before_ms)
        await self._write(_ENQUEUE, (key.domain, key.scope, key.id, target, now, due, error))
        self.wakeup.set()

    def begin(self, keys: Sequence[EntityKey], target: str) -> list[int]:
        """Record intents to copy `keys` to `target`; returns their handles for `end`/`abandon`."""
        return self._intents.begin(keys, target) if keys else []

    def end(self, handles: Sequence[int]) -> None:
        """Forget intents whose replication finished (copied, or queued for repair)."""
        if handles:
            self._intents.end(handles)

    async def abandon(self, handles: Sequence[int], error: str) -> None:
        """Turn intents whose replication was interrupted into repair entries."""
        for handle in handles:
            intent = self._intents.get(handle)
            if intent is not None:
                await self.enqueue(intent[0], intent[1], error)
        self.end(handles)

    def intents(self) -> int:
        """How many replications are in flight."""
        return len(self._intents)

    def due(self, limit: int = 100) -> list[RepairEntry]:
        """Entries whose next attempt is due, oldest first."""
        rows = self._read.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM repair WHERE next_ms <= ? ORDER BY seq LIMIT ?",  # noqa: S608
            (self._clock.now_ms(), limit),
        ).fetchall()
        return [_entry(r) for r in rows]

    def all(self, limit: int = 1000) -> list[RepairEntry]:
        rows = self._read.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM repair ORDER BY seq LIMIT ?",  # noqa: S608
            (limit,),
        ).fetchall()
        return [_entry(r) for r in rows]

    async def done(self, entry: RepairEntry) -> bool:
        """Remove a repaired entry, unless a newer failure re-enqueued it meanwhile."""
        cur = await self._write("DELETE FROM repair WHERE seq = ? AND gen = ?", (entry.seq, entry.gen))
        return cur.rowcount == 1

    async def failed(self, entry: RepairEntry, error: str, retry_at_ms: int, *, strike: bool = False) -> None:
        """Count a failed attempt and set the next one; `strike`: the entity's own failure."""
        await self._write(
            "UPDATE repair SET attempts = attempts + 1, strikes = strikes + ?, next_ms = ?, last_error = ? "
            "WHERE seq = ?",
            (int(strike), retry_at_ms, error, entry.seq),
        )

    async def bury(self, entry: RepairEntry, reason: str) -> bool:
        """Move an entry that failed its last retry to the dead-letter list (one transaction).

        False (and the entry stays queued) when a newer failure of the entity re-enqueued it
        meanwhile: that one gets its own retries.
        """
        now = self._clock.now_ms()
        k = entry.key

        def move() -> bool:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("DELETE FROM repair WHERE seq = ? AND gen = ?", (entry.seq, entry.gen))
                if cur.rowcount == 1:
                    self._db.execute(
                        _BURY,
                        (
                            k.domain,
                            k.scope,
                            k.id,
                            entry.target,
                            entry.enqueued_ms,
                            now,
                            entry.attempts + 1,
                            reason,
                        ),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cur.rowcount == 1

        fut = asyncio.get_running_loop().run_in_executor(self._writer, move)
        return await wait_through_cancellation(fut)

    def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """The dead-letter list, oldest first."""
        rows = self._read.execute(
            f"SELECT {_DEAD_COLUMNS} FROM dead_letter ORDER BY seq LIMIT ?",  # noqa: S608
            (limit,),
        ).fetchall()
        return [_dead(r) for r in rows]

    async def retry_dead(self, seqs: Sequence[int] | None) -> int:
        """Put dead letters (`seqs`, or all) back in the queue, due now with a fresh count of
        attempts; returns how many moved."""
        now = self._clock.now_ms()
        where, params = _seq_filter(seqs)

        def move() -> int:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT domain, scope, id, target FROM dead_letter {where}",  # noqa: S608
                    params,
                ).fetchall()
                for domain, scope, ident, target in rows:
                    self._db.execute(
                        _ENQUEUE, (domain, scope, ident, target, now, now, "retried by an operator")
                    )
                    self._db.execute(
                        "UPDATE repair SET attempts = 0, strikes = 0 "
                        "WHERE domain = ? AND scope = ? AND id = ? AND target = ?",
                        (domain, scope, ident, target),
                    )
                self._db.execute(f"DELETE FROM dead_letter {where}", params)  # noqa: S608
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return len(rows)

        moved = await wait_through_cancellation(
            asyncio.get_running_loop().run_in_executor(self._writer, move)
        )
        if moved:
            self.wakeup.set()
        return moved

    async def drop_dead(self, seqs: Sequence[int] | None) -> int:
        """Forget dead letters (`seqs`, or all): the operator accepts that the target's copy of
        those entities stays as it is. Returns how many were dropped."""
        where, params = _seq_filter(seqs)
        cur = await self._write(f"DELETE FROM dead_letter {where}", params)  # noqa: S608
        return int(cur.rowcount)

    async def postpone(self, entry: RepairEntry, retry_at_ms: int) -> None:
        """Move an entry's next attempt without counting one (its target is down)."""
        await self._write(
            "UPDATE repair SET next_ms = MAX(next_ms, ?) WHERE seq = ?", (retry_at_ms, entry.seq)
        )

    def next_due_ms(self, target: str | None = None) -> int | None:
        """When the next entry (for `target`, or any) is due; None when there is none."""
        if target is None:
            row = self._read.execute("SELECT MIN(next_ms) FROM repair").fetchone()
        else:  # repair_target_due makes this one index lookup, not a scan of the queue
            row = self._read.execute("SELECT MIN(next_ms) FROM repair WHERE target = ?", (target,)).fetchone()
        return None if row[0] is None else int(row[0])

    def stats(self) -> QueueStats:
        row = self._read.execute("SELECT COUNT(*), MIN(enqueued_ms), MAX(attempts) FROM repair").fetchone()
        dead = self._read.execute("SELECT COUNT(*) FROM dead_letter").fetchone()
        return QueueStats(
            int(row[0]), None if row[1] is None else int(row[1]), int(row[2] or 0), int(dead[0])
        )

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._read.close()
        self._intents.close()
        self._db.close()


def _entry(r: tuple[object, ...]) -> RepairEntry:
    return RepairEntry(
        seq=int(str(r[0])),
        key=EntityKey(str(r[1]), str(r[2]), str(r[3])),
        target=str(r[4]),
        enqueued_ms=int(str(r[5])),
        gen=int(str(r[6])),
        attempts=int(str(r[7])),
        next_ms=int(str(r[8])),
        last_error=None if r[9] is None else str(r[9]),
        strikes=int(str(r[10])),
    )


def _dead(r: tuple[object, ...]) -> DeadLetter:
    return DeadLetter(
        seq=int(str(r[0])),
        key=EntityKey(str(r[1]), str(r[2]), str(r[3])),
        target=str(r[4]),
        enqueued_ms=int(str(r[5])),
        dead_ms=int(str(r[6])),
        attempts=int(str(r[7])),
        reason=str(r[8]),
    )


def _seq_filter(seqs: Sequence[int] | None) -> tuple[str, tuple[int, ...]]:
    """A WHERE clause selecting dead letters by `seq` (every one when `seqs` is None)."""
    if seqs is None:
        return "", ()
    if not seqs:
        return "WHERE 0", ()
    return f"WHERE seq IN ({', '.join('?' * len(seqs))})", tuple(seqs)


UNAVAILABLE = 503


def is_unavailable(error: BaseException) -> bool:
    """Does `error` say a store cannot be reached (503, I/O), rather than that one entity failed?"""
    return isinstance(error, OSError) or (isinstance(error, GatewayError) and error.status == UNAVAILABLE)


MAX_STRIKES = 10
"""The failures of an entity itself (not of an unreachable store) before its entry is dead-lettered."""

BACKOFF = Backoff(base_s=0.5, cap_s=60.0, jitter=(0.5, 1.0))
"""The repair worker's schedule after a failed attempt on an entry."""

Copier = Callable[[EntityKey, str], Awaitable[None]]
"""Copies the source store's current value of a key to the target store (or deletes it there)."""


class RepairWorker:
    """Drains the queue in the background: re-read the source, upsert into the target.

    A failure backs the entry off (`BACKOFF`: from 0.5 s, doubling, capped at 60 s, with
    jitter; the next attempt's time is stored in the entry); a target that is down stops the
    batch, so a dead Redis is probed once per backoff, not once per entry.
    """

    def __init__(
        self,
        queue: RepairQueue,
        copy: Copier,
        clock: Clock,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        max_strikes: int = MAX_STRIKES,
    ) -> None:
        self.queue = queue
        self.max_strikes = max_strikes
        self._copy = copy
        self._clock = clock
        self._backoff = backoff or BACKOFF
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.repaired = 0
        self.failures = 0
        self.dead_lettered = 0

    def _backoff_ms(self, attempts: int) -> int:
        return int(self._backoff.delay_s(attempts, self._rng) * 1000)

    async def run_once(self, limit: int = 100) -> int:
        """Try every due entry once (in order); returns how many were repaired.

        A store that is unavailable stops the batch for its entries only (they wait for the
        failed entry's retry); an entity-level failure (a legacy value that cannot be
        overwritten) backs off that entry alone, so one bad entity never blocks the queue.
        """
        repaired = 0
        down: dict[str, int] = {}  # target -> when to try it again
        for entry in self.queue.due(limit):
            if entry.target in down:
                await self.queue.postpone(entry, down[entry.target])
                continue
            try:
                await self._copy(entry.key, entry.target)
            except Exception as e:  # any failure is retried later: the worker must not die
                if not isinstance(e, GatewayError | OSError):
                    log.exception("repair.unexpected_error", key=str(entry.key), target=entry.target)
                await self._failed(entry, e, down)
                continue
            if await self.queue.done(entry):
                repaired += 1
                self.repaired += 1
                log.info("repair.done", key=str(entry.key), target=entry.target, attempts=entry.attempts)
        return repaired

    async def _failed(self, entry: RepairEntry, e: Exception, down: dict[str, int]) -> None:
        """Back the entry off, or dead-letter it after its last retry; mark a down target."""
        self.failures += 1
        unavailable = is_unavailable(e)
        error = str(e) or type(e).__name__
        last = not unavailable and entry.strikes + 1 >= self.max_strikes
        if last and await self.queue.bury(entry, error):
            self.dead_lettered += 1
            log.warning(
                "repair.dead_lettered",
                key=str(entry.key),
                target=entry.target,
                attempts=entry.attempts + 1,
                error=error,
            )
            return
        retry_at = self._clock.now_ms() + self._backoff_ms(entry.attempts)
        await self.queue.failed(entry, error, retry_at, strike=not unavailable)
        log.warning(
            "repair.failed", key=str(entry.key), target=entry.target, attempts=entry.attempts + 1, error=error
        )
        if unavailable:
            down[entry.target] = retry_at

    async def run(self) -> None:
        """Run until cancelled."""
        while True:
            self.queue.wakeup.clear()
            await self.run_once()
            next_ms = self.queue.next_due_ms()
            if next_ms is not None and next_ms <= self._clock.now_ms():
                continue
            sleeper = asyncio.ensure_future(
                self._clock.sleep(60.0 if next_ms is None else (next_ms - self._clock.now_ms()) / 1000)
            )
            waker = asyncio.ensure_future(self.queue.wakeup.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()
