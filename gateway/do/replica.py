"""Entity-level access to the actor tables: read one entity, upsert or delete it.

The phase router replicates by entity, never by re-running a command: after the authoritative
store ran a command, each entity the command touched is read back from it and written to the
other store as-is (same ids, same timestamps, same outcome). The repair queue and the
export/import tool use the same two functions. They run inside a turn of the actor that owns
the entity (`ActorReplica` finds it), so they are atomic with respect to that actor's requests.

Fields the actor tables do not model (the domain objects' `extra`, e.g. a legacy task's
`pickedUpAt`) are kept in a side table `_extra(domain, id, value)` of the same database, so an
entity read back here is equal to the one written, and upstream's tables stay unchanged.
"""

# SQL text here is built only from this module's constant column lists; values are bound.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from gateway.actors import ActorHost, ActorRef
from gateway.actors.sql_functions import register_sample_fn, sql_sample_condition
from gateway.do import owner_ref, progress_tables
from gateway.do._sql import EXTRA_SCHEMA, dumps, get_extra, put_extra
from gateway.do.agent_state import (
    DM_COLS,
    MEM_COLS,
    AgentStateActor,
    checkpoint_values,
    dm_from_row,
    dm_values,
    memory_from_row,
    memory_values,
)
from gateway.do.coordinator import (
    AGENT_COLS,
    CLAIM_COLS,
    HANDOFF_COLS,
    MSG_COLS,
    TASK_COLS,
    ZONE_COLS,
    CoordinatorActor,
    agent_from_row,
    claim_from_row,
    handoff_from_row,
    message_from_row,
    task_from_row,
    zone_from_row,
)
from gateway.do.resource_lock import ResourceLockActor, lock_values
from gateway.domain.entities import ACTOR_ONLY, PER_AGENT, Entity, EntityKey, Unreadable, storable
from gateway.domain.jscompat import parse_js_date
from gateway.domain.model import (
    Agent,
    Checkpoint,
    Claim,
    DirectMessage,
    GroupMessage,
    Handoff,
    Lock,
    Memory,
    Task,
    Zone,
)
from gateway.domain.progress_records import CredentialRecord, ProgressRecord

__all__ = ["ActorReplica", "Decide", "Outcome"]

Outcome = Literal["written", "unchanged", "skipped"]
Decide = Callable[[EntityKey, Entity | None, Entity | None], Outcome]
"""`decide(key, current, incoming)`: what a batch write does with one entity, given what the
actor holds now; "written" writes `incoming` (None deletes)."""


class ActorReplica:
    """Reads and writes single entities in the actor store, each in one turn of its owner."""

    def __init__(self, host: ActorHost) -> None:
        self.host = host

    async def read_entity(self, key: EntityKey) -> Entity | None:
        result: Entity | None = await self.host.call(owner_ref(key), lambda actor: _read(actor, key))
        return result

    async def write_entity(self, key: EntityKey, value: Entity | None) -> None:
        await self.host.call(owner_ref(key), lambda actor: _write(actor, key, value))

    # -- many entities of one actor at once (the bulk layer: export, import, the checker) ------

    def names(self, kind: str) -> list[str]:
        """The names of every actor of `kind` the host knows, sorted (through the host's API)."""
        return self.host.list_actors(kind)

    async def scan(
        self, ref: ActorRef, domain: str, after: str | None, limit: int
    ) -> list[tuple[EntityKey, Entity | Unreadable]]:
        """Up to `limit` entities of `domain` that actor `ref` holds, by id, after id `after`;
        one turn of the actor. Rows its mappers cannot read come back as `Unreadable`."""
        items, _next = await self.scan_page(ref, domain, after, limit)
        return items

    async def scan_page(
        self,
        ref: ActorRef,
        domain: str,
        after: str | None,
        limit: int,
        wants: Sample | None = None,
    ) -> tuple[list[tuple[EntityKey, Entity | Unreadable]], str | None]:
        """`scan`, where rows whose key the sample `wants` refuses are left out before they
        are mapped; with the id to continue after (None: the actor holds no more)."""

        async def run(actor: Any) -> tuple[list[tuple[EntityKey, Entity | Unreadable]], str | None]:
            return _scan(actor, ref, domain, after, limit, wants)

        result: tuple[list[tuple[EntityKey, Entity | Unreadable]], str | None] = await self.host.call(
            ref, run
        )
        return result

    async def read_many(
        self, ref: ActorRef, keys: Sequence[EntityKey]
    ) -> dict[EntityKey, Entity | Unreadable | None]:
        """The entities `keys` (all held by actor `ref`) in one turn of it."""

        async def run(actor: Any) -> dict[EntityKey, Entity | Unreadable | None]:
            return {k: _read_safe(actor, k) for k in keys}

        result: dict[EntityKey, Entity | Unreadable | None] = await self.host.call(ref, run)
        return result

    async def write_many(
        self, ref: ActorRef, items: Sequence[tuple[EntityKey, Entity | None]], decide: Decide
    ) -> list[Outcome]:
        """Write the entities of actor `ref` in one turn (one transaction): each one is compared
        with what the actor holds by `decide`, and written only when it says so."""

        async def run(actor: Any) -> list[Outcome]:
            if _batchable(actor, items):
                return _write_coordinator(actor, items, decide)
            out: list[Outcome] = []
            for key, value in items:
                current = await _read(actor, key)
                outcome = decide(key, current, value)
                if outcome == "written":
                    await _write(actor, key, value)
                out.append(outcome)
            return out

        result: list[Outcome] = await self.host.call(ref, run)
        return result


