"""Comparing one entity as the two stores hold it, through the mapping's canonical forms.

`classify` decides what one key's pair of values is: the same, a difference the mapping allows
(with its rule, `consistency.rules`), or a real difference: missing in the actors, missing in
Redis, differing fields, or a value that cannot be read. `merge` walks two key-ordered streams
of entities side by side, so a full comparison holds one batch of each store in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from operator import itemgetter, lt
from typing import Any, Final, NoReturn

import orjson

from consistency.legacy_form import same_as_read
from consistency.rules import (
    ACTOR_ONLY,
    CARRIED,
    CARRIED_FIELDS,
    CHAT_WINDOW,
    EXPIRED_LOCKS,
    UNREADABLE_LEGACY,
    Expectations,
)
from gateway.bulk.legacy_side import Deferred
from gateway.domain.entities import DOMAINS, Entity, EntityKey, Unreadable
from gateway.domain.jscompat import parse_js_date
from gateway.domain.model import GroupMessage, Lock
from gateway.legacy.mapping import canonical

RAW_CHARS: Final = 500
"""How much of an unreadable value a finding keeps."""


Value = Entity | Unreadable
"""One store's value of a key (a deferring legacy scan's `Deferred` values are typed as
entities: `classify` maps them when it needs them)."""
Item = tuple[EntityKey, Value]


class Kind(StrEnum):
    """What one key's comparison found; the report's counters are named after these."""

    SAME = "same"
    EXPECTED = "expected"
    MISSING_IN_ACTORS = "missingInActors"
    MISSING_IN_LEGACY = "missingInLegacy"
    DIFFERS = "differs"
    UNREADABLE = "unreadable"


DIFFERENCES: Final = (Kind.MISSING_IN_ACTORS, Kind.MISSING_IN_LEGACY, Kind.DIFFERS, Kind.UNREADABLE)
"""The kinds that make a report unclean."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One key's comparison: both values (canonical JSON, `None` when absent, or
    `{"unreadable": reason, "raw": ...}`), the differing fields and, when expected, the rule."""

    key: EntityKey
    kind: Kind
    legacy: Any = None
    actors: Any = None
    fields: tuple[str, ...] = ()
    rule: str | None = None

    @property
    def is_difference(self) -> bool:
        return self.kind in DIFFERENCES


def same(a: Any, b: Any) -> bool:
    """JSON data equality: `1 == 1.0`, but `true != 1` and key order does not matter."""
    if type(a) is not type(b):
        numbers = (int, float)
        return (
            isinstance(a, numbers)
            and isinstance(b, numbers)
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _equal_as_read(a: Any, b: Any) -> bool:
    """`same(a, b)`, first tried as equal JSON texts (keys sorted), which is much faster and
    implies it; texts that differ (`1` and `1.0`, say) are compared by `same`."""
    try:
        if orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS):
            return True
    except TypeError:  # not JSON data (orjson.JSONEncodeError): compared by `same`
        pass
    return same(a, b)


def _shown(value: Value | None) -> Any:
    if value is None:
        return None
    if isinstance(value, Unreadable):
        return {"unreadable": value.reason, "raw": value.raw[:RAW_CHARS]}
    return canonical(value)


def _expired(value: Value | None, now_ms: int) -> bool:
    return isinstance(value, Lock) and value.expires_ms <= now_ms


def _trimmed_chat(value: Value | None, exp: Expectations) -> bool:
    if not isinstance(value, GroupMessage) or exp.chat_oldest_ms is None:
        return False
    ts = parse_js_date(value.timestamp)
    return ts is not None and ts <= exp.chat_oldest_ms


def same_as_written(key: EntityKey, legacy: Value | Deferred | None, actors: Value | Deferred | None) -> bool:
    """Whether the pair is the same by the fast path: a deferred legacy value that is exactly
    the actor entity's legacy form (`consistency.legacy_form`). False decides nothing."""
    return (
        type(legacy) is Deferred
        and actors is not None
        and not isinstance(actors, Unreadable | Deferred)
        and same_as_read(key, legacy.raw, actors)
    )


def _not_shown(_value: Value | None) -> Any:
    return None


