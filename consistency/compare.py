"""Comparing one entity as the two stores hold it, through the mapping's canonical forms.

`classify` decides what one key's pair of values is: the same, a difference the mapping allows
(with its rule, `consistency.rules`), or a real difference: missing in the actors, missing in
Redis, differing fields, or a value that cannot be read. `merge` walks two key-ordered streams
of entities side by side, so a full comparison holds one batch of each store in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from consistency.rules import (
    ACTOR_ONLY,
    CARRIED,
    CARRIED_FIELDS,
    CHAT_WINDOW,
    EXPIRED_LOCKS,
    UNREADABLE_LEGACY,
    Expectations,
)
from gateway.domain.entities import DOMAINS, Entity, EntityKey, Unreadable
from gateway.domain.jscompat import parse_js_date
from gateway.domain.model import GroupMessage, Lock
from gateway.legacy.mapping import canonical

RAW_CHARS: Final = 500
"""How much of an unreadable value a finding keeps."""


Value = Entity | Unreadable
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


def classify(key: EntityKey, legacy: Value | None, actors: Value | None, exp: Expectations) -> Finding:  # noqa: PLR0911 - one exit per outcome
    """What the pair of values of `key` is (both None is not a pair: ValueError)."""
    if legacy is None and actors is None:
        raise ValueError(f"{key}: neither store holds it")
    if key.domain in exp.actor_only:
        return Finding(key, Kind.EXPECTED, None, _shown(actors), rule=ACTOR_ONLY)
    if isinstance(legacy, Unreadable) and actors is None:
        return Finding(key, Kind.EXPECTED, _shown(legacy), None, rule=UNREADABLE_LEGACY)
    if isinstance(legacy, Unreadable) or isinstance(actors, Unreadable):
        return Finding(key, Kind.UNREADABLE, _shown(legacy), _shown(actors))
    if legacy is None or actors is None:
        return _one_sided(key, legacy, actors, exp)
    if same(legacy.to_json(), actors.to_json()):
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


def _one_sided(key: EntityKey, legacy: Entity | None, actors: Entity | None, exp: Expectations) -> Finding:
    """An entity only one store holds: missing in the other, or allowed to be."""
    if legacy is None:
        if _trimmed_chat(actors, exp):
            return Finding(key, Kind.EXPECTED, None, _shown(actors), rule=CHAT_WINDOW)
        if _expired(actors, exp.now_ms):
            return Finding(key, Kind.EXPECTED, None, _shown(actors), rule=EXPIRED_LOCKS)
        return Finding(key, Kind.MISSING_IN_LEGACY, None, _shown(actors))
    if _expired(legacy, exp.now_ms):
        return Finding(key, Kind.EXPECTED, _shown(legacy), None, rule=EXPIRED_LOCKS)
    return Finding(key, Kind.MISSING_IN_ACTORS, _shown(legacy), None)


_DOMAIN_INDEX: Final = {d: i for i, d in enumerate(DOMAINS)}

SortKey = tuple[int, str, str, str]


def sort_key(key: EntityKey) -> SortKey:
    """The order both stores are scanned in: the domain order of `DOMAINS` (unknown domains
    after them, by name), then the owning scope, then the id."""
    return (_DOMAIN_INDEX.get(key.domain, len(DOMAINS)), key.domain, key.scope, key.id)


class OutOfOrderError(RuntimeError):
    """A store's scan did not come in key order, so the two sides cannot be walked together."""


async def _ordered(side: str, batches: AsyncIterable[Sequence[Item]]) -> AsyncIterator[Item]:
    last: SortKey | None = None
    async for batch in batches:
        for item in batch:
            k = sort_key(item[0])
            if last is not None and k <= last:
                raise OutOfOrderError(f"the {side} scan is not in key order at {item[0]}")
            last = k
            yield item


Pair = tuple[EntityKey, Value | None, Value | None]


async def merge(
    legacy: AsyncIterable[Sequence[Item]], actors: AsyncIterable[Sequence[Item]]
) -> AsyncIterator[Pair]:
    """Every key either store holds, in key order, with each store's value (None: absent)."""
    left, right = _ordered("legacy", legacy), _ordered("actors", actors)
    a = await anext(left, None)
    b = await anext(right, None)
    while a is not None or b is not None:
        if a is not None and (b is None or sort_key(a[0]) < sort_key(b[0])):
            yield a[0], a[1], None
            a = await anext(left, None)
        elif b is not None and (a is None or sort_key(b[0]) < sort_key(a[0])):
            yield b[0], None, b[1]
            b = await anext(right, None)
        elif a is not None and b is not None:
            yield a[0], a[1], b[1]
            a = await anext(left, None)
            b = await anext(right, None)