_CHUNK = 90  # ids bound per IN (...), under the storage's limit of bound parameters


def _batchable(actor: Any, items: Sequence[tuple[EntityKey, Entity | None]]) -> bool:
    """Whether the coordinator's batched path takes `items`: values (no deletions) of its own
    domains, each key once."""
    if actor.ctx.sharded:
        return False
    if not all(v is not None and k.domain in _COORDINATOR_UPSERTS for k, v in items):
        return False
    return len({k for k, _ in items}) == len(items)


def _held(actor: Any, domain: str, ids: list[str]) -> tuple[dict[str, Entity | Unreadable], set[str]]:
    """What the coordinator holds of `domain` with these ids (one query per 90 ids, and as many
    for their `_extra` rows), and the ids that have an `_extra` row."""
    spec = _TABLES[domain]
    sql = actor.ctx.sql
    now = actor.ctx.clock.now_ms()
    rows: list[Any] = []
    extras: dict[str, str] = {}
    ids = [i for i in ids if storable(i)]
    for i in range(0, len(ids), _CHUNK):
        part = ids[i : i + _CHUNK]
        marks = ", ".join("?" * len(part))
        rows += sql.exec(f"SELECT {spec.cols} FROM {spec.table} WHERE {spec.ident} IN ({marks})", *part).all()
        found = sql.exec(f"SELECT id, value FROM _extra WHERE domain = ? AND id IN ({marks})", domain, *part)
        extras.update((str(r[0]), str(r[1])) for r in found.all())
    out: dict[str, Entity | Unreadable] = {}
    for r in rows:
        ident = str(r[0])
        try:
            entity = spec.row(r, now)
            text = extras.get(ident)
            entity.extra = {} if text is None else _extra_value(text)
        except (TypeError, ValueError, KeyError, IndexError, orjson.JSONDecodeError) as e:
            out[ident] = Unreadable(EntityKey(domain, "", ident), _raw_row(r), f"unreadable row: {e!r}")
            continue
        out[ident] = entity
    return out, set(extras)


