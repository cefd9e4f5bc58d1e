"""An in-memory store for the checker's unit tests: entities by key, scanned in key order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from consistency.compare import Item, Value, sort_key
from gateway.bulk.items import Selection, WriteResult, parse_cursor
from gateway.domain.entities import EntityKey
from gateway.domain.model import Task


def _newer(current: Value, incoming: Value) -> bool:
    """A task updated later than the incoming copy is newer (enough for these tests)."""
    return (
        isinstance(current, Task) and isinstance(incoming, Task) and current.updated_at > incoming.updated_at
    )


class MemorySource:
    """A dict of entities with the `Source` interface; `fail_after` makes a scan break."""

    def __init__(self, name: str, values: dict[EntityKey, Value] | None = None) -> None:
        self.name = name
        self.values: dict[EntityKey, Value] = dict(values or {})
        self.fail_after: int | None = None
        self.reads = 0

    async def scan(
        self,
        selection: Selection,
        *,
        start_after: str | None = None,
        batch: int = 500,
    ) -> AsyncIterator[list[Item]]:
        after = None if start_after is None else sort_key(parse_cursor(start_after))
        domains = selection.domains
        keys = sorted(self.values, key=sort_key)
        out: list[Item] = []
        sent = 0
        for k in keys:
            if k.domain not in domains or (after is not None and sort_key(k) <= after):
                continue
            if not selection.wants_scope(k.domain, k.scope, k.id):
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

    async def count(self, selection: Selection) -> dict[str, int] | None:
        del selection
        return None

    async def read_many(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Value | None]:
        self.reads += 1
        return {k: self.values.get(k) for k in keys}

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Value | None]], *, dry_run: bool = False
    ) -> WriteResult:
        """Write (None deletes); a task the store holds updated later is skipped, as a live write."""
        out = WriteResult()
        for key, value in items:
            current = self.values.get(key)
            if current == value:
                outcome = "unchanged"
            elif current is not None and value is not None and _newer(current, value):
                outcome = "skipped"
            else:
                outcome = "written"
                if not dry_run:
                    if value is None:
                        self.values.pop(key, None)
                    else:
                        self.values[key] = value
            out.add(key, outcome)
        return out