def classify(  # noqa: PLR0911 - one exit per outcome
    key: EntityKey,
    legacy: Value | Deferred | None,
    actors: Value | Deferred | None,
    exp: Expectations,
    *,
    show: bool = True,
) -> Finding:
    """What the pair of values of `key` is (both None is not a pair: ValueError).

    A deferred legacy value that is exactly the actor entity's legacy form is the same
    (`consistency.legacy_form`); any other is mapped first and compared canonically.

    With `show` false, a value only one side holds, or one that cannot be read, is not rendered
    for the finding (its `legacy` / `actors` are None): for a caller that will not keep it as a
    sample (the walk, once a domain's samples are full: most expired locks)."""
    if legacy is None and actors is None:
        raise ValueError(f"{key}: neither store holds it")
    if isinstance(legacy, Deferred):
        if same_as_written(key, legacy, actors):
            return Finding(key, Kind.SAME)
        legacy = legacy.entity()
    if isinstance(actors, Deferred):
        actors = actors.entity()
    shown = _shown if show else _not_shown
    if key.domain in exp.actor_only:
        return Finding(key, Kind.EXPECTED, None, shown(actors), rule=ACTOR_ONLY)
    if isinstance(legacy, Unreadable) and actors is None:
        return Finding(key, Kind.EXPECTED, shown(legacy), None, rule=UNREADABLE_LEGACY)
    if isinstance(legacy, Unreadable) or isinstance(actors, Unreadable):
        return Finding(key, Kind.UNREADABLE, shown(legacy), shown(actors))
    if legacy is None or actors is None:
        return _one_sided(key, legacy, actors, exp, shown)
    if _equal_as_read(legacy.to_json(), actors.to_json()):
        return Finding(key, Kind.SAME)  # equal as read: equal canonical forms, without making them
    left, right = canonical(legacy), canonical(actors)
    if left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items()):
        return Finding(key, Kind.SAME)
    fields = tuple(sorted(k for k in left.keys() | right.keys() if not same(left.get(k), right.get(k))))
    if _expired(legacy, exp.now_ms) and _expired(actors, exp.now_ms):
        return Finding(key, Kind.EXPECTED, left, right, fields, rule=EXPIRED_LOCKS)
    carried = CARRIED.get(key.domain, frozenset())
    unexplained = tuple(f for f in fields if not (f in carried and left.get(f) == []))
    if not unexplained:
        return Finding(key, Kind.EXPECTED, left, right, fields, rule=CARRIED_FIELDS)
    return Finding(key, Kind.DIFFERS, left, right, unexplained)


def _one_sided(
    key: EntityKey,
    legacy: Entity | None,
    actors: Entity | None,
    exp: Expectations,
    shown: Callable[[Value | None], Any] = _shown,
) -> Finding:
    """An entity only one store holds: missing in the other, or allowed to be."""
    if legacy is None:
        if _trimmed_chat(actors, exp):
            return Finding(key, Kind.EXPECTED, None, shown(actors), rule=CHAT_WINDOW)
        if _expired(actors, exp.now_ms):
            return Finding(key, Kind.EXPECTED, None, shown(actors), rule=EXPIRED_LOCKS)
        return Finding(key, Kind.MISSING_IN_LEGACY, None, shown(actors))
    if _expired(legacy, exp.now_ms):
        return Finding(key, Kind.EXPECTED, shown(legacy), None, rule=EXPIRED_LOCKS)
    return Finding(key, Kind.MISSING_IN_ACTORS, shown(legacy), None)


_DOMAIN_INDEX: Final = {d: i for i, d in enumerate(DOMAINS)}

SortKey = tuple[int, str, str, str]


def sort_key(key: EntityKey) -> SortKey:
    """The order both stores are scanned in: the domain order of `DOMAINS` (unknown domains
    after them, by name), then the owning scope, then the id."""
    return (_DOMAIN_INDEX.get(key.domain, len(DOMAINS)), key.domain, key.scope, key.id)


class OutOfOrderError(RuntimeError):
    """A store's scan did not come in key order, so the two sides cannot be walked together."""


Pair = tuple[EntityKey, Value | None, Value | None]


_RUN_STEP: Final = 64
"""Keys compared at once (a slice each side, compared in C) while both stores hold the same."""

_key_of: Final = itemgetter(0)
_value_of: Final = itemgetter(1)