def _write_coordinator(
    actor: Any, items: Sequence[tuple[EntityKey, Entity | None]], decide: Decide
) -> list[Outcome]:
    """`write_many` of the coordinator's own domains, batched: what it holds is read per domain
    in a few queries, each entity decided, and the written ones go out in one prepared
    statement per domain (its change-stamp triggers fire per row, as for single writes), their
    `_extra` rows likewise. A row the coordinator holds but cannot read is left alone (skipped)."""
    sql = actor.ctx.sql
    sql.exec(EXTRA_SCHEMA)
    by_domain: dict[str, list[str]] = {}
    for key, _v in items:
        by_domain.setdefault(key.domain, []).append(key.id)
    held = {d: _held(actor, d, ids) for d, ids in by_domain.items()}
    out: list[Outcome] = []
    rows: dict[str, list[tuple[Any, ...]]] = {}
    extra_rows: list[tuple[str, str, str]] = []
    extra_gone: list[tuple[str, str]] = []
    for key, value in items:
        entities, with_extra = held[key.domain]
        now = entities.get(key.id)
        outcome: Outcome = "skipped" if isinstance(now, Unreadable) else decide(key, now, value)
        out.append(outcome)
        if outcome != "written" or value is None:
            continue
        rows.setdefault(key.domain, []).append(_COORDINATOR_UPSERTS[key.domain][1](value))
        if value.extra:
            extra_rows.append((key.domain, key.id, dumps(value.extra)))
        elif key.id in with_extra:
            extra_gone.append((key.domain, key.id))
    for domain, params in rows.items():
        sql.exec_many(_COORDINATOR_UPSERTS[domain][0], params)
    if extra_rows:
        sql.exec_many("INSERT OR REPLACE INTO _extra (domain, id, value) VALUES (?, ?, ?)", extra_rows)
    if extra_gone:
        sql.exec_many("DELETE FROM _extra WHERE domain = ? AND id = ?", extra_gone)
    return out


def _ident(key: EntityKey) -> str:
    return key.id


# -- reads ------------------------------------------------------------------------------------------


async def _read(actor: Any, key: EntityKey) -> Entity | None:
    entity = _read_row(actor, key)
    if entity is not None:
        entity.extra = get_extra(actor, key.domain, _ident(key))
    return entity


def _record(domain: str, rows: dict[str, list[dict[str, Any]]] | None) -> Entity | None:
    if rows is None:
        return None
    return CredentialRecord(rows) if domain == "credential" else ProgressRecord(rows)


def _read_row(actor: Any, key: EntityKey) -> Entity | None:  # noqa: PLR0911 - one exit per domain
    d, i = key.domain, key.id
    if d in ACTOR_ONLY:
        return _record(d, progress_tables.record_read(actor.ctx.tables, d, i))
    if d in ("checkpoint", "dm", "memory", "lock"):
        return _read_sharded(actor, d, i)
    sql = actor.ctx.sql
    if d == "agent":
        r = sql.exec(f"SELECT {AGENT_COLS} FROM agents WHERE agent_id = ?", i).first()
        return None if r is None else agent_from_row(r)
    if d == "chat":
        r = sql.exec(f"SELECT {MSG_COLS} FROM messages WHERE id = ?", i).first()
        return None if r is None else message_from_row(r)
    if d == "task":
        r = sql.exec(f"SELECT {TASK_COLS} FROM tasks WHERE id = ?", i).first()
        return None if r is None else task_from_row(r)
    if d == "zone":
        r = sql.exec(f"SELECT {ZONE_COLS} FROM zones WHERE zone_id = ?", i).first()
        return None if r is None else zone_from_row(r)
    if d == "claim":
        r = sql.exec(f"SELECT {CLAIM_COLS} FROM claims WHERE what = ?", i).first()
        return None if r is None else claim_from_row(r, actor.ctx.clock.now_ms())
    if d == "handoff":
        r = sql.exec(f"SELECT {HANDOFF_COLS} FROM handoffs WHERE id = ?", i).first()
        return None if r is None else handoff_from_row(r)
    raise ValueError(f"unknown entity domain {d!r}")


def _read_sharded(actor: Any, d: str, i: str) -> Entity | None:
    """An entity of an agent or lock actor (rows in the shard, through `ctx.tables`)."""
    if d == "checkpoint":
        return actor.checkpoint()  # type: ignore[no-any-return]
    if d == "dm":
        r = actor.ctx.tables.first("messages", DM_COLS, "id = ?", i)
        return None if r is None else dm_from_row(r)
    if d == "memory":
        r = actor.ctx.tables.first("memory", MEM_COLS, "id = ?", i)
        return None if r is None else memory_from_row(r)
    if d == "lock":
        return actor.current()  # type: ignore[no-any-return]
    raise ValueError(f"unknown entity domain {d!r}")


# -- many rows --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    """Where a multi-row domain lives in its actor's database."""

    table: str
    ident: str
    cols: str
    row: Callable[[Any, int], Entity]


