"""The phase gate: a phase switch waits for in-flight requests and holds new ones briefly.

Requests enter the gate for the length of one store operation and read the phase once, on
entry, so each operation runs wholly under one phase. A switch closes the gate to new
operations, waits (bounded) until the operations in flight have left, changes the phase, and
opens the gate again: no request is dropped, none sees half of one phase and half of another,
and the pause lasts as long as the slowest operation in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class SwitchTimeoutError(Exception):
    """Operations were still in flight when the switch's wait ran out; nothing was changed."""


class PhaseGate:
    """Many operations at a time, or one phase switch."""

    def __init__(self) -> None:
        self.active = 0
        self._closed: asyncio.Future[None] | None = None
        self._drained: asyncio.Event | None = None

    async def enter(self) -> None:
        """Start an operation; waits only while a switch is in progress."""
        while self._closed is not None:
            await asyncio.shield(self._closed)
        self.active += 1

    def leave(self) -> None:
        """End an operation started with `enter`."""
        self.active -= 1
        if self.active == 0 and self._drained is not None:
            self._drained.set()

    async def switch(self, change: Callable[[], T], timeout_s: float = 10.0) -> T:
        """Run `change()` while no operation is in flight."""
        while self._closed is not None:  # one switch at a time
            await asyncio.shield(self._closed)
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = closed
        self._drained = asyncio.Event()
        try:
            if self.active:
                try:
                    await asyncio.wait_for(self._drained.wait(), timeout_s)
                except TimeoutError as e:
                    raise SwitchTimeoutError(
                        f"{self.active} operations still in flight after {timeout_s} s; phase not changed"
                    ) from e
            return change()
        finally:
            self._closed = None
            self._drained = None
            closed.set_result(None)
