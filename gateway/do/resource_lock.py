"""The lock actor (upstream `ResourceLock`, one per resource path): an exclusive lock with a TTL.

Tables are upstream's (do-api.md 5.1), kept in the shard files through `ctx.tables`, plus our
column `current_lock.expires_ms` (the expiry as epoch ms, so expiry checks need no date parsing;
NULL in a copied upstream row, then parsed from `expires_at`). The alarm is set to the expiry
on every acquisition and re-checks the expiry when it fires, so an early or repeated firing
changes nothing (actor-runtime S10).

Fixes, same shapes (docs/compatibility.md): a re-lock by the holder keeps `lockedAt`, keeps the
reason unless a new one is given, never shortens the lock (the expiry becomes the later of the
old one and now + ttl) and keeps one open history row; history ids are unique; an unlock of an
expired lock by someone else releases it as expired instead of answering 403; and `lock-update`
frames go to the coordinator's sockets on lock, unlock and expiry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gateway.actors import Actor, ActorContext, AlarmInfo, HostedSocket, TableSpec
from gateway.do._sql import EXTRA_TABLE
from gateway.domain import commands as c
from gateway.domain import frames, rules
from gateway.domain.jscompat import iso_from_ms, parse_js_date
from gateway.domain.model import (
    Lock,
    LockAcquireOutcome,
    LockCheck,
    LockHistory,
    LockHistoryEntry,
    LockReleaseOutcome,
)

__all__ = ["LOCK_COLS", "TABLES", "ResourceLockActor", "lock_from_row", "lock_row", "lock_values"]

TABLES = (
    TableSpec(
        "current_lock",
        "id INTEGER NOT NULL DEFAULT 1 CHECK (id = 1), resource_path TEXT NOT NULL, "
        "resource_type TEXT DEFAULT 'file-lock', locked_by TEXT NOT NULL, reason TEXT, "
        "locked_at TEXT NOT NULL, expires_at TEXT NOT NULL, expires_ms INTEGER",
        key=("id",),
    ),
    TableSpec(
        "lock_history",
        "id TEXT NOT NULL, locked_by TEXT NOT NULL, reason TEXT, locked_at TEXT NOT NULL, released_at TEXT, "
        "release_reason TEXT",
        key=("id",),
    ),
    EXTRA_TABLE,
)
"""The lock kind's tables in the shards (upstream's, plus the `_extra` side table)."""

LOCK_COLS = "resource_path, resource_type, locked_by, reason, locked_at, expires_at, expires_ms"


def lock_from_row(r: sqlite3.Row) -> Lock:
    """The `current_lock` row (LOCK_COLS) as a Lock; an unreadable expiry reads as expired."""
    expires_ms = r[6]
    if expires_ms is None:
        expires_ms = parse_js_date(r[5])
        if expires_ms is None:  # an unreadable expiry: treat the lock as expired
            expires_ms = 0
    return Lock(r[0], r[1] or rules.DEFAULT_RESOURCE_TYPE, r[2], r[3], r[4], r[5], int(expires_ms))


def lock_row(lock: Lock) -> tuple[Any, ...]:
    """The `current_lock` row of `lock` as `SELECT LOCK_COLS` reads it."""
    return (
        lock.resource_path,
        lock.resource_type,
        lock.locked_by,
        lock.reason,
        lock.locked_at,
        lock.expires_at,
        lock.expires_ms,
    )


def lock_values(lock: Lock) -> dict[str, Any]:
    """The `current_lock` row of `lock` (one per resource)."""
    return {
        "id": 1,
        "resource_path": lock.resource_path,
        "resource_type": lock.resource_type,
        "locked_by": lock.locked_by,
        "reason": lock.reason,
        "locked_at": lock.locked_at,
        "expires_at": lock.expires_at,
        "expires_ms": lock.expires_ms,
    }


Watchers = Callable[[], list[HostedSocket]]
ExpiryObserver = Callable[[str], None]
"""Told the resource path when the alarm expires a lock (the phase router replicates it)."""


def _no_watchers() -> list[HostedSocket]:
    return []


class ResourceLockActor(Actor):
    """One resource's lock."""

    def __init__(
        self,
        ctx: ActorContext,
        watchers: Watchers | None = None,
        on_alarm_expiry: ExpiryObserver | None = None,
    ) -> None:
        super().__init__(ctx)
        self.resource_path = ctx.ref.name
        self._watchers = watchers or _no_watchers
        self._on_alarm_expiry = on_alarm_expiry

    # -- helpers ----------------------------------------------------------------------------------

    def current(self) -> Lock | None:
        """The lock row, or None (an unreadable expiry reads as expired)."""
        r: sqlite3.Row | None = self.ctx.tables.first("current_lock", LOCK_COLS, keep=True)
        return None if r is None else lock_from_row(r)

    def end_holding(self, lock: Lock, reason: str, now_ms: int) -> None:
        """Close every open history row of the holder and delete the lock (upstream 5.5)."""
        self.ctx.tables.update(
            "lock_history",
            {"released_at": iso_from_ms(now_ms), "release_reason": reason},
            "released_at IS NULL AND locked_by = ?",
            lock.locked_by,
        )
        self.ctx.tables.delete("current_lock")
        self.ctx.tables.keep_written("current_lock", LOCK_COLS, None)  # the next read: no lock

    def _notify(self, render: Callable[[], str]) -> None:
        """Queue a `lock-update` frame to the coordinator's sockets (sent after this turn commits);
        rendered only when a socket is open to receive it (most lock turns have none)."""
        sockets = self._watchers()
        if not sockets:
            return
        text = render()
        for hs in sockets:
            self.ctx.send(hs, text)

    def _expire(self, lock: Lock, now_ms: int) -> None:
        self.end_holding(lock, "expired", now_ms)
        self._notify(lambda: frames.lock_released(lock, "expired", iso_from_ms(now_ms)))

    # -- operations -------------------------------------------------------------------------------

    async def check(self, now_ms: int) -> LockCheck:
        """/check: a lock past its expiry is released here (as upstream; the alarm usually did)."""
        check = rules.check_lock(self.current(), self.resource_path, now_ms)
        if check.expired_now is not None:
            self._expire(check.expired_now, now_ms)
            self.ctx.delete_alarm()
        return check

    async def acquire(self, cmd: c.AcquireLock) -> LockAcquireOutcome:
        """/lock: 409 outcome while someone else holds it; otherwise lock, re-lock or take over."""
        now = cmd.now_ms
        self.ctx.tables.ensure_transaction()  # it writes unless refused: read in its transaction
        current = self.current()
        outcome = rules.acquire_lock(current, cmd)
        if not outcome.acquired:
            return outcome
        if outcome.expired_previous is not None:
            self._expire(outcome.expired_previous, now)
        lock = outcome.lock
        if outcome.relock:  # one open history row, which takes the new reason
            self.ctx.tables.update(
                "current_lock",
                {
                    "resource_type": lock.resource_type,
                    "reason": lock.reason,
                    "expires_at": lock.expires_at,
                    "expires_ms": lock.expires_ms,
                },
            )
            touched = self.ctx.tables.update(
                "lock_history",
                {"reason": lock.reason},
                "released_at IS NULL AND locked_by = ?",
                lock.locked_by,
            )
            if not touched:
                self._insert_history(cmd.history_id, lock)
            if current is not None:  # always (a re-lock is of the current lock)
                # the row as updated: its other columns stay as they were read
                row = replace(lock, resource_path=current.resource_path, locked_by=current.locked_by)
                self.ctx.tables.keep_written("current_lock", LOCK_COLS, lock_row(row))
        else:
            self.ctx.tables.insert("current_lock", lock_values(lock), conflict="replace")
            self.ctx.tables.keep_written("current_lock", LOCK_COLS, lock_row(lock))
            self._insert_history(cmd.history_id, lock)
        self.ctx.set_alarm(lock.expires_ms)
        self._notify(lambda: frames.lock_acquired(lock, iso_from_ms(now)))
        return outcome

    def _insert_history(self, history_id: str, lock: Lock) -> None:
        self.ctx.tables.insert(
            "lock_history",
            {
                "id": history_id,
                "locked_by": lock.locked_by,
                "reason": lock.reason,
                "locked_at": lock.locked_at,
            },
        )

    async def release(self, cmd: c.ReleaseLock) -> LockReleaseOutcome:
        """/unlock: owner or `force` releases; an expired lock of someone else is simply gone."""
        outcome = rules.release_lock(self.current(), cmd)
        if outcome.lock is None or outcome.release_reason is None:  # none, or not the owner
            return outcome
        self.end_holding(outcome.lock, outcome.release_reason, cmd.now_ms)
        self.ctx.delete_alarm()
        lock, reason = outcome.lock, outcome.release_reason
        self._notify(lambda: frames.lock_released(lock, reason, iso_from_ms(cmd.now_ms)))
        return outcome

    async def history(self, limit: int) -> LockHistory:
        """/history: the current lock (even if expired and not yet cleaned) and the newest rows."""
        rows = self.ctx.tables.select(
            "lock_history",
            "id, locked_by, reason, locked_at, released_at, release_reason",
            order="locked_at DESC, rowid DESC",
            limit=limit,
        )
        entries = [LockHistoryEntry(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
        return LockHistory(self.resource_path, self.current(), entries)

    async def alarm(self, info: AlarmInfo) -> None:
        """Expire the lock if it is due; an early firing re-arms the alarm at the real expiry."""
        lock = self.current()
        if lock is None:
            return
        now = self.ctx.clock.now_ms()
        if not rules.lock_expired(lock, now):
            self.ctx.set_alarm(lock.expires_ms)
            return
        self._expire(lock, now)
        if self._on_alarm_expiry is not None:
            self._on_alarm_expiry(self.resource_path)
