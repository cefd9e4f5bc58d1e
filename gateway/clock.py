"""Time behind an interface, so tests move time instead of sleeping.

`SystemClock` is wall-clock time for timestamps and the event loop for waiting. `FakeClock` is
a manual clock: `advance()` moves it and wakes every sleeper whose deadline has passed, in
deadline order, so alarm and expiry tests run instantly and deterministically.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What the host and the stores need from time."""

    def now_ms(self) -> int:
        """Wall-clock time in epoch milliseconds (the DO API's `Date.now()`)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for `seconds` of this clock's time."""
        ...


class SystemClock:
    """Real time."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when a test calls `advance` or `set`."""

    def __init__(self, start_ms: int = 1_764_791_905_000) -> None:
        self._now_ms = start_ms
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now_ms(self) -> int:
        return self._now_ms

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now_ms + seconds * 1000.0, next(self._seq), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, ms: float) -> None:
        """Move time forward by `ms` and let every woken task run until the loop is idle."""
        await self.set(self._now_ms + int(ms))

    async def set(self, now_ms: int) -> None:
        """Move time to `now_ms` (never backwards) and settle the loop."""
        self._now_ms = max(self._now_ms, now_ms)
        while self._sleepers and self._sleepers[0][0] <= self._now_ms:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        await settle()


async def settle(rounds: int = 50) -> None:
    """Give every ready task a chance to run (bounded): a deterministic replacement for sleeps."""
    for _ in range(rounds):
        await asyncio.sleep(0)
