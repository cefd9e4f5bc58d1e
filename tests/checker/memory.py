"""An in-memory store for the checker's unit tests: entities by key, scanned in key order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass

from consistency.check import key_of_cursor
from consistency.compare import Item, Value, sort_key
from gateway.domain.entities import EntityKey


@dataclass(slots=True)
class Broken:
    """An unreadable stored value (the bulk layer's `Unreadable`)."""

    key: EntityKey
    raw: str
    reason: str


class MemorySource:
    """A dict of entities with the `Source` interface; `fail_after` makes a scan break."""

    def __init__(self, name: str, values: dict[EntityKey, Value] | None = None) -> None:
        self.name = name
        self.values: dict[EntityKey, Value] = dict(values or {})
        self.fail_after: int | None = None
        self.reads = 0

    async def scan(
        self,
        *,
        domains: Collection[str] | None = None,
        agents: Collection[str] | None = None,
        start_after: str | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[Item]]:
        after = None if start_after is None else sort_key(key_of_cursor(start_after))
        keys = sorted(self.values, key=sort_key)
        out: list[Item] = []
        sent = 0
        for k in keys:
            if (domains is not None and k.domain not in domains) or (
                after is not None and sort_key(k) <= after
            ):
                continue
            if self.fail_after is not None and sent >= self.fail_after:
                raise ConnectionError(f"{self.name} went away")
            out.append((k, self.values[k]))
            sent += 1
            if len(out) >= batch:
                yield out
                out = []
        if out:
            yield out

    async def read_many(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Value | None]:
        self.reads += 1
        return {k: self.values.get(k) for k in keys}
