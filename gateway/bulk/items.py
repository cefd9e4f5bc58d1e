"""What the bulk entity I/O layer streams: items, their order, resume cursors, write results.

Both stores are read in one deterministic order: the domain order of `DOMAINS`, then the key's
scope (the agent of a per-agent entity, empty otherwise), then its id. A cursor is the position
of one key in that order, as a string; a scan started after it yields exactly the keys after it,
so an interrupted run resumes where it stopped and two stores can be compared by a merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import orjson

from gateway.domain.entities import DOMAINS, OWNERS, PER_AGENT, Entity, EntityKey, Owner, Unreadable

_KEY_PARTS: Final = 3  # [domain, scope, id]

__all__ = [
    "EntitySink",
    "EntitySource",
    "Item",
    "Selection",
    "WriteResult",
    "cursor_of",
    "in_sample",
    "order_key",
    "parse_cursor",
]

Item = tuple[EntityKey, Entity | Unreadable]
"""One entity as a store holds it (or the value it could not read)."""

_RANK = {d: i for i, d in enumerate(DOMAINS)}


def order_key(key: EntityKey) -> tuple[int, str, str]:
    """The position of `key` in the scan order (domain order of DOMAINS, scope, id)."""
    return (_RANK.get(key.domain, len(_RANK)), key.scope, key.id)


def cursor_of(key: EntityKey) -> str:
    """The resume cursor after `key` (a JSON array `[domain, scope, id]`)."""
    return orjson.dumps([key.domain, key.scope, key.id]).decode()


def parse_cursor(cursor: str) -> EntityKey:
    """The key a cursor names; ValueError for anything that is not one."""
    try:
        value = orjson.loads(cursor)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not a scan cursor: {cursor[:80]!r}") from e
    if not (isinstance(value, list) and len(value) == _KEY_PARTS and all(isinstance(x, str) for x in value)):
        raise ValueError(f"not a scan cursor: {cursor[:80]!r}")
    if value[0] not in OWNERS:
        raise ValueError(f"scan cursor names an unknown domain {value[0]!r}")
    return EntityKey(value[0], value[1], value[2])


def in_sample(key: EntityKey, rate: float, seed: int) -> bool:
    """A key's place in a seeded sample: the same keys on both stores, and in every run with
    the same seed (a hash of the seed and the key, never Python's `hash`). A memory is sampled
    by its id alone (unique in the legacy hash, whose field is the id: the owner is inside the
    value), so a sampled scan of Redis chooses memories before it reads them."""
    return _hash64(f"{seed}\x00".encode(), key) < rate * 2**64


def _hash64(prefix: bytes, key: EntityKey) -> int:
    if key.scope and key.domain != "memory":
        text = f"{key.domain}:{key.scope}:{key.id}"  # str(key)
    else:
        text = f"{key.domain}:{key.id}"
    return int.from_bytes(hashlib.blake2b(prefix + text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which entities a scan yields: some domains (None: all), some agents (None: all), and a
    seeded sample of the keys (`sample` < 1: the keys `in_sample` keeps).

    With agents given, only the agents' own data is selected: their `agent` records and their
    per-agent domains (checkpoint, dm, memory); the team-wide domains (chat, tasks, zones,
    claims, handoffs) and the locks belong to no one agent and are left out.

    A source chooses the sampled keys before it reads their values wherever it learns the keys
    first (hash field names, table keys), so a sampled scan reads about `sample` of the values;
    it may still yield keys outside the sample (a caller that needs exactly the sample filters
    with `wants_key`).
    """

    domains: tuple[str, ...] = DOMAINS
    agents: frozenset[str] | None = None
    sample: float = 1.0
    seed: int = 0
    _prefix: bytes = field(init=False, repr=False, compare=False)
    _limit: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prefix", f"{self.seed}\x00".encode())
        object.__setattr__(self, "_limit", self.sample * 2**64)

    @property
    def sampled(self) -> bool:
        return self.sample < 1.0

    def in_sample(self, key: EntityKey) -> bool:
        """Whether the sample keeps `key` (always, without a sample): `in_sample`."""
        return self.sample >= 1.0 or _hash64(self._prefix, key) < self._limit

    def wants_key(self, key: EntityKey) -> bool:
        """Whether `key` is selected: its domain, its agent and the sample."""
        return (
            key.domain in self.domains
            and self.wants_scope(key.domain, key.scope, key.id)
            and self.in_sample(key)
        )

    @classmethod
    def of(cls, domains: Collection[str] | None = None, agents: Collection[str] | None = None) -> Selection:
        """A selection; ValueError naming an unknown domain."""
        if domains is not None:
            unknown = sorted(set(domains) - set(OWNERS))
            if unknown:
                raise ValueError(f"unknown domain {unknown[0]!r}; domains are: {', '.join(DOMAINS)}")
        chosen = tuple(d for d in DOMAINS if domains is None or d in domains)
        who = None if agents is None else frozenset(agents)
        if who is not None:
            chosen = tuple(d for d in chosen if d == "agent" or d in PER_AGENT)
        return cls(chosen, who)

    def wants_scope(self, domain: str, scope: str, ident: str) -> bool:
        """Whether an entity of `domain` with this scope/id is selected by the agent filter."""
        if self.agents is None:
            return True
        if domain == "agent":
            return ident in self.agents
        return scope in self.agents

    def owner_names(self, domain: str, names: Sequence[str]) -> list[str]:
        """The actor names (of the domain's kind) a scan visits, filtered by agent."""
        if self.agents is not None and OWNERS[domain] is Owner.AGENT:
            return [n for n in names if n in self.agents]
        return list(names)


@dataclass(slots=True)
class WriteResult:
    """What one batch write did: counts per domain and outcome, and the keys left alone."""

    written: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_keys: list[EntityKey] = field(default_factory=list)

    def add(self, key: EntityKey, outcome: str) -> None:
        table = {"written": self.written, "unchanged": self.unchanged, "skipped": self.skipped}[outcome]
        table[key.domain] = table.get(key.domain, 0) + 1
        if outcome == "skipped":
            self.skipped_keys.append(key)

    def merge(self, other: WriteResult) -> None:
        for mine, theirs in (
            (self.written, other.written),
            (self.unchanged, other.unchanged),
            (self.skipped, other.skipped),
        ):
            for d, n in theirs.items():
                mine[d] = mine.get(d, 0) + n
        self.skipped_keys.extend(other.skipped_keys)

    def to_json(self) -> dict[str, object]:
        return {
            "written": self.written,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "skippedKeys": [cursor_of(k) for k in self.skipped_keys],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> WriteResult:
        def counts(name: str) -> dict[str, int]:
            raw = data.get(name)
            return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

        keys = data.get("skippedKeys")
        return cls(
            counts("written"),
            counts("unchanged"),
            counts("skipped"),
            [parse_cursor(str(c)) for c in keys] if isinstance(keys, list) else [],
        )


class EntitySource(Protocol):
    """A store read entity by entity, in scan order."""

    name: str

    def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        """Every selected entity in scan order, after the cursor `start_after`, in batches of
        at most `batch` items (memory bounded by the batch)."""
        ...

    async def read_many(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity | Unreadable | None]:
        """The entities `keys` name (None: not there)."""
        ...

    async def count(self, selection: Selection) -> dict[str, int] | None:
        """An estimate of the entities per domain (for progress bars), or None when unknown."""
        ...


class EntitySink(Protocol):
    """A store written entity by entity, in batches."""

    name: str

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Entity | None]], *, dry_run: bool = False
    ) -> WriteResult:
        """Make the store hold `items` (None deletes). An entity already equal is `unchanged`;
        one the store holds in a newer version than the incoming one (a live gateway wrote it
        after this copy was read, see `gateway.bulk.versions`) is left alone and `skipped`.
        With `dry_run`, nothing is written and the result says what would have been."""
        ...
