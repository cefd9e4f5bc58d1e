"""The durable repair queue: entities whose copy in the non-authoritative store is behind.

When a write to the non-authoritative store fails in `write-through` or `read-switch`, the
request still succeeds and the entity's key goes here. The queue lives in
`<data_dir>/repair.sqlite` (WAL), so it survives a crash of the gateway. It holds one row per
(entity, target store): a repair never replays the failed write, it re-reads the source
store's *current* value and upserts it (or deletes, when the entity is gone), so several
failed writes of one entity collapse into one repair and per-entity order is the source's
order by construction. A `gen` counter bumped on every enqueue makes sure a repair that read
an older value does not remove the entry of a newer failure that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.phases.entities import EntityKey

log = structlog.get_logger(__name__)

TARGETS = ("legacy", "actors")

SCHEMA = """
CREATE TABLE IF NOT EXISTS repair (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL, scope TEXT NOT NULL, id TEXT NOT NULL, target TEXT NOT NULL,
    enqueued_ms INTEGER NOT NULL, gen INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL, last_error TEXT,
    UNIQUE (domain, scope, id, target)
);
CREATE INDEX IF NOT EXISTS repair_due ON repair (next_ms, seq);
"""


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


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int
    oldest_ms: int | None
    max_attempts: int


class RepairQueue:
    """The queue's storage (synchronous sqlite3: every call is one short statement)."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._db = sqlite3.connect(data_dir / "repair.sqlite", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: an entry stands for a write the client was told succeeded; it must survive power loss
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self.wakeup = asyncio.Event()

    def enqueue(self, key: EntityKey, target: str, error: str) -> None:
        """Record that `target`'s copy of `key` must be repaired (idempotent; bumps `gen`)."""
        if target not in TARGETS:
            raise ValueError(f"unknown repair target {target!r}")
        now = self._clock.now_ms()
        self._db.execute(
            "INSERT INTO repair (domain, scope, id, target, enqueued_ms, next_ms, last_error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (domain, scope, id, target) DO UPDATE SET "
            "gen = gen + 1, next_ms = MIN(next_ms, excluded.next_ms), last_error = excluded.last_error",
            (key.domain, key.scope, key.id, target, now, now, error),
        )
        self.wakeup.set()

    def due(self, limit: int = 100) -> list[RepairEntry]:
        """Entries whose next attempt is due, oldest first."""
        rows = self._db.execute(
            "SELECT seq, domain, scope, id, target, enqueued_ms, gen, attempts, next_ms, last_error "
            "FROM repair WHERE next_ms <= ? ORDER BY seq LIMIT ?",
            (self._clock.now_ms(), limit),
        ).fetchall()
        return [_entry(r) for r in rows]

    def all(self, limit: int = 1000) -> list[RepairEntry]:
        rows = self._db.execute(
            "SELECT seq, domain, scope, id, target, enqueued_ms, gen, attempts, next_ms, last_error "
            "FROM repair ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [_entry(r) for r in rows]

    def done(self, entry: RepairEntry) -> bool:
        """Remove a repaired entry, unless a newer failure re-enqueued it meanwhile."""
        cur = self._db.execute("DELETE FROM repair WHERE seq = ? AND gen = ?", (entry.seq, entry.gen))
        return cur.rowcount == 1

    def failed(self, entry: RepairEntry, error: str, retry_at_ms: int) -> None:
        self._db.execute(
            "UPDATE repair SET attempts = attempts + 1, next_ms = ?, last_error = ? WHERE seq = ?",
            (retry_at_ms, error, entry.seq),
        )

    def next_due_ms(self) -> int | None:
        row = self._db.execute("SELECT MIN(next_ms) FROM repair").fetchone()
        return None if row[0] is None else int(row[0])

    def stats(self) -> QueueStats:
        row = self._db.execute("SELECT COUNT(*), MIN(enqueued_ms), MAX(attempts) FROM repair").fetchone()
        return QueueStats(int(row[0]), None if row[1] is None else int(row[1]), int(row[2] or 0))

    def close(self) -> None:
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
    )


Copier = Callable[[EntityKey, str], Awaitable[None]]
"""Copies the source store's current value of a key to the target store (or deletes it there)."""


class RepairWorker:
    """Drains the queue in the background: re-read the source, upsert into the target.

    A failure backs the entry off exponentially (base 0.5 s, capped at 60 s, with jitter); a
    target that is down stops the batch, so a dead Redis is probed once per backoff, not once
    per entry.
    """

    def __init__(
        self,
        queue: RepairQueue,
        copy: Copier,
        clock: Clock,
        *,
        base_s: float = 0.5,
        cap_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.queue = queue
        self._copy = copy
        self._clock = clock
        self._base_s = base_s
        self._cap_s = cap_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.repaired = 0
        self.failures = 0

    def _backoff_ms(self, attempts: int) -> int:
        delay = min(self._cap_s, self._base_s * 2 ** min(attempts, 20))
        return int(delay * self._rng.uniform(0.5, 1.0) * 1000)

    async def run_once(self, limit: int = 100) -> int:
        """Try every due entry once (in order); returns how many were repaired."""
        repaired = 0
        for entry in self.queue.due(limit):
            try:
                await self._copy(entry.key, entry.target)
            except (GatewayError, OSError) as e:
                self.failures += 1
                retry_at = self._clock.now_ms() + self._backoff_ms(entry.attempts)
                self.queue.failed(entry, str(e), retry_at)
                log.warning(
                    "repair.failed",
                    key=str(entry.key),
                    target=entry.target,
                    attempts=entry.attempts + 1,
                    error=str(e),
                )
                # the target is probably down: postpone what is left of the batch too
                for rest in self.queue.due(limit):
                    self.queue.failed(rest, "postponed: target unavailable", retry_at)
                break
            if self.queue.done(entry):
                repaired += 1
                self.repaired += 1
                log.info("repair.done", key=str(entry.key), target=entry.target, attempts=entry.attempts)
        return repaired

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
