"""The actor store as an entity source and sink, through the host's APIs only.

Scans of the sharded kinds (agents' checkpoints, DMs and memories; locks) read the shard tables
across all actors with `ActorHost.read_rows`, which activates no actor and runs between turns,
as safe as a read-only turn (see its docstring): one query per shard and batch, merged across
the shards into the scan order, instead of one turn per actor. The rows are mapped to entities
by the actor classes' own row mappers, with the `_extra` side table read per batch. The
actor-only domains are read in turns of the few actors that hold any of their rows, and the
coordinator's domains in turns of the coordinator (`ActorReplica.scan`). Writes and reads by
key are turns of each actor (`ActorReplica.read_many`, `write_many`). Within a domain the
actors are in name order and each one's rows in id order, which is the scan order of
`gateway.bulk.items`.

Run it on a host of one's own only when no gateway owns the data directory (`open_actor_side`
decides); beside a running gateway the same class runs inside the gateway, behind the admin
API (`gateway.bulk.admin_service`).
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import compress
from typing import Any, Final, cast

import orjson

from gateway.actors import ActorRef
from gateway.actors.layout import shard_of
from gateway.bulk.items import Item, Selection, WriteResult, order_key, parse_cursor, sql_sample_condition
from gateway.bulk.shard_import import AGENT_DOMAINS, decide_locks, write_agents
from gateway.bulk.versions import decide
from gateway.do import owner_ref, progress_tables
from gateway.do.agent_state import (
    CHECKPOINT_COLS,
    DM_COLS,
    MEM_COLS,
    checkpoint_from_row,
    dm_from_row,
    memory_from_row,
)
from gateway.do.replica import ActorReplica, Decide, Outcome
from gateway.do.resource_lock import LOCK_COLS, lock_from_row
from gateway.domain.entities import (
    ACTOR_ONLY,
    COORDINATOR_NAME,
    OWNERS,
    Entity,
    EntityKey,
    Owner,
    Unreadable,
)
from gateway.domain.model import Lock
from gateway.domain.rules import lock_expired

__all__ = ["ActorSide"]


def _owner_of(key: EntityKey) -> str:
    return key.owner_name


@dataclass(frozen=True, slots=True)
class _ShardTable:
    """Where a domain of a sharded kind lives: its table, its id column (None: one row per
    actor) and how a row (after the actor column) becomes an entity."""

    domain: str
    table: str
    ident: str | None
    cols: str
    row: Callable[[str, Any], Entity]


_SHARDED: Final[dict[str, _ShardTable]] = {
    "checkpoint": _ShardTable("checkpoint", "checkpoint", None, CHECKPOINT_COLS, checkpoint_from_row),
    "dm": _ShardTable("dm", "messages", "id", DM_COLS, lambda _a, r: dm_from_row(r)),
    "memory": _ShardTable("memory", "memory", "id", MEM_COLS, lambda _a, r: memory_from_row(r)),
    "lock": _ShardTable("lock", "current_lock", None, LOCK_COLS, lambda _a, r: lock_from_row(r)),
}

_Row = tuple[Any, ...]
_MIN_SHARD_READ: Final = 64

_BY_KEY: Final = 48
"""Keys per query when a sampled scan reads rows by key (the host binds at most 100 values)."""
_BY_OWNER: Final = 90
"""Actors per query when a sampled scan reads the rows of the sampled actors (`actor IN`)."""
_BY_OWNER_DOMAINS: Final = frozenset({"checkpoint", "dm", "lock"})
"""The sharded domains a sample chooses by owning actor (`gateway.bulk.items.sample_text`: a
DM by its inbox, a checkpoint by its agent, a lock by its name): the actors' names are known
without reading a row, so a sampled scan reads the sampled actors' rows alone, in key order."""
_BY_ID_DOMAINS: Final = frozenset({"memory"})
"""The sharded domains a sample chooses by id alone (`gateway.bulk.items.sample_text`: a memory by
`memory:<id>`, whatever its owner): chosen inside SQLite, by the shard connection's function."""
_UNREADABLE_ROW: Final = (TypeError, ValueError, KeyError, IndexError, orjson.JSONDecodeError)


