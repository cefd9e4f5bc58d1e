"""One migration run: batches from a source, quarantine, batches to a sink, counts, checkpoints.

The source is any async iterator of `(items, position)`: a store's scan (the position is the
cursor after the batch) or an export file (the number of lines consumed). Unreadable values go
to the quarantine file (key, raw value, reason) and the run goes on; the source is never
written. After the sink took a batch, the checkpoint is saved, then the rate limit waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from gateway.actors.crash import crash_point
from gateway.bulk.items import Item, WriteResult, cursor_of, json_of_any_text
from gateway.bulk.pause import pause_point
from gateway.domain.entities import Entity, EntityKey, Unreadable
from migrate.checkpoint import Checkpoint

__all__ = ["RateLimit", "Summary", "run_batches"]

Batches = AsyncIterator[tuple[list[Item], str | int | None]]
Write = Callable[[list[tuple[EntityKey, Entity]]], Awaitable[WriteResult]]

_COLUMNS = ("read", "written", "unchanged", "skipped", "quarantined")


@dataclass(slots=True)
class Summary:
    """Per domain: read / written / unchanged / skipped / quarantined; and what to tell."""

    domains: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped_keys: list[str] = field(default_factory=list)

    def bump(self, domain: str, column: str, n: int = 1) -> None:
        row = self.domains.setdefault(domain, dict.fromkeys(_COLUMNS, 0))
        row[column] += n

    def add(self, result: WriteResult) -> None:
        for column, counts in (
            ("written", result.written),
            ("unchanged", result.unchanged),
            ("skipped", result.skipped),
        ):
            for d, n in counts.items():
                self.bump(d, column, n)
        self.skipped_keys.extend(cursor_of(k) for k in result.skipped_keys[:1000])

    def total(self, column: str) -> int:
        return sum(row[column] for row in self.domains.values())

    def to_json(self) -> dict[str, Any]:
        return {"domains": self.domains, "skippedKeys": self.skipped_keys[:1000]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        domains = {
            str(d): {c: int(row.get(c, 0)) for c in _COLUMNS} for d, row in data.get("domains", {}).items()
        }
        return cls(domains, [str(k) for k in data.get("skippedKeys", [])])


class RateLimit:
    """At most `per_s` entities per second on average (None: unlimited)."""

    def __init__(self, per_s: float | None) -> None:
        self.per_s = per_s
        self._start = time.monotonic()
        self._done = 0

    async def take(self, n: int) -> None:
        if not self.per_s:
            return
        self._done += n
        ahead = self._done / self.per_s - (time.monotonic() - self._start)
        if ahead > 0:
            await asyncio.sleep(ahead)


READ_AHEAD: Final = 2
"""Batches read ahead of the one being written: the source's reads (Redis round trips, the
other process's work) overlap the target's writes, with at most this many more batches held."""


async def read_ahead(
    batches: Batches, depth: int = READ_AHEAD
) -> AsyncGenerator[tuple[list[Item], str | int | None], None]:
    """`batches`, read by a task of its own up to `depth` batches ahead of the consumer. An
    error of the source reaches the consumer at the batch where it happened; when the consumer
    stops early the reading stops too."""
    queue: asyncio.Queue[tuple[list[Item], str | int | None] | BaseException | None] = asyncio.Queue(depth)

    async def produce() -> None:
        try:
            async for got in batches:
                await queue.put(got)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, raised there in order
            await queue.put(e)
            return
        await queue.put(None)

    task = asyncio.ensure_future(produce())
    try:
        while True:
            got = await queue.get()
            if got is None:
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_batches(
    batches: Batches,
    write: Write,
    *,
    summary: Summary,
    quarantine: IO[bytes],
    rate: RateLimit,
    checkpoint: Checkpoint | None,
    state_dir: Path,
    progress: Callable[[int], None],
    after_write: Callable[[Checkpoint], None] | None = None,
) -> None:
    """Copy every batch; save the checkpoint after each (unless `checkpoint` is None: dry run).

    Crash points for the subprocess tests of `--resume` (`gateway.actors.crash`, named with the
    batch's number from 1 in this process): `migrate.batch.N.read` before the batch is written,
    `.written` after it was written and before the checkpoint, `.saved` after the checkpoint."""
    n = 0
    async with contextlib.aclosing(read_ahead(batches)) as ahead:
        async for items, position in ahead:
            n += 1
            crash_point(f"migrate.batch.{n}.read")
            good: list[tuple[EntityKey, Entity]] = []
            for key, value in items:
                summary.bump(key.domain, "read")
                if isinstance(value, Unreadable):
                    summary.bump(key.domain, "quarantined")
                    record = {
                        "key": [key.domain, key.scope, key.id],
                        "raw": value.raw,
                        "reason": value.reason,
                    }
                    quarantine.write(json_of_any_text(record) + b"\n")
                else:
                    good.append((key, value))
            quarantine.flush()
            if good:
                await pause_point("migrate.before_write", [k for k, _ in good])
                summary.add(await write(good))
            crash_point(f"migrate.batch.{n}.written")
            if checkpoint is not None:
                checkpoint.position = position
                if after_write is not None:
                    after_write(checkpoint)
                checkpoint.summary = summary.to_json()
                checkpoint.save(state_dir)
            crash_point(f"migrate.batch.{n}.saved")
            progress(len(items))
            await rate.take(len(items))
