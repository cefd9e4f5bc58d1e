"""`TurnGate`: the lock of an actor's turns and of a shard's turn lock.

It is asyncio.Lock's FIFO lock (the same acquire, release and cancellation rules, as in Python
3.11) plus `try_acquire`, which takes a free gate without a coroutine. A turn of an actor whose
gate and shard are free (most turns: issue 13's mix runs about 2,200 actors, rarely two turns of
one at once) then starts without suspending or creating the coroutines of `acquire`.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType

__all__ = ["TurnGate"]


class TurnGate:
    """A FIFO lock: `async with gate`, `await gate.acquire()`, `gate.release()`, and
    `gate.try_acquire()` for a gate that is free with nobody queued."""

    __slots__ = ("_locked", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self._locked

    def try_acquire(self) -> bool:
        """Take the gate if it is free and no one waits for it (no await); else False."""
        if self._locked or self._waiters:
            return False
        self._locked = True
        return True

    async def acquire(self) -> bool:
        """Wait for the gate (first come, first served), as `asyncio.Lock.acquire`."""
        if not self._locked and all(w.cancelled() for w in self._waiters):
            self._locked = True
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            try:
                await fut
            finally:
                self._waiters.remove(fut)
        except asyncio.CancelledError:
            if not self._locked:  # woken, then cancelled: pass the turn on
                self._wake_up_first()
            raise
        self._locked = True
        return True

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("TurnGate is not acquired")
        self._locked = False
        self._wake_up_first()

    def _wake_up_first(self) -> None:
        if self._waiters:
            fut = self._waiters[0]
            if not fut.done():
                fut.set_result(None)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