def _row_key(domain: str, actor: str, ident: str | None) -> EntityKey:
    if domain == "lock":
        return EntityKey("lock", "", actor)
    return EntityKey(domain, actor, "" if ident is None else ident)


def _chosen(domain: str, keys: list[_Row], selection: Selection) -> list[_Row]:
    """The (actor, id) keys of a shard table the sample keeps, by each actor's `id_sampler`."""
    if domain == "memory":  # sampled by its id alone: one hash head, the ids hashed in C
        ids = ["" if k[1] is None else str(k[1]) for k in keys]
        return list(compress(keys, selection.keeps(domain, "", ids)))
    if domain not in ("checkpoint", "dm"):
        return [
            k
            for k in keys
            if selection.in_sample(_row_key(domain, k[0], None if k[1] is None else str(k[1])))
        ]
    samplers: dict[str, Callable[[str], bool]] = {}
    out: list[_Row] = []
    for k in keys:
        keep = samplers.get(k[0])
        if keep is None:
            keep = samplers[k[0]] = selection.id_sampler(domain, k[0])
        if keep("" if k[1] is None else str(k[1])):
            out.append(k)
    return out


def _raw_row(row: _Row) -> str:
    return orjson.dumps([x if isinstance(x, str | int | float | None) else repr(x) for x in row]).decode()


async def _merged(streams: list[AsyncIterator[list[_Row]]]) -> AsyncIterator[list[_Row]]:
    """Rows of several streams, each ordered by (actor, id), as one ordered stream of batches:
    a row is passed on once every stream that is not finished has a later one buffered."""
    bufs: list[list[_Row]] = [[] for _ in streams]
    done = [False] * len(streams)

    async def refill(i: int) -> None:
        while not bufs[i] and not done[i]:
            nxt = await anext(streams[i], None)
            if nxt is None:
                done[i] = True
            else:
                bufs[i] = nxt

    for i in range(len(streams)):
        await refill(i)
    while any(bufs):
        live = [b[-1][:2] for i, b in enumerate(bufs) if not done[i]]
        bound = min(live) if live else None  # None: every stream has ended, all rows may go
        parts: list[list[_Row]] = []
        for i, b in enumerate(bufs):
            cut = len(b) if bound is None else _cut(b, bound)
            parts.append(b[:cut])
            bufs[i] = b[cut:]
        out = list(heapq.merge(*parts, key=lambda r: r[:2]))
        if out:
            yield out
        for i in range(len(streams)):
            await refill(i)


