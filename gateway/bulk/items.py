"""What the bulk entity I/O layer streams: items, their order, resume cursors, write results.

Both stores are read in one deterministic order: the domain order of `DOMAINS`, then the key's
scope (the agent of a per-agent entity, empty otherwise), then its id. A cursor is the position
of one key in that order, as a string; a scan started after it yields exactly the keys after it,
so an interrupted run resumes where it stopped and two stores can be compared by a merge.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, AnyStr, Final, Protocol, TypeVar, cast

import orjson

from gateway.actors.sql_functions import (
    SAMPLE_BITS,
    SAMPLE_MIX,
    SAMPLE_SQL_FN,
    register_sample_fn,
    sql_sample_condition,
)
from gateway.domain.entities import DOMAINS, OWNERS, PER_AGENT, Entity, EntityKey, Owner, Unreadable

_KEY_PARTS: Final = 3  # [domain, scope, id]

__all__ = [
    "SAMPLE_RULE",
    "SAMPLE_SQL_FN",
    "EntitySink",
    "EntitySource",
    "Item",
    "Selection",
    "WriteResult",
    "cursor_of",
    "in_sample",
    "json_of_any_text",
    "order_key",
    "parse_cursor",
    "register_sample_fn",
    "sample_text",
    "sql_sample_condition",
]

Item = tuple[EntityKey, Entity | Unreadable]
"""One entity as a store holds it (or the value it could not read)."""

_RANK = {d: i for i, d in enumerate(DOMAINS)}


def order_key(key: EntityKey) -> tuple[int, str, str]:
    """The position of `key` in the scan order (domain order of DOMAINS, scope, id)."""
    return (_RANK.get(key.domain, len(_RANK)), key.scope, key.id)


def json_of_any_text(value: Any) -> bytes:
    """`value` as compact JSON, as orjson writes it; a text holding a lone surrogate (a legacy
    field name or value that is not UTF-8, decoded as the client decodes it: surrogateescape),
    which orjson refuses, written with `\\udcXX` escapes instead (ASCII; Python's json reads the
    same text back, and `.encode("utf-8", "surrogateescape")` the bytes Redis holds)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def cursor_of(key: EntityKey) -> str:
    """The resume cursor after `key` (a JSON array `[domain, scope, id]`; `json_of_any_text`:
    `parse_cursor` reads either spelling back)."""
    return json_of_any_text([key.domain, key.scope, key.id]).decode()


def parse_cursor(cursor: str) -> EntityKey:
    """The key a cursor names; ValueError for anything that is not one."""
    try:
        value = orjson.loads(cursor)
    except orjson.JSONDecodeError as e:
        try:
            value = json.loads(cursor)  # a non-UTF-8 name's escapes (`cursor_of`)
        except ValueError:
            raise ValueError(f"not a scan cursor: {cursor[:80]!r}") from e
    if not (isinstance(value, list) and len(value) == _KEY_PARTS and all(isinstance(x, str) for x in value)):
        raise ValueError(f"not a scan cursor: {cursor[:80]!r}")
    if value[0] not in OWNERS:
        raise ValueError(f"scan cursor names an unknown domain {value[0]!r}")
    return EntityKey(value[0], value[1], value[2])


SAMPLE_RULE: Final = 3
"""The version of the sampling rule (`sample_text`, `sample_limit`, `text_in_sample`): a report
and a saved check record it, so a check is never resumed on another rule's sample. 1: a BLAKE2b
hash of each key (memories by id, DMs by key); 2: SHA-1 (chosen in Redis by Lua), DMs by inbox;
3 (this one): the texts of rule 2 hashed with CRC-32, mixed by a multiplication (`SAMPLE_MIX`):
C calls only, in Python or inside SQLite (see docs/consistency.md)."""

_MASK: Final = (1 << SAMPLE_BITS) - 1


def sample_text(domain: str, scope: str, ident: str) -> str:
    """What a key is sampled by (rules 2 and 3), so each store chooses the sample before it reads
    values:

    * a direct message by its inbox (`dm:<recipient>`): the actors list their inboxes, Redis its
      users' conversation lists, and neither reads a message outside the sample; a DM key with no
      inbox (an unlisted conversation) by its conversation (`dm:<id>`);
    * a memory by its id (`memory:<id>`): the legacy hash's field is the id, the owner is inside
      the value;
    * a checkpoint by its agent, a claim by its `what`, everything else by `domain:scope:id`
      (`domain:id` without a scope), as `str(key)`.
    """
    if domain == "dm":
        return f"dm:{scope or ident}"
    if domain == "memory" or not scope:
        return f"{domain}:{ident}"
    return f"{domain}:{scope}:{ident}"


