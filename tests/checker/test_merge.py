"""`consistency.compare.merge_batches`: the two stores' scans walked together in key order,
whatever their batches, however their keys interleave; a scan out of order is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consistency.compare import OutOfOrderError, Pair, merge_batches, sort_key
from gateway.domain.entities import DOMAINS, EntityKey, Unreadable

_DOMAINS = (*DOMAINS[:3], "zz-unknown")  # three known domains and one after them all


Items = list[tuple[EntityKey, Unreadable]]


def _item(key: EntityKey, side: str) -> tuple[EntityKey, Unreadable]:
    return key, Unreadable(key, side, "")  # the value names its side, so a swap would show


async def _batches(items: Items, sizes: list[int]) -> AsyncIterator[Items]:
    """`items` in batches of the given sizes (empty batches included), the rest in one."""
    at = 0
    for size in sizes:
        yield items[at : at + size]
        at += size
    if at < len(items):
        yield items[at:]


def _merged(legacy: AsyncIterator[Items], actors: AsyncIterator[Items]) -> list[list[Pair]]:
    async def run() -> list[list[Pair]]:
        return [batch async for batch in merge_batches(legacy, actors)]

    return asyncio.run(run())


def _expected(left: set[EntityKey], right: set[EntityKey]) -> list[tuple[EntityKey, str | None, str | None]]:
    return [
        (k, "legacy" if k in left else None, "actors" if k in right else None)
        for k in sorted(left | right, key=sort_key)
    ]


def _side(value: object) -> str | None:
    """The side an item's value was made for (`_item`), None for an absent one."""
    assert value is None or isinstance(value, Unreadable)
    return None if value is None else value.raw


def _seen(batches: list[list[Pair]]) -> list[tuple[EntityKey, str | None, str | None]]:
    return [(key, _side(a), _side(b)) for batch in batches for key, a, b in batch]


keys = st.builds(
    EntityKey,
    st.sampled_from(_DOMAINS),
    st.sampled_from(("", "a1", "a2")),
    st.text(alphabet="0123456789ab", min_size=1, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(
    shared=st.sets(keys, max_size=300),
    only_left=st.sets(keys, max_size=40),
    only_right=st.sets(keys, max_size=40),
    left_sizes=st.lists(st.integers(0, 90), max_size=12),
    right_sizes=st.lists(st.integers(0, 90), max_size=12),
)
def test_every_key_of_either_store_once_in_order_with_its_values(
    shared: set[EntityKey],
    only_left: set[EntityKey],
    only_right: set[EntityKey],
    left_sizes: list[int],
    right_sizes: list[int],
) -> None:
    """Long runs of keys both stores hold (paired a slice at a time), keys one store lacks
    anywhere in them, batches of any size on either side: each key once, in the scans' order,
    with its own store's value on each side and None where a store lacks it."""
    left = shared | only_left
    right = shared | (only_right - only_left)
    legacy = [_item(k, "legacy") for k in sorted(left, key=sort_key)]
    actors = [_item(k, "actors") for k in sorted(right, key=sort_key)]
    batches = _merged(_batches(legacy, left_sizes), _batches(actors, right_sizes))
    assert _seen(batches) == _expected(left, right)
    assert all(batches)  # no empty batch is passed on


def test_a_long_shared_run_with_a_difference_inside_each_step() -> None:
    """Thousands of shared keys with one missing on either side every few dozen: the slice
    comparison finds each, at every position inside its step of 64."""
    ids = [f"t-{n:05}" for n in range(3000)]
    left = {EntityKey("task", "", i) for n, i in enumerate(ids) if n % 67 != 5}
    right = {EntityKey("task", "", i) for n, i in enumerate(ids) if n % 61 != 7}
    legacy = [_item(k, "legacy") for k in sorted(left, key=sort_key)]
    actors = [_item(k, "actors") for k in sorted(right, key=sort_key)]
    batches = _merged(_batches(legacy, [2000]), _batches(actors, [500, 500, 1000]))
    seen = _seen(batches)
    assert seen == _expected(left, right)
    assert sum(1 for _, a, b in seen if a is None) == len(right - left) > 40
    assert sum(1 for _, a, b in seen if b is None) == len(left - right) > 40


def test_one_store_empty() -> None:
    ks = [EntityKey("task", "", f"t{n}") for n in range(5)]
    batches = _merged(_batches([_item(k, "legacy") for k in ks], [2, 0, 3]), _batches([], []))
    assert _seen(batches) == [(k, "legacy", None) for k in ks]
    batches = _merged(_batches([], []), _batches([_item(k, "actors") for k in ks], [1]))
    assert _seen(batches) == [(k, None, "actors") for k in ks]


@pytest.mark.parametrize(
    ("ids", "sizes", "at"),
    [
        (["b", "a"], [2], "a"),  # inside a batch
        (["a", "b", "b"], [3], "b"),  # a key twice
        (["a", "c", "b"], [2, 1], "b"),  # across batches
        (["a", "b", "c", "d", "e", "f", "e"], [7], "e"),  # late in a batch
    ],
)
def test_a_scan_out_of_order_is_refused_naming_the_key(ids: list[str], sizes: list[int], at: str) -> None:
    legacy = [_item(EntityKey("task", "", i), "legacy") for i in ids]
    with pytest.raises(OutOfOrderError, match=f"the legacy scan is not in key order at task:{at}$"):
        _merged(_batches(legacy, sizes), _batches([], []))
