"""Named asyncio locks that exist only while someone holds or waits for them.

The phase router serialises the writes of one entity with them, and the legacy records the
writes of one hash field (a DM conversation, a user's conversation list); both name more
entities than can be kept a lock each for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

__all__ = ["KeyedLocks"]


class _Held:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyedLocks:
    """Named asyncio locks that exist only while someone holds or waits for them."""

    def __init__(self) -> None:
        self._locks: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, names: Iterable[str]) -> AsyncIterator[None]:
        """Hold every named lock (taken in sorted order, so two holders never deadlock)."""
        entries: list[tuple[str, _Held]] = []
        for name in sorted(set(names)):
            entry = self._locks.get(name)
            if entry is None:
                entry = self._locks[name] = _Held()
            entry.users += 1
            entries.append((name, entry))
        held: list[_Held] = []
        try:
            for _, entry in entries:
                await entry.lock.acquire()
                held.append(entry)
            yield
        finally:
            for entry in reversed(held):
                entry.lock.release()
            for name, entry in entries:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[name]