def sample_limit(rate: float) -> int:
    """The bound a key's `SAMPLE_BITS`-bit hash must stay under."""
    return int(rate * 2**SAMPLE_BITS)


def seed_prefix(seed: int) -> bytes:
    """What a key's text is hashed after: the seed."""
    return f"{seed}\x00".encode()


def text_start(seed: int, head: str = "") -> int:
    """The CRC-32 of the seed prefix and `head`: where the hash of a text that starts with
    `head` continues (`zlib.crc32(rest, start)` is the CRC-32 of the whole)."""
    return zlib.crc32(head.encode(), zlib.crc32(seed_prefix(seed)))


def text_in_sample(start: int, limit: int, text: str) -> bool:
    """Whether the sample keeps the key of `sample_text` `text`: the CRC-32 of the seed prefix
    and the text (`start`: the seed prefix's, `text_start`), mixed (`SAMPLE_MIX`), below the
    limit. A legacy field name that is not UTF-8 (decoded as the client decodes it,
    surrogateescape) is hashed as the bytes Redis holds, as the listings hash it undecoded."""
    try:
        blob = text.encode()
    except UnicodeEncodeError:
        blob = text.encode("utf-8", "surrogateescape")
    return (zlib.crc32(blob, start) * SAMPLE_MIX) & _MASK < limit


def in_sample(key: EntityKey, rate: float, seed: int) -> bool:
    """A key's place in a seeded sample: the same keys on both stores, and in every run with
    the same seed (a hash of the seed and the key's `sample_text`, never Python's `hash`)."""
    if rate >= 1.0:
        return True
    return text_in_sample(text_start(seed), sample_limit(rate), sample_text(key.domain, key.scope, key.id))


_V = TypeVar("_V")


def _chosen_blobs(start: int, limit: int, blobs: Iterable[bytes]) -> Iterator[bool]:
    """`text_in_sample` of each text's UTF-8, iterated in C (no Python frame per text)."""
    crcs = map(zlib.crc32, blobs, repeat(start))
    return map(limit.__gt__, map(_MASK.__and__, map(SAMPLE_MIX.__mul__, crcs)))


def _chosen_texts(start: int, limit: int, texts: Iterable[str]) -> Iterator[bool]:
    """`text_in_sample` of each text, iterated in C."""
    return _chosen_blobs(start, limit, _encoded(texts))


def _utf8(texts: Sequence[str] | Sequence[bytes]) -> Iterator[bytes]:
    """The texts' UTF-8: bytes as they are (names Redis sent undecoded), str encoded."""
    if texts and isinstance(texts[0], bytes):
        return iter(cast("Sequence[bytes]", texts))
    return _encoded(cast("Sequence[str]", texts))


def _encoded(texts: Iterable[str]) -> Iterator[bytes]:
    """Each text's UTF-8, in C; a legacy field name that is not UTF-8 (the client's
    surrogateescape) as the bytes Redis holds (as fast as a plain `str.encode` map)."""
    return map(str.encode, texts, repeat("utf-8"), repeat("surrogateescape"))


