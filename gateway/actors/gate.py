"""`TurnGate`: the lock of an actor's turns and of a shard's turn lock.

It is asyncio.Lock's FIFO lock (the same acquire, release and cancellation rules, as in Python
3.11) plus `try_acquire`, which takes a free gate without a coroutine. A turn of an actor whose
gate and shard are free (most turns: issue 13's mix runs about 2,200 actors, rarely two turns of
one at once) then starts without suspending or creating the coroutines of `acquire`.

`try_acquire` may take the gate in the moment between a release and the run of the waiter it
woke (a waiter runs in a later step of the event loop): a queue must drain, not grow. Under
FIFO, a queue that formed once (behind a turn or a checkpoint that held the gate over a few
milliseconds) drained one waiter per step of the loop, while every new event joined its end,
since it could not take the gate past the woken waiter; under load it arrived faster than that
(the coordinator about once per 0.3 ms) and the queue never emptied: the p99 rose from 17 ms to
35-150 ms (`docs/benchmarks.md`, twenty-first pass). A turn started by `try_acquire` most often
ends within the same step, before the woken waiter runs, which then takes the gate as if no one
had passed. If the gate is still held when it runs (the other turn awaited), the waiter waits
again at the head of the queue, and no `try_acquire` passes it a second time: each waiter is
passed over by at most one turn. `acquire` itself stays first come, first served.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType

__all__ = ["TurnGate"]


class TurnGate:
    """A FIFO lock: `async with gate`, `await gate.acquire()`, `gate.release()`, and
    `gate.try_acquire()` for a free gate (which may pass a woken waiter once)."""

    __slots__ = ("_locked", "_passed_over", "_waiters")

    def __init__(self) -> None:
        self._locked = False
        self._passed_over = False  # the head waiter found the gate taken once: no passing again
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def locked(self) -> bool:
        return self._locked

    def try_acquire(self) -> bool:
        """Take the gate if it is free (no await); else False. A free gate with waiters is one
        whose first waiter was woken and has not run yet: it may be taken past that waiter,
        unless that waiter was passed over once already."""
        if self._locked:
            return False
        if self._waiters:
            if self._passed_over:
                return False
        else:
            self._passed_over = False
        self._locked = True
        return True

    async def acquire(self) -> bool:
        """Wait for the gate (first come, first served), as `asyncio.Lock.acquire`."""
        if not self._locked and all(w.cancelled() for w in self._waiters):
            self._locked = True
            self._passed_over = False
            return True
        loop = asyncio.get_running_loop()
        again = False
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            if again:
                self._waiters.appendleft(fut)  # passed over once: first in line again
            else:
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
            if not self._locked:
                self._locked = True
                self._passed_over = False
                return True
            # a `try_acquire` took the gate after we were woken and still holds it (its turn
            # awaited): wait for its release at the head of the queue, and let no one else pass
            self._passed_over = True
            again = True

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