class _Side:
    """One store's scan, consumed batch by batch, with its order checked: the sort keys of the
    buffered batch and its items, side by side."""

    def __init__(self, name: str, batches: AsyncIterable[Sequence[Item]]) -> None:
        self.name = name
        self.batches = aiter(batches)
        self.keys: list[SortKey] = []
        self.items: Sequence[Item] = []
        self.pos = 0
        self.done = False
        self.last: SortKey | None = None

    @property
    def empty(self) -> bool:
        return self.pos >= len(self.items)

    async def fill(self) -> None:
        """Read batches until one item is buffered or the scan ends."""
        while self.empty and not self.done:
            batch = await anext(self.batches, None)
            if batch is None:
                self.done = True
                return
            index, unknown = _DOMAIN_INDEX.get, len(DOMAINS)
            keys = [(index(k.domain, unknown), k.domain, k.scope, k.id) for k, _value in batch]
            if keys:
                # strictly increasing, within the batch and after the last: checked in C
                last = self.last
                if (last is not None and keys[0] <= last) or not all(map(lt, keys, islice(keys, 1, None))):
                    self._out_of_order(keys, batch)
                self.last = keys[-1]
            self.keys, self.items, self.pos = keys, batch, 0

    def _out_of_order(self, keys: list[SortKey], batch: Sequence[Item]) -> NoReturn:
        """Raise naming the first key of `batch` not after the one before it."""
        last, at = self.last, len(keys) - 1
        for n, k in enumerate(keys):
            if last is not None and k <= last:
                at = n
                break
            last = k
        raise OutOfOrderError(f"the {self.name} scan is not in key order at {batch[at][0]}")


def _equal_run(a: list[SortKey], i: int, b: list[SortKey], j: int, n: int) -> int:
    """How many keys from `a[i]` and `b[j]` on are the same in both, at most `n` (`a[i]` and
    `b[j]` are): compared `_RUN_STEP` at a time, then one by one inside the step that differs."""
    m = 1
    while m < n:
        step = min(_RUN_STEP, n - m)
        if a[i + m : i + m + step] == b[j + m : j + m + step]:
            m += step
            continue
        while a[i + m] == b[j + m]:  # the step holds a difference: it stops there
            m += 1
        break
    return m


async def merge_batches(
    legacy: AsyncIterable[Sequence[Item]], actors: AsyncIterable[Sequence[Item]]
) -> AsyncIterator[list[Pair]]:
    """Every key either store holds, in key order, with each store's value (None: absent), in
    batches: each batch runs until one side's buffered batch is used up. Runs of keys both
    stores hold (most of a check) are paired a slice at a time."""
    left, right = _Side("legacy", legacy), _Side("actors", actors)
    while True:
        await left.fill()
        await right.fill()
        if left.empty and right.empty:
            return
        out: list[Pair] = []
        ka, a, i, la = left.keys, left.items, left.pos, len(left.items)
        kb, b, j, lb = right.keys, right.items, right.pos, len(right.items)
        # pairs while both sides have items buffered; then the rest of a side whose other has ended
        while i < la and j < lb:
            if ka[i] == kb[j]:
                m = _equal_run(ka, i, kb, j, min(la - i, lb - j))
                both = a[i : i + m]
                out += zip(
                    map(_key_of, both), map(_value_of, both), map(_value_of, b[j : j + m]), strict=True
                )
                i += m
                j += m
            elif ka[i] < kb[j]:
                key, value = a[i]
                out.append((key, value, None))
                i += 1
            else:
                key, value = b[j]
                out.append((key, None, value))
                j += 1
        if i < la and right.done:  # the actors' scan has ended: the rest is Redis's alone
            out += [(key, value, None) for key, value in a[i:]]
            i = la
        elif j < lb and left.done:
            out += [(key, None, value) for key, value in b[j:]]
            j = lb
        left.pos, right.pos = i, j
        if out:
            yield out


async def merge(
    legacy: AsyncIterable[Sequence[Item]], actors: AsyncIterable[Sequence[Item]]
) -> AsyncIterator[Pair]:
    """`merge_batches`, pair by pair."""
    async for pairs in merge_batches(legacy, actors):
        for pair in pairs:
            yield pair