_TABLES: dict[str, _Table] = {
    "agent": _Table("agents", "agent_id", AGENT_COLS, lambda r, _now: agent_from_row(r)),
    "chat": _Table("messages", "id", MSG_COLS, lambda r, _now: message_from_row(r)),
    "task": _Table("tasks", "id", TASK_COLS, lambda r, _now: task_from_row(r)),
    "zone": _Table("zones", "zone_id", ZONE_COLS, lambda r, _now: zone_from_row(r)),
    "claim": _Table("claims", "what", CLAIM_COLS, claim_from_row),
    "handoff": _Table("handoffs", "id", HANDOFF_COLS, lambda r, _now: handoff_from_row(r)),
    "dm": _Table("messages", "id", DM_COLS, lambda r, _now: dm_from_row(r)),
    "memory": _Table("memory", "id", MEM_COLS, lambda r, _now: memory_from_row(r)),
}
"""The multi-row domains; checkpoint and lock are one row of their actor. A new actor domain
(issue 14) adds its table here."""


def _raw_row(row: Any) -> str:
    return orjson.dumps([x if isinstance(x, str | int | float | None) else repr(x) for x in row]).decode()


class Sample(Protocol):
    """A seeded sample of keys (`gateway.bulk.items.Selection`)."""

    def in_sample(self, key: EntityKey) -> bool: ...

    def id_sampler(self, domain: str, scope: str) -> Callable[[str], bool]:
        """Whether the sample keeps the key of `domain` and `scope` with a given id."""
        ...

    def sql_sample(self, domain: str, scope: str) -> tuple[int, int]:
        """(start, limit): the ids of `domain` and `scope` the sample keeps are those where
        `SAMPLE_SQL_FN(CAST(id AS BLOB), start) < limit`."""
        ...


def _scan(  # noqa: PLR0917 - the arguments of ActorReplica.scan
    actor: Any,
    ref: ActorRef,
    domain: str,
    after: str | None,
    limit: int,
    wants: Sample | None = None,
) -> tuple[list[tuple[EntityKey, Entity | Unreadable]], str | None]:
    """One page of a scan of the actor's rows, and the id to continue after (None: the end)."""
    scope = ref.name if domain in PER_AGENT else ""
    if domain in ACTOR_ONLY:
        found: list[tuple[EntityKey, Entity | Unreadable]] = []
        ids = progress_tables.record_ids(actor.ctx.tables, domain, after, limit)
        for ident in ids:
            if wants is not None and not wants.in_sample(EntityKey(domain, scope, ident)):
                continue
            one = _read_safe(actor, EntityKey(domain, scope, ident))
            if one is not None:
                found.append((EntityKey(domain, scope, ident), one))
        return found, (ids[-1] if len(ids) >= limit else None)
    if domain in ("checkpoint", "lock"):
        key = EntityKey(domain, scope, "" if domain == "checkpoint" else ref.name)
        if (after is not None and key.id <= after) or (wants is not None and not wants.in_sample(key)):
            return [], None
        one = _read_safe(actor, key)
        return ([] if one is None else [(key, one)]), None
    spec = _TABLES[domain]
    now = actor.ctx.clock.now_ms()
    if actor.ctx.sharded:  # an agent's rows in its shard
        cond, params = ("", []) if after is None else (f"{spec.ident} > ?", [after])
        rows = actor.ctx.tables.select(spec.table, spec.cols, cond, *params, order=spec.ident, limit=limit)
    else:
        where, args = ("", [limit]) if after is None else (f"WHERE {spec.ident} > ? ", [after, limit])
        if wants is not None:
            return _sampled_page(actor, domain, scope, spec, after, limit, wants, now)
        rows = actor.ctx.sql.exec(
            f"SELECT {spec.cols} FROM {spec.table} {where}ORDER BY {spec.ident} LIMIT ?", *args
        ).all()
    return _mapped(actor, domain, scope, spec, rows, now, wants), (
        str(rows[-1][0]) if len(rows) >= limit else None
    )