def _cut(rows: list[_Row], bound: tuple[Any, ...]) -> int:
    """How many leading rows of `rows` (ordered) are at or before `bound`."""
    lo, hi = 0, len(rows)
    while lo < hi:
        mid = (lo + hi) // 2
        if rows[mid][:2] <= bound:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _after(spec: _ShardTable, agent: str | None, cursor: tuple[str, ...] | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a keyset page of `spec`'s rows: one agent's
    rows if `agent`, after `cursor` ((actor,) or (actor, id)) if given."""
    conds: list[str] = []
    params: list[Any] = []
    if agent is not None:
        conds.append("actor = ?")
        params.append(agent)
    if cursor is not None and spec.ident is None:
        conds.append("actor > ?")
        params.append(cursor[0])
    elif cursor is not None:
        conds.append(f"(actor, {spec.ident}) > (?, ?)")
        params += cursor[:2]
    return " AND ".join(conds), params


class ActorSide:
    """Streams, reads and writes the entities the actors hold."""

    name = "actors"

    def __init__(self, replica: ActorReplica) -> None:
        self.replica = replica
        self._listed: dict[str, list[str]] = {}
        """The actor names of each kind, listed once per scan (`_names`)."""

    def _names(self, kind: str) -> list[str]:
        """The names of the actors of `kind`, sorted: listed at the first domain of a scan that
        asks, then kept for its other domains (an agent's name was listed and sorted again for
        each of its nine domains, 40,000 names each time at 1,000,000 entities). An actor created
        during the scan is left to the next one, as in a domain already scanned."""
        names = self._listed.get(kind)
        if names is None:
            names = self._listed[kind] = sorted(self.replica.names(kind))
        return names

    def _owners(self, domain: str, selection: Selection) -> list[str]:
        kind = OWNERS[domain]
        if kind is Owner.COORDINATOR:
            return [COORDINATOR_NAME]
        return selection.owner_names(domain, self._names(kind.value))

    async def scan(
        self, selection: Selection, *, start_after: str | None = None, batch: int = 500
    ) -> AsyncIterator[list[Item]]:
        after = None if start_after is None else parse_cursor(start_after)
        buf: list[Item] = []
        host = self.replica.host
        self._listed = {}
        for domain in selection.domains:
            if after is not None and order_key(EntityKey(domain, "\U0010ffff", "")) <= order_key(after):
                continue
            kind = OWNERS[domain]
            resume = None if after is None or after.domain != domain else after
            if domain in _SHARDED and kind.value in host.sharded:
                async for items in self._sharded(domain, selection, resume, batch):
                    buf.extend(items)
                    while len(buf) >= batch:
                        yield buf[:batch]
                        buf = buf[batch:]
                continue
            resume_owner = None if resume is None else _owner_of(resume)
            wants = selection if selection.sampled else None
            for name in await self._holders(domain, selection):
                if resume_owner is not None and name < resume_owner:
                    continue
                ident = after.id if after is not None and name == resume_owner else None
                ref = ActorRef(kind.value, name)
                while True:
                    rows, ident = await self.replica.scan_page(ref, domain, ident, batch, wants)
                    buf.extend(it for it in rows if selection.wants_scope(domain, it[0].scope, it[0].id))
                    while len(buf) >= batch:
                        yield buf[:batch]
                        buf = buf[batch:]
                    if ident is None:
                        break
        if buf:
            yield buf

    async def _holders(self, domain: str, selection: Selection) -> list[str]:
        """The actors a per-actor scan of `domain` visits: for an actor-only domain of a sharded
        kind only those with rows in its first table (most agents have none)."""
        names = self._owners(domain, selection)
        kind = OWNERS[domain].value
        host = self.replica.host
        if domain not in ACTOR_ONLY or kind not in host.sharded:
            return names
        table = progress_tables.TABLES[domain][0]
        holding: set[str] = set()
        for shard in range(host.shard_count):
            holding.update(str(r[0]) for r in await host.read_rows(kind, shard, table, "DISTINCT actor"))
        return [n for n in names if n in holding]

    async def _sharded(
        self, domain: str, selection: Selection, after: EntityKey | None, batch: int
    ) -> AsyncIterator[list[Item]]:
        """The entities of a sharded domain, read from the shard tables without activations."""
        host = self.replica.host
        kind = OWNERS[domain].value
        spec = _SHARDED[domain]
        start: tuple[str, ...] | None = None
        sample = selection if selection.sampled else None
        if after is not None:
            owner = _owner_of(after)
            start = (owner,) if spec.ident is None else (owner, after.id)
        if sample is not None and domain in _BY_OWNER_DOMAINS:
            async for items in self._sampled_owners(domain, spec, selection, start, batch):
                yield items
            return
        if selection.agents is not None and kind == Owner.AGENT.value:
            for agent in sorted(selection.agents):
                if start is not None and agent < start[0]:
                    continue
                shard = shard_of(ActorRef(kind, agent), host.shard_count)
                first = start if start is not None and start[0] == agent else None
                rows_of = self._rows(
                    kind=kind, shard=shard, spec=spec, start=first, batch=batch, agent=agent, sample=sample
                )
                async for rows in rows_of:
                    yield await self._entities(domain, spec, rows, selection, shard=shard)
            return
        # each shard holds about 1/n of a batch's rows: read twice that per query, so a page
        # (the admin API's scan stops after one) reads about two batches, not n
        per_shard = max(_MIN_SHARD_READ, -(-2 * batch // host.shard_count))
        streams = [
            self._tagged(
                shard,
                self._rows(
                    kind=kind, shard=shard, spec=spec, start=start, batch=per_shard, agent=None, sample=sample
                ),
            )
            for shard in range(host.shard_count)
        ]
        async for rows in _merged(streams):
            for i in range(0, len(rows), batch):  # mapped a batch at a time, as they are taken
                yield await self._merged_entities(domain, spec, rows[i : i + batch], selection)

    async def _sampled_owners(
        self,
        domain: str,
        spec: _ShardTable,
        selection: Selection,
        start: tuple[str, ...] | None,
        batch: int,
    ) -> AsyncIterator[list[Item]]:
        """A sampled scan of a domain sampled by owner (`_BY_OWNER_DOMAINS`): the actors in the
        sample (and the agent filter) chosen by name, then their rows read shard by shard with
        `actor IN (...)` in key order and merged across the shards, with their extra fields."""
        host = self.replica.host
        kind = OWNERS[domain].value
        owners = selection.owner_names(domain, self._names(kind))
        chosen = selection.sampled_owners(domain, owners)
        if start is not None:
            chosen = [n for n in chosen if n >= start[0]]
        by_shard: dict[int, list[str]] = {}
        for name in chosen:
            by_shard.setdefault(shard_of(ActorRef(kind, name), host.shard_count), []).append(name)
        streams = [
            self._tagged(shard, self._owner_rows(kind, shard, spec, names, start))
            for shard, names in sorted(by_shard.items())
        ]
        async for rows in _merged(streams):
            for i in range(0, len(rows), batch):
                yield await self._owner_entities(domain, spec, rows[i : i + batch])

    async def _owner_rows(
        self, kind: str, shard: int, spec: _ShardTable, owners: list[str], start: tuple[str, ...] | None
    ) -> AsyncIterator[list[_Row]]:
        """(actor, id, *cols) rows of the actors `owners` (sorted, all in shard `shard`), in
        (actor, id) order, after `start`: a range of the primary key per actor. A table with ids
        (DMs) gives each row's `_extra` value last, looked up for that row alone in the query
        (one lookup of the side table's key a row, instead of a query of its rows by actor)."""
        ident = spec.ident or "NULL"
        order = "actor" if spec.ident is None else f"actor, {spec.ident}"
        for i in range(0, len(owners), _BY_OWNER):
            part = owners[i : i + _BY_OWNER]
            after, params = _after(spec, None, start)
            where = f"actor IN ({', '.join('?' * len(part))})"
            if after:
                where = f"{after} AND {where}"
            rows = await self.replica.host.read_rows(
                kind, shard, spec.table, f"actor, {ident}, {spec.cols}", where, *params, *part, order=order,
                extra_of=None if spec.ident is None else (spec.domain, spec.ident),
            )  # fmt: skip
            if rows:
                yield rows

    async def _owner_entities(self, domain: str, spec: _ShardTable, rows: list[_Row]) -> list[Item]:
        """`_merged_entities` of the rows of whole actors (a sample by owner): the extra fields
        of a table with ids (DMs) came with each row (`_owner_rows`); those of a table of one row
        an actor (checkpoints, locks) are read by actor (`actor IN`, the side table's key)."""
        keyed = [(_row_key(domain, r[0], None if r[1] is None else str(r[1])), r) for r in rows]
        if spec.ident is not None:  # each row's `_extra` value came with it (`_owner_rows`)
            carried = {(r[0], k.id): str(r[-2]) for k, r in keyed if r[-2] is not None}
            return [(key, self._entity(spec, key, r[:-2], carried)) for key, r in keyed]
        kind = OWNERS[domain].value
        by_shard: dict[int, list[str]] = {}
        for _k, r in keyed:
            names = by_shard.setdefault(r[-1], [])
            if not names or names[-1] != r[0]:
                names.append(r[0])
        extras: dict[tuple[str, str], str] = {}
        for shard, names in by_shard.items():
            for i in range(0, len(names), _BY_OWNER):
                part = names[i : i + _BY_OWNER]
                found = await self.replica.host.read_rows(
                    kind, shard, "_extra", "actor, id, value",
                    f"domain = ? AND actor IN ({', '.join('?' * len(part))})", domain, *part,
                )  # fmt: skip
                extras.update(((str(a), str(ident)), str(v)) for a, ident, v in found)
        return [(key, self._entity(spec, key, r[:-1], extras)) for key, r in keyed]

    @staticmethod
    async def _tagged(shard: int, rows: AsyncIterator[list[_Row]]) -> AsyncIterator[list[_Row]]:
        async for batch in rows:
            yield [(*r, shard) for r in batch]

    async def _rows(
        self,
        *,
        kind: str,
        shard: int,
        spec: _ShardTable,
        start: tuple[str, ...] | None,
        batch: int,
        agent: str | None,
        sample: Selection | None = None,
    ) -> AsyncIterator[list[_Row]]:
        """(actor, id, *cols) rows of one shard's table in (actor, id) order, after `start`
        (with `sample`: only the rows of its sampled keys)."""
        host = self.replica.host
        ident = spec.ident or "NULL"
        order = "actor" if spec.ident is None else f"actor, {spec.ident}"
        if sample is not None:
            async for rows in self._sampled_rows(kind, shard, spec, start, batch, agent, sample):
                yield rows
            return
        cursor = start
        while True:
            where, params = _after(spec, agent, cursor)
            rows = await host.read_rows(
                kind,
                shard,
                spec.table,
                f"actor, {ident}, {spec.cols}",
                where,
                *params,
                order=order,
                limit=batch,
            )
            if rows:
                yield rows
            if len(rows) < batch:
                return
            last = rows[-1]
            cursor = (last[0],) if spec.ident is None else (last[0], last[1])

    async def _sampled_rows(  # noqa: PLR0917 - `_rows`' arguments and the sample
        self,
        kind: str,
        shard: int,
        spec: _ShardTable,
        start: tuple[str, ...] | None,
        batch: int,
        agent: str | None,
        selection: Selection,
    ) -> AsyncIterator[list[_Row]]:
        """`_rows` of a sampled scan: the keys first (actor and id only), then the full rows of
        the sampled keys alone, so a sample reads and maps about its share of the rows. A domain
        sampled by id alone (memories) is chosen inside SQLite instead (`_rows_chosen_in_sql`)."""
        host = self.replica.host
        domain = spec.domain
        ident = spec.ident or "NULL"
        order = "actor" if spec.ident is None else f"actor, {spec.ident}"
        if domain in _BY_ID_DOMAINS:
            async for rows in self._rows_chosen_in_sql(kind, shard, spec, start, batch, agent, selection):
                yield rows
            return
        page = batch * 10
        cursor = start
        while True:
            where, params = _after(spec, agent, cursor)
            keys = await host.read_rows(
                kind,
                shard,
                spec.table,
                f"actor, {ident}",
                where,
                *params,
                order=order,
                limit=page,
            )
            chosen = _chosen(domain, keys, selection)
            for i in range(0, len(chosen), _BY_KEY):
                part = chosen[i : i + _BY_KEY]
                if spec.ident is None:
                    where = f"actor IN ({', '.join('?' * len(part))})"
                    args: list[Any] = [k[0] for k in part]
                else:  # an OR of key pairs: SQLite answers it from the primary key
                    where = " OR ".join([f"(actor = ? AND {spec.ident} = ?)"] * len(part))
                    args = [x for k in part for x in k]
                rows = await host.read_rows(
                    kind, shard, spec.table, f"actor, {ident}, {spec.cols}", where, *args, order=order
                )
                if rows:
                    yield rows
            if len(keys) < page:
                return
            last = keys[-1]
            cursor = (last[0],) if spec.ident is None else (last[0], last[1])

    async def _rows_chosen_in_sql(  # noqa: PLR0917 - `_rows`' arguments and the sample
        self,
        kind: str,
        shard: int,
        spec: _ShardTable,
        start: tuple[str, ...] | None,
        batch: int,
        agent: str | None,
        selection: Selection,
    ) -> AsyncIterator[list[_Row]]:
        """The (actor, id, *cols, extra value) rows of the sampled keys of a domain sampled by id
        alone (`_BY_ID_DOMAINS`), `batch` at a time, each with its `_extra` value (or None),
        looked up for that row alone: the sample's condition is in the query
        (`sql_sample_condition`, the shard's connection has the function), so no key is listed
        or hashed in Python and no row is read by key. A query walks about `batch / rate` keys
        of the primary key (at most the shard's rows of the domain)."""
        host = self.replica.host
        bound = selection.sql_sample(spec.domain, "")
        ident = cast("str", spec.ident)
        cond = sql_sample_condition(ident)
        cursor = start
        while True:
            where, params = _after(spec, agent, cursor)
            rows = await host.read_rows(
                kind,
                shard,
                spec.table,
                f"actor, {spec.ident}, {spec.cols}",
                f"{where} AND {cond}" if where else cond,
                *params,
                *bound,
                order=f"actor, {spec.ident}",
                limit=batch,
                extra_of=(spec.domain, ident),  # each row's `_extra` value last (`_merged_entities`)
            )
            if rows:
                yield rows
            if len(rows) < batch:
                return
            cursor = (rows[-1][0], rows[-1][1])

    async def _entities(
        self, domain: str, spec: _ShardTable, rows: list[_Row], selection: Selection, *, shard: int
    ) -> list[Item]:
        """The entities of (actor, id, *cols) rows of one shard, with their extra fields; rows
        outside the sample are dropped before they are mapped."""
        keyed = [(_row_key(domain, r[0], None if r[1] is None else str(r[1])), r) for r in rows]
        if not keyed:
            return []
        kind = OWNERS[domain].value
        if selection.sampled and domain in _BY_ID_DOMAINS:  # chosen in SQL, each with its extra value
            extras = {(r[0], k.id): str(r[-1]) for k, r in keyed if r[-1] is not None}
            return [(key, self._entity(spec, key, r[:-1], extras)) for key, r in keyed]
        if selection.sampled:
            extras = await self._extras_of(kind, shard, domain, [(r[0], k.id) for k, r in keyed])
        else:
            extras = await self._extras(kind, shard, domain, keyed[0][1][0], keyed[-1][1][0])
        return [(key, self._entity(spec, key, r, extras)) for key, r in keyed]

    async def _merged_entities(
        self, domain: str, spec: _ShardTable, rows: list[_Row], selection: Selection
    ) -> list[Item]:
        """`_entities` of (actor, id, *cols, shard) rows of several shards, kept in their
        (merged) order: the extra fields are read per shard first, then the rows mapped."""
        keyed = [(_row_key(domain, r[0], None if r[1] is None else str(r[1])), r) for r in rows]
        kind = OWNERS[domain].value
        extras: dict[tuple[str, str], str] = {}
        if selection.sampled and domain in _BY_ID_DOMAINS:  # chosen in SQL, each with its extra value
            for key, r in keyed:
                if r[-2] is not None:
                    extras[(r[0], key.id)] = str(r[-2])
            return [(key, self._entity(spec, key, r[:-2], extras)) for key, r in keyed]
        if selection.sampled:  # the extra fields of the sampled keys alone
            by_shard: dict[int, list[tuple[str, str]]] = {}
            for k, r in keyed:
                by_shard.setdefault(r[-1], []).append((r[0], k.id))
            for shard, pairs in by_shard.items():
                extras.update(await self._extras_of(kind, shard, domain, pairs))
            return [(key, self._entity(spec, key, r[:-1], extras)) for key, r in keyed]
        bounds: dict[int, list[str]] = {}  # shard -> [first actor, last actor]
        for _k, r in keyed:
            seen = bounds.get(r[-1])
            if seen is None:
                bounds[r[-1]] = [r[0], r[0]]
            else:
                seen[1] = r[0]
        for shard, (lo, hi) in bounds.items():
            extras.update(await self._extras(kind, shard, domain, lo, hi))  # an actor is in one shard
        return [(key, self._entity(spec, key, r[:-1], extras)) for key, r in keyed]

    @staticmethod
    def _entity(
        spec: _ShardTable, key: EntityKey, r: _Row, extras: dict[tuple[str, str], str]
    ) -> Entity | Unreadable:
        """One (actor, id, *cols) row as an entity with its extra fields, or unreadable."""
        try:
            entity = spec.row(r[0], r[2:])
            text = extras.get((r[0], key.id))
            if text is not None:
                value = orjson.loads(text)
                entity.extra = value if isinstance(value, dict) else {}
        except _UNREADABLE_ROW as e:
            return Unreadable(key, _raw_row(r[2:]), f"unreadable row: {e!r}")
        return entity

    async def _extras(
        self, kind: str, shard: int, domain: str, lo: str, hi: str
    ) -> dict[tuple[str, str], str]:
        """The `_extra` values of `domain` of the actors `lo`..`hi` of one shard."""
        rows = await self.replica.host.read_rows(
            kind,
            shard,
            "_extra",
            "actor, id, value",
            "domain = ? AND actor >= ? AND actor <= ?",
            domain,
            lo,
            hi,
        )
        return {(str(a), str(i)): str(v) for a, i, v in rows}

    async def _extras_of(
        self, kind: str, shard: int, domain: str, pairs: list[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The `_extra` values of `domain` of the given (actor, id) of one shard (a sample's)."""
        out: dict[tuple[str, str], str] = {}
        for i in range(0, len(pairs), _BY_KEY):
            part = pairs[i : i + _BY_KEY]
            either = " OR ".join(["(actor = ? AND id = ?)"] * len(part))
            rows = await self.replica.host.read_rows(
                kind, shard, "_extra", "actor, id, value", f"domain = ? AND ({either})", domain,
                *[x for p in part for x in p],
            )  # fmt: skip
            out.update(((str(a), str(ident)), str(v)) for a, ident, v in rows)
        return out

    async def read_many(self, keys: Sequence[EntityKey]) -> dict[EntityKey, Entity | Unreadable | None]:
        by_owner: dict[ActorRef, list[EntityKey]] = {}
        for k in keys:
            by_owner.setdefault(owner_ref(k), []).append(k)
        out: dict[EntityKey, Entity | Unreadable | None] = {}
        for ref, ks in by_owner.items():
            if ref.kind != Owner.COORDINATOR.value and ref.name not in self._known(ref.kind):
                out.update(dict.fromkeys(ks))  # never activated: holds nothing (and is not created)
                continue
            out.update(await self.replica.read_many(ref, ks))
        return out

    def _known(self, kind: str) -> set[str]:
        return set(self.replica.names(kind))

    async def count(self, selection: Selection) -> dict[str, int] | None:
        """The actors of each per-agent and lock domain (a lower bound); None with an agent filter."""
        if selection.agents is not None:
            return None
        out: dict[str, int] = {}
        for domain in selection.domains:
            if domain in ("checkpoint", "lock"):
                out[domain] = len(self.replica.names(OWNERS[domain].value))
        return out

    async def write_batch(
        self, items: Sequence[tuple[EntityKey, Entity | None]], *, dry_run: bool = False
    ) -> WriteResult:
        """Write a batch: agents' checkpoints, DMs and memories shard by shard in one
        transaction each (`gateway.bulk.shard_import`, each agent all or nothing); locks decided
        shard by shard and the few to write in turns of their actors; everything else (the
        coordinator's domains, the actor-only ones, deletions) in one turn per actor."""
        host = self.replica.host
        now = host.clock.now_ms()

        def decide_now(key: EntityKey, current: Entity | None, incoming: Entity | None) -> Outcome:
            # an expired lock is no lock (the actor's alarm would remove it at once): not carried
            if isinstance(incoming, Lock) and current is None and lock_expired(incoming, now):
                return "unchanged"
            return decide(key, current, incoming)

        outcomes: dict[EntityKey, Outcome] = {}
        agents: dict[int, dict[str, list[tuple[EntityKey, Entity]]]] = {}
        locks: dict[int, list[tuple[EntityKey, Entity]]] = {}
        turns: list[tuple[EntityKey, Entity | None]] = []
        agent_kind, lock_kind = Owner.AGENT.value, Owner.LOCK.value
        once = len({k for k, _ in items}) == len(items)  # a key twice: in turns, in order
        for key, value in items:
            if not once:
                turns.append((key, value))
            elif value is not None and key.domain in AGENT_DOMAINS and agent_kind in host.sharded:
                shard = shard_of(ActorRef(agent_kind, key.scope), host.shard_count)
                agents.setdefault(shard, {}).setdefault(key.scope, []).append((key, value))
            elif value is not None and key.domain == "lock" and lock_kind in host.sharded:
                shard = shard_of(ActorRef(lock_kind, key.id), host.shard_count)
                locks.setdefault(shard, []).append((key, value))
            else:
                turns.append((key, value))
        for shard, by_agent in sorted(agents.items()):
            groups = list(by_agent.items())
            work = partial(write_agents, groups=groups, decide=decide_now, dry_run=dry_run)
            done = await host.write_rows(agent_kind, shard, work)
            keys = [k for _a, group in groups for k, _v in group]
            outcomes.update(zip(keys, done, strict=True))
        for shard, group in sorted(locks.items()):
            decided = await host.write_rows(
                lock_kind, shard, partial(decide_locks, items=group, decide=decide_now)
            )
            for (key, value), outcome in zip(group, decided, strict=True):
                if outcome == "written" and not dry_run:
                    turns.append((key, value))  # the alarm and history move with it: a turn
                else:
                    outcomes[key] = outcome
        outcomes.update(await self._in_turns(turns, decide_now, dry_run=dry_run))
        result = WriteResult()
        for key, _v in sorted(items, key=lambda kv: order_key(kv[0])):
            result.add(key, outcomes[key])
        return result

    async def _in_turns(
        self, items: Sequence[tuple[EntityKey, Entity | None]], decide_now: Decide, *, dry_run: bool
    ) -> dict[EntityKey, Outcome]:
        """Items written in one turn of each owning actor (decided inside the turn)."""
        by_owner: dict[ActorRef, list[tuple[EntityKey, Entity | None]]] = {}
        for key, value in items:
            by_owner.setdefault(owner_ref(key), []).append((key, value))
        out: dict[EntityKey, Outcome] = {}
        for ref, group in sorted(by_owner.items(), key=lambda kv: order_key(kv[1][0][0])):
            outcomes: list[Outcome]
            if dry_run:
                current = await self.read_many([k for k, _ in group])
                outcomes = [
                    decide_now(k, None if isinstance(current[k], Unreadable) else current[k], v)  # type: ignore[arg-type]
                    for k, v in group
                ]
            else:
                outcomes = await self.replica.write_many(ref, group, decide_now)
            out.update(zip([k for k, _ in group], outcomes, strict=True))
        return out
