"""The run reads its source ahead of the write (`migrate.engine.read_ahead`): batches arrive in
order, at most two ahead, a source error arrives where it happened, and the reading stops with
the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.bulk.items import Item
from migrate.engine import READ_AHEAD, read_ahead


class SourceGone(Exception):
    pass


async def source(
    n: int, read: list[int], *, fail_at: int | None = None
) -> AsyncIterator[tuple[list[Item], int]]:
    for i in range(1, n + 1):
        if i == fail_at:
            raise SourceGone(f"batch {i}")
        read.append(i)
        yield [], i


async def test_batches_come_in_order_and_at_most_two_ahead() -> None:
    read: list[int] = []
    seen: list[int] = []
    async for _items, position in read_ahead(source(6, read)):
        await asyncio.sleep(0.01)  # a slow write: the reader runs ahead, but not further
        assert isinstance(position, int)
        assert len(read) - position <= READ_AHEAD + 1
        seen.append(position)
    assert seen == [1, 2, 3, 4, 5, 6]


async def test_a_source_error_arrives_after_the_batches_before_it() -> None:
    read: list[int] = []
    seen: list[int] = []

    async def consume() -> None:
        async for _items, position in read_ahead(source(6, read, fail_at=3)):
            seen.append(position)  # type: ignore[arg-type]

    with pytest.raises(SourceGone, match="batch 3"):
        await consume()
    assert seen == [1, 2]


async def test_the_reading_stops_when_the_run_stops() -> None:
    read: list[int] = []
    ahead = read_ahead(source(100, read))
    async for _items, _position in ahead:
        break
    await ahead.aclose()
    await asyncio.sleep(0.05)
    assert len(read) <= READ_AHEAD + 2  # nothing read after the run stopped