def _sampled_page(  # noqa: PLR0917 - `_scan`'s arguments
    actor: Any,
    domain: str,
    scope: str,
    spec: Any,
    after: str | None,
    limit: int,
    wants: Sample,
    now: int,
) -> tuple[list[tuple[EntityKey, Entity | Unreadable]], str | None]:
    """A sampled page of a coordinator table: the next `limit` ids, and of them the rows (and
    `_extra` values) of the sampled ones only, chosen inside SQLite by the sample's CRC-32 of
    each id (`zlib.crc32` registered on the connection: no Python frame per id, no id list made
    in Python, no row read key by key); a sampled row's `_extra` value is looked up with it.
    The page spans as many ids as an unsampled one, so a turn lasts no longer."""
    sql = actor.ctx.sql
    start, bound = wants.sql_sample(domain, scope)
    ident, table = spec.ident, spec.table
    conds: list[str] = []  # on the id column, `{0}`
    params: list[Any] = []
    if after is not None:
        conds.append("{0} > ?")
        params.append(after)
    where = " AND ".join(conds).format(ident)
    last = sql.exec(
        f"SELECT {ident} FROM {table} {'WHERE ' + where if where else ''} ORDER BY {ident} LIMIT 1 OFFSET ?",
        *params,
        limit - 1,
    ).first()
    if last is not None:
        conds.append("{0} <= ?")
        params.append(last[0])
    conds.append(sql_sample_condition("{0}"))
    params += [start, bound]
    register_sample_fn(sql.conn)
    sql.exec(EXTRA_SCHEMA)
    found = sql.exec(  # each sampled row with its `_extra` value (looked up for it alone)
        f"SELECT {spec.cols}, (SELECT value FROM _extra WHERE domain = ? AND _extra.id = {table}.{ident}) "
        f"FROM {table} WHERE {' AND '.join(conds).format(ident)} ORDER BY {ident}",
        domain,
        *params,
    ).all()
    rows = [r[:-1] for r in found]
    extras = {str(r[0]): str(r[-1]) for r in found if r[-1] is not None}
    return _mapped(actor, domain, scope, spec, rows, now, None, extras), (
        None if last is None else str(last[0])
    )


def _mapped(  # noqa: PLR0917 - one page's rows and where they are from
    actor: Any,
    domain: str,
    scope: str,
    spec: Any,
    rows: Any,
    now: int,
    wants: Sample | None,
    extras: dict[str, str] | None = None,
) -> list[tuple[EntityKey, Entity | Unreadable]]:
    """Rows of one page as entities, with their extra fields (those `wants` refuses left out;
    `extras`: read already)."""
    if extras is None:
        extras = _extras_between(actor, domain, str(rows[0][0]), str(rows[-1][0])) if rows else {}
    out: list[tuple[EntityKey, Entity | Unreadable]] = []
    for r in rows:
        key = EntityKey(domain, scope, str(r[0]))
        if wants is not None and not wants.in_sample(key):
            continue
        try:
            entity = spec.row(r, now)
            text = extras.get(key.id)
            entity.extra = {} if text is None else _extra_value(text)
        except (TypeError, ValueError, KeyError, orjson.JSONDecodeError) as e:
            out.append((key, Unreadable(key, _raw_row(r), f"unreadable row: {e!r}")))
            continue
        out.append((key, entity))
    return out


def _extras_between(actor: Any, domain: str, lo: str, hi: str) -> dict[str, str]:
    """The `_extra` values of `domain` with ids `lo`..`hi` (one query for a scanned batch)."""
    if actor.ctx.sharded:
        rows = actor.ctx.tables.select(
            "_extra", "id, value", "domain = ? AND id >= ? AND id <= ?", domain, lo, hi
        )
    else:
        actor.ctx.sql.exec(EXTRA_SCHEMA)
        rows = actor.ctx.sql.exec(
            "SELECT id, value FROM _extra WHERE domain = ? AND id >= ? AND id <= ?", domain, lo, hi
        ).all()
    return {str(r[0]): str(r[1]) for r in rows}


def _extra_value(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}


def _read_safe(actor: Any, key: EntityKey) -> Entity | Unreadable | None:
    if not (storable(key.id) and storable(key.scope)):
        return None  # no actor holds it (`storable`)
    try:
        entity = _read_row(actor, key)
        if entity is not None:
            entity.extra = get_extra(actor, key.domain, _ident(key))
    except (TypeError, ValueError, KeyError, orjson.JSONDecodeError) as e:
        return Unreadable(key, "", f"unreadable row: {e!r}")
    return entity