def _blob_or_suffix_kept(blob: bytes, start: int, limit: int) -> bool:
    """Whether the sample (`start`: the head's CRC-32, `limit`) keeps `blob` or the bytes after
    one of its colons."""
    crc32 = zlib.crc32
    if (crc32(blob, start) * SAMPLE_MIX) & _MASK < limit:
        return True
    at = blob.find(b":")
    while at >= 0:
        if (crc32(blob[at + 1 :], start) * SAMPLE_MIX) & _MASK < limit:
            return True
        at = blob.find(b":", at + 1)
    return False


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
    _start: int = field(init=False, repr=False, compare=False)
    _limit: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_start", text_start(self.seed))
        object.__setattr__(self, "_limit", sample_limit(self.sample) if self.sample < 1.0 else 0)

    @property
    def sampled(self) -> bool:
        return self.sample < 1.0

    @property
    def limit(self) -> int:
        """`sample_limit` of the rate."""
        return sample_limit(self.sample)

    def in_sample(self, key: EntityKey) -> bool:
        """Whether the sample keeps `key` (always, without a sample): `in_sample`."""
        return self.sample >= 1.0 or text_in_sample(
            self._start, self._limit, sample_text(key.domain, key.scope, key.id)
        )

    def _head_start(self, domain: str, scope: str) -> int:
        """Where the hash of the keys of `domain` and `scope` continues after their text's fixed
        head (`sample_text` without the id)."""
        return zlib.crc32(sample_text(domain, scope, "").encode("utf-8", "surrogateescape"), self._start)

    def id_sampler(self, domain: str, scope: str) -> Callable[[str], bool]:
        """`in_sample` of the keys of `domain` and `scope`, by id: the hash's fixed head made
        once, no key made per id (a sampled scan asks it of every id it lists)."""
        if self.sample >= 1.0:
            return lambda _ident: True
        if domain == "dm" and scope:  # an inbox is in the sample or not as a whole
            whole = self.text_in_sample(sample_text(domain, scope, ""))
            return lambda _ident: whole
        start, limit, crc32 = self._head_start(domain, scope), self._limit, zlib.crc32
        return lambda ident: (crc32(ident.encode(), start) * SAMPLE_MIX) & _MASK < limit

    def keeps(self, domain: str, scope: str, idents: Iterable[str]) -> Iterator[bool]:
        """`id_sampler` of each id of `idents` (keys of `domain` and `scope`), iterated in C:
        for `itertools.compress`."""
        if self.sample >= 1.0:
            return repeat(True)
        if domain == "dm" and scope:  # an inbox is in the sample or not as a whole
            return repeat(self.text_in_sample(sample_text(domain, scope, "")))
        return _chosen_texts(self._head_start(domain, scope), self._limit, idents)

    def sampled_ids(self, domain: str, scope: str, idents: Sequence[str]) -> list[str]:
        """The ids of `idents` (keys of `domain` and `scope`) the sample keeps, in their order."""
        return list(compress(idents, self.keeps(domain, scope, idents)))

    def sampled_owners(self, domain: str, names: Sequence[str]) -> list[str]:
        """The actors of `names` whose entity of `domain` the sample keeps, for the domains
        sampled by owner: a DM's inbox (`dm:<agent>`), a checkpoint (`checkpoint:<agent>:`), a
        lock (`lock:<name>`)."""
        if domain == "checkpoint":
            return self.sampled_texts("checkpoint:", names, ":")
        if domain in ("dm", "lock"):
            return self.sampled_texts(f"{domain}:", names)
        raise ValueError(f"{domain} is not sampled by owner")

    def sampled_texts(self, head: str, texts: Sequence[AnyStr], tail: str = "") -> list[AnyStr]:
        """The texts whose sample text `head + text + tail` the sample keeps, in their order
        (names listed by a store, e.g. a legacy hash's fields; str, or bytes as Redis sent them:
        their UTF-8)."""
        if self.sample >= 1.0:
            return list(texts)
        return list(compress(texts, self._texts_kept(head, texts, tail)))

    def sampled_with(
        self, head: str, texts: Sequence[AnyStr], values: Sequence[_V], tail: str = ""
    ) -> tuple[list[AnyStr], list[_V]]:
        """`sampled_texts`, and the items of `values` (one per text) at the kept texts' places."""
        if self.sample >= 1.0:
            return list(texts), list(values)
        kept = list(self._texts_kept(head, texts, tail))
        return list(compress(texts, kept)), list(compress(values, kept))

    def _texts_kept(self, head: str, texts: Sequence[AnyStr], tail: str) -> Iterator[bool]:
        """Whether the sample keeps `head + text + tail`, for each text (in C without a tail)."""
        start, limit = zlib.crc32(head.encode(), self._start), self._limit
        if not tail:
            return _chosen_blobs(start, limit, _utf8(texts))
        end, crc32 = tail.encode(), zlib.crc32
        return ((crc32(end, crc32(t, start)) * SAMPLE_MIX) & _MASK < limit for t in _utf8(texts))

    def text_or_suffix_in_sample(self, head: str, text: str) -> bool:
        """Whether the sample keeps `head + text`, or `head` + the text after one of its colons."""
        if self.sample >= 1.0:
            return True
        blob = text.encode("utf-8", "surrogateescape")  # a name as Redis sent it, UTF-8 or not
        return _blob_or_suffix_kept(blob, zlib.crc32(head.encode(), self._start), self._limit)

    def suffixes_kept(self, head: str, names: Sequence[bytes]) -> list[bool]:
        """`text_or_suffix_in_sample` of each name as Redis sent it (its bytes: not decoded, the
        head's hash made once), for a listing of claim fields `{by}:{what}`."""
        if self.sample >= 1.0:
            return [True] * len(names)
        start, limit = zlib.crc32(head.encode(), self._start), self._limit
        return [_blob_or_suffix_kept(blob, start, limit) for blob in names]

    def sql_sample(self, domain: str, scope: str) -> tuple[int, int]:
        """(start, limit): the values `sql_sample_condition` binds to choose the ids of `domain`
        and `scope` inside SQLite (every id without a sample). Not for an inbox's DMs."""
        return self._head_start(domain, scope), self._limit if self.sampled else 1 << SAMPLE_BITS

    def text_in_sample(self, text: str) -> bool:
        """Whether the sample keeps the key whose `sample_text` is `text`."""
        return self.sample >= 1.0 or text_in_sample(self._start, self._limit, text)

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