# -- writes -----------------------------------------------------------------------------------------


_DELETE = {
    "agent": "DELETE FROM agents WHERE agent_id = ?",
    "chat": "DELETE FROM messages WHERE id = ?",
    "task": "DELETE FROM tasks WHERE id = ?",
    "zone": "DELETE FROM zones WHERE zone_id = ?",
    "claim": "DELETE FROM claims WHERE what = ?",
    "handoff": "DELETE FROM handoffs WHERE id = ?",
}
# (table, condition) of the agent's entities, in the shard (`ctx.tables`)
_DELETE_SHARDED = {
    "checkpoint": ("checkpoint", "? IS NOT NULL"),
    "dm": ("messages", "id = ?"),
    "memory": ("memory", "id = ?"),
}


async def _write(actor: Any, key: EntityKey, value: Entity | None) -> None:
    if key.domain in ACTOR_ONLY:
        if value is not None and not isinstance(value, ProgressRecord | CredentialRecord):
            raise TypeError(f"{key}: not a record of an actor-only domain")
        progress_tables.record_write(
            actor.ctx.tables, key.domain, key.id, None if value is None else value.rows
        )
        return
    if value is None:
        if key.domain == "lock":
            _write_lock(actor, None)
        elif key.domain in _DELETE_SHARDED:
            table, where = _DELETE_SHARDED[key.domain]
            actor.ctx.tables.delete(table, where, key.id)
        else:
            actor.ctx.sql.exec(_DELETE[key.domain], key.id)
        put_extra(actor, key.domain, _ident(key), None)
        return
    _UPSERT[type(value)](actor, value)
    put_extra(actor, key.domain, _ident(key), value.extra)


def _js(v: list[Any] | None) -> str | None:
    return None if v is None else dumps(v)


_AGENT_UPSERT = (
    f"INSERT INTO agents ({AGENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(agent_id) DO UPDATE SET "
    "status = excluded.status, current_task = excluded.current_task, working_on = excluded.working_on, "
    "last_seen = excluded.last_seen, capabilities = excluded.capabilities, offers = excluded.offers, "
    "needs = excluded.needs"
)
_CHAT_UPSERT = (
    f"INSERT INTO messages ({MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
    "author = excluded.author, author_type = excluded.author_type, message = excluded.message, "
    "timestamp = excluded.timestamp, reactions = excluded.reactions"
)
_TASK_UPSERT = (
    f"INSERT INTO tasks ({TASK_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET "
    "title = excluded.title, description = excluded.description, status = excluded.status, "
    "assignee = excluded.assignee, created_by = excluded.created_by, priority = excluded.priority, "
    "tags = excluded.tags, files = excluded.files, created_at = excluded.created_at, "
    "updated_at = excluded.updated_at"
)
_ZONE_UPSERT = f"INSERT OR REPLACE INTO zones ({ZONE_COLS}) VALUES (?, ?, ?, ?, ?)"
_CLAIM_UPSERT = f"INSERT OR REPLACE INTO claims ({CLAIM_COLS}) VALUES (?, ?, ?, ?)"
_HANDOFF_UPSERT = (
    f"INSERT OR REPLACE INTO handoffs ({HANDOFF_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _agent_params(a: Agent) -> tuple[Any, ...]:
    return (
        a.agent_id, a.status, a.current_task, a.working_on, a.last_seen,
        _js(a.capabilities), _js(a.offers), _js(a.needs),
    )  # fmt: skip


def _chat_params(m: GroupMessage) -> tuple[Any, ...]:
    return (m.id, m.author, m.author_type, m.message, m.timestamp, dumps(m.reactions))


def _task_params(t: Task) -> tuple[Any, ...]:
    return (
        t.id, t.title, t.description, t.status, t.assignee, t.created_by, t.priority,
        dumps(t.tags), dumps(t.files), t.created_at, t.updated_at,
    )  # fmt: skip


def _zone_params(z: Zone) -> tuple[Any, ...]:
    return (z.zone_id, z.path, z.owner, z.description, z.claimed_at)


def _claim_params(c: Claim) -> tuple[Any, ...]:
    return (c.what, c.by, c.description, c.since)


def _handoff_params(h: Handoff) -> tuple[Any, ...]:
    return (
        h.id, h.from_agent, h.to_agent, h.title, h.context, h.code, h.file_path, dumps(h.next_steps),
        h.priority, h.status, h.claimed_by, h.created_at, h.claimed_at, h.completed_at,
    )  # fmt: skip


_COORDINATOR_UPSERTS: dict[str, tuple[str, Callable[[Any], tuple[Any, ...]]]] = {
    "agent": (_AGENT_UPSERT, _agent_params),
    "chat": (_CHAT_UPSERT, _chat_params),
    "task": (_TASK_UPSERT, _task_params),
    "zone": (_ZONE_UPSERT, _zone_params),
    "claim": (_CLAIM_UPSERT, _claim_params),
    "handoff": (_HANDOFF_UPSERT, _handoff_params),
}
"""The coordinator's upsert of each of its domains: SQL and the row of an entity."""


def _up_agent(actor: CoordinatorActor, a: Agent) -> None:
    actor.ctx.sql.exec(_AGENT_UPSERT, *_agent_params(a))


def _up_chat(actor: CoordinatorActor, m: GroupMessage) -> None:
    actor.ctx.sql.exec(_CHAT_UPSERT, *_chat_params(m))


def _up_task(actor: CoordinatorActor, t: Task) -> None:
    actor.ctx.sql.exec(_TASK_UPSERT, *_task_params(t))


def _up_zone(actor: CoordinatorActor, z: Zone) -> None:
    actor.ctx.sql.exec(_ZONE_UPSERT, *_zone_params(z))


def _up_claim(actor: CoordinatorActor, c: Claim) -> None:
    actor.ctx.sql.exec(_CLAIM_UPSERT, *_claim_params(c))


def _up_handoff(actor: CoordinatorActor, h: Handoff) -> None:
    actor.ctx.sql.exec(_HANDOFF_UPSERT, *_handoff_params(h))


def _up_checkpoint(actor: AgentStateActor, cp: Checkpoint) -> None:
    actor.ctx.tables.insert("checkpoint", checkpoint_values(cp), conflict="replace")


def _up_dm(actor: AgentStateActor, m: DirectMessage) -> None:
    actor.ctx.tables.insert("messages", dm_values(m), conflict="update")


def _up_memory(actor: AgentStateActor, m: Memory) -> None:
    actor.ctx.tables.insert("memory", memory_values(m), conflict="replace")


def _up_lock(actor: ResourceLockActor, lock: Lock) -> None:
    _write_lock(actor, lock)


def _write_lock(actor: ResourceLockActor, lock: Lock | None) -> None:
    """Make the actor's lock equal `lock`, keeping its history and alarm consistent with it."""
    cur = actor.current()
    now = actor.ctx.clock.now_ms()
    if lock is None:
        if cur is not None:
            reason = "expired" if now >= cur.expires_ms else "manual"
            actor.end_holding(cur, reason, now)
            actor.ctx.delete_alarm()
        return
    same_holding = cur is not None and cur.locked_by == lock.locked_by and cur.locked_at == lock.locked_at
    if cur is not None and not same_holding:
        actor.end_holding(cur, "expired" if now >= cur.expires_ms else "stolen", now)
    tables = actor.ctx.tables
    tables.insert("current_lock", lock_values(lock), conflict="replace")
    if same_holding:  # a re-lock: its open history row takes the new reason, as the actor's own
        tables.update(
            "lock_history", {"reason": lock.reason}, "released_at IS NULL AND locked_by = ?", lock.locked_by
        )
    else:
        tables.insert(
            "lock_history",
            {
                "id": f"lock-{parse_js_date(lock.locked_at) or now}-replica",
                "locked_by": lock.locked_by,
                "reason": lock.reason,
                "locked_at": lock.locked_at,
            },
            conflict="ignore",
        )
    actor.ctx.set_alarm(lock.expires_ms)


_UPSERT: dict[type, Any] = {
    Agent: _up_agent,
    GroupMessage: _up_chat,
    Task: _up_task,
    Zone: _up_zone,
    Claim: _up_claim,
    Handoff: _up_handoff,
    Checkpoint: _up_checkpoint,
    DirectMessage: _up_dm,
    Memory: _up_memory,
    Lock: _up_lock,
}
